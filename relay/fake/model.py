"""The simulated Realtime model: an I/O-free protocol core, one instance per connection.

`SimulatedModel.handle(event)` takes a parsed client event and returns the server events to send at once.
When an event starts a response, `pop_started_response()` hands the `ResponseStream` to the I/O layer, which
paces its remaining events while it keeps feeding client events in; a barge-in or `response.cancel` handled
meanwhile cuts the stream short.

What the model says: a voice turn is answered with the user's own committed speech played back (so a listener
hears the whole path), a text turn with a speech-like signal and a transcript echoing the text.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import random
import time
from collections.abc import Callable
from typing import Any

from relay.fake import g711, session_config, spoken
from relay.fake.conversation import Conversation, StoredItem, parse_item
from relay.fake.errors import ProtocolError, invalid_type, invalid_value, missing
from relay.fake.g711 import is_g711
from relay.fake.options import FakeOptions
from relay.fake.replies import answers_in_text, compose_reply, speech_ms
from relay.fake.response import Event, ResponseConfig, ResponseStream, Timing, event
from relay.fake.response_request import parse_response_request
from relay.fake.signals import BYTES_PER_SAMPLE, duration_ms, ms_to_bytes
from relay.fake.transcription import TranscriptStream
from relay.fake.usage import input_usage, rate_limits_event
from relay.fake.vad import EnergyVad, VadEvent, VadSettings
from relay.protocol import API_RATE, CLIENT_EVENTS, error_event, loads, new_id

__all__ = ["FakeOptions", "SimulatedModel", "beta_rejection_events"]

MAX_APPEND_BYTES = 15 * 1024 * 1024
#: `status_details.error` of a response that failed on a fault switch, as the API reports them.
SERVER_FAILURE: dict[str, Any] = {"type": "server_error", "code": "server_error"}
RATE_LIMITED: dict[str, Any] = {"type": "rate_limit_exceeded", "code": "rate_limit_exceeded"}
MIN_COMMIT_MS = 100
#: While nobody speaks, the VAD keeps only this much audio beyond the prefix padding.
IDLE_BUFFER_MS = 1000
SAMPLES_PER_MS = API_RATE // 1000


def beta_rejection_events() -> list[Event]:
    """What the service sends a client that still speaks the beta protocol, before closing with 4000."""
    return [
        error_event(
            "beta_api_shape_disabled",
            "The beta Realtime API shape is no longer supported. Remove the 'OpenAI-Beta: realtime=v1' header "
            "and use the GA event names.",
        )
    ]


class SimulatedModel:
    """Protocol state of one simulated Realtime session."""

    def __init__(
        self,
        options: FakeOptions,
        model: str,
        *,
        audio_sink: bytearray | None = None,
        clock: Callable[[], float] = time.time,
        transcription_only: bool = False,
    ) -> None:
        self.options = options
        expires_at = int(clock() + options.session_seconds)
        self.session = (
            session_config.transcription_session(expires_at)
            if transcription_only
            else session_config.default_session(model, expires_at)
        )
        self._background: list[TranscriptStream] = []
        self._responses = 0
        self.conversation = Conversation(new_id("conv_"))
        self._audio_sink = audio_sink
        self._buffer = bytearray()
        self._buffer_start = 0  # timeline sample of _buffer[0]
        self._odd_byte = b""
        self._vad = EnergyVad(self._vad_settings())
        self._speech_item_id: str | None = None
        self._speech_start = 0
        self._active: ResponseStream | None = None
        self._started: ResponseStream | None = None
        self._idle_deadline: int | None = None
        self._last_input_usage: dict[str, int] = {}
        self._handlers: dict[str, Callable[[dict[str, Any]], list[Event]]] = {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
            "conversation.item.create": self._item_create,
            "conversation.item.retrieve": self._item_retrieve,
            "conversation.item.truncate": self._item_truncate,
            "conversation.item.delete": self._item_delete,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
            "output_audio_buffer.clear": self._output_buffer_clear,
        }

    # ----- public API -----

    @property
    def active_response(self) -> ResponseStream | None:
        """The response being generated, if any."""
        return self._active

    @property
    def received_ms(self) -> float:
        """Milliseconds of input audio received in the session (the timeline VAD positions refer to)."""
        return self._vad.position / SAMPLES_PER_MS

    @property
    def buffered_ms(self) -> float:
        """Milliseconds of audio waiting in the input buffer."""
        return duration_ms(self._buffer)

    def opening_events(self) -> list[Event]:
        """Events sent as soon as a connection is accepted."""
        return [event("session.created", session=self._session_copy())]

    def expiry_events(self) -> list[Event]:
        """The error sent when the session reaches its maximum length (the I/O layer then closes 1001)."""
        if self._active is not None:
            self._active.cancel("client_cancelled")
        minutes = self.options.session_seconds / 60
        return [
            error_event("session_expired", f"Your session hit the maximum duration of {minutes:g} minutes.")
        ]

    def pop_background(self) -> list[TranscriptStream]:
        """Transcriptions started by the last `handle` call, once; the caller paces them beside any response."""
        started, self._background = self._background, []
        return started

    def pop_started_response(self) -> ResponseStream | None:
        """The response started by the last `handle` call, once; the caller paces its events."""
        started, self._started = self._started, None
        return started

    def handle_message(self, data: str | bytes) -> list[Event]:
        """Handle one raw WebSocket message: parse it, then `handle` it."""
        if isinstance(data, bytes):
            return [
                error_event(
                    "invalid_value", "Binary messages are not supported; send JSON text events.", param="type"
                )
            ]
        try:
            parsed = loads(data)
        except ValueError as exc:
            return [error_event("invalid_json", f"The message is not valid JSON: {exc}.")]
        return self.handle(parsed)

    def handle(self, client_event: Any) -> list[Event]:
        """Handle one parsed client event; return the events to send now."""
        if not isinstance(client_event, dict):
            return [error_event("invalid_type", "Expected a JSON object as the event.", param="type")]
        client_event_id = client_event.get("event_id")
        if not isinstance(client_event_id, str):
            client_event_id = None
        try:
            kind = client_event.get("type")
            if kind is None:
                raise missing("type")
            handler = self._handlers.get(kind) if isinstance(kind, str) else None
            if handler is None:
                raise invalid_value("type", kind, ", ".join(f"'{name}'" for name in CLIENT_EVENTS))
            return handler(client_event)
        except ProtocolError as exc:
            return [error_event(exc.code, exc.message, param=exc.param, client_event_id=client_event_id)]

    # ----- session -----

    def _session_copy(self) -> dict[str, Any]:
        return copy.deepcopy(self.session)

    def _turn_detection(self) -> dict[str, Any] | None:
        detection: dict[str, Any] | None = self.session["audio"]["input"]["turn_detection"]
        return detection

    def _vad_settings(self) -> VadSettings:
        detection = self._turn_detection()
        if detection is None:
            return VadSettings()
        if detection["type"] == "semantic_vad":
            silence = session_config.SEMANTIC_SILENCE_MS[detection.get("eagerness", "auto")]
            return VadSettings(silence_duration_ms=silence)
        return VadSettings(
            threshold=float(detection["threshold"]),
            prefix_padding_ms=int(detection["prefix_padding_ms"]),
            silence_duration_ms=int(detection["silence_duration_ms"]),
        )

    def _audio_produced(self) -> bool:
        if self._active is not None and self._active.audio_sent_ms > 0:
            return True
        return any(s.item.get("role") == "assistant" and s.audio for s in self.conversation.items())

    def _session_update(self, client_event: dict[str, Any]) -> list[Event]:
        if "session" not in client_event:
            raise missing("session")
        was_manual = self._turn_detection() is None
        self.session = session_config.apply_update(
            self.session, client_event["session"], audio_produced=self._audio_produced()
        )
        self._vad.update_settings(self._vad_settings())
        # Speech the detector saw while turns were manual is not a turn: start detecting afresh either way.
        if was_manual != (self._turn_detection() is None):
            self._vad.reset()
            self._speech_item_id = None
        return [event("session.updated", session=self._session_copy())]

    # ----- input audio buffer -----

    def _append(self, client_event: dict[str, Any]) -> list[Event]:
        audio = client_event.get("audio")
        if audio is None:
            raise missing("audio")
        if not isinstance(audio, str):
            raise invalid_type("audio", "a base64-encoded string")
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(
                "invalid_value", "Invalid 'audio': expected base64-encoded audio bytes.", "audio"
            ) from exc
        if len(pcm) > MAX_APPEND_BYTES:
            raise ProtocolError(
                "invalid_value", "Invalid 'audio': one append may carry at most 15 MiB of audio.", "audio"
            )
        if self._audio_sink is not None:
            self._audio_sink += pcm
        pcm = self._decode_input(pcm)
        self._buffer += pcm
        out: list[Event] = []
        for vad_event in self._vad.process(pcm):
            if self._turn_detection() is not None:
                out.extend(self._on_vad(vad_event))
        if self._turn_detection() is not None:
            out.extend(self._check_idle_timeout())
            if not self._vad.in_speech:
                self._trim_idle_buffer()
        return out

    def _input_format(self) -> str:
        return str(self.session["audio"]["input"]["format"]["type"])

    def _decode_input(self, data: bytes) -> bytes:
        """Bring appended audio to the 24 kHz PCM16 the model works on."""
        if is_g711(self._input_format()):
            return g711.to_pcm24k(data, self._input_format())
        # PCM16 frames may straddle appends; keep the buffer aligned on whole samples.
        data = self._odd_byte + data
        cut = len(data) - len(data) % BYTES_PER_SAMPLE
        self._odd_byte = data[cut:]
        return data[:cut]

    def _encoder(self, format_type: str) -> Callable[[bytes], bytes]:
        if is_g711(format_type):
            return functools.partial(g711.from_pcm24k, format_type=format_type)
        return bytes

    def _trim_idle_buffer(self) -> None:
        keep = ms_to_bytes(self._vad.settings.prefix_padding_ms + IDLE_BUFFER_MS)
        excess = len(self._buffer) - keep
        if excess > 0:
            del self._buffer[:excess]
            self._buffer_start += excess // BYTES_PER_SAMPLE

    def _on_vad(self, vad_event: VadEvent) -> list[Event]:
        detection = self._turn_detection()
        assert detection is not None
        if vad_event.kind == "speech_started":
            self._speech_item_id = new_id("item_")
            self._speech_start = vad_event.sample
            self._idle_deadline = None
            # The documented start includes the prefix padding kept before the detected onset.
            padded = max(0, vad_event.sample - self._vad.settings.prefix_padding_ms * SAMPLES_PER_MS)
            out = [
                event(
                    "input_audio_buffer.speech_started",
                    audio_start_ms=padded // SAMPLES_PER_MS,
                    item_id=self._speech_item_id,
                )
            ]
            if self._active is not None and detection.get("interrupt_response", True):
                out.extend(self._active.cancel("turn_detected"))
            return out
        item_id = self._speech_item_id or new_id("item_")
        self._speech_item_id = None
        # The documented end includes the silence the detector waited for before deciding.
        out = [
            event(
                "input_audio_buffer.speech_stopped",
                audio_end_ms=vad_event.detected_at // SAMPLES_PER_MS,
                item_id=item_id,
            )
        ]
        prefix = self._vad.settings.prefix_padding_ms * SAMPLES_PER_MS
        start = max(self._buffer_start, self._speech_start - prefix)
        end = min(vad_event.detected_at, self._buffer_start + len(self._buffer) // BYTES_PER_SAMPLE)
        audio = bytes(self._buffer[(start - self._buffer_start) * 2 : (end - self._buffer_start) * 2])
        del self._buffer[: (end - self._buffer_start) * 2]
        self._buffer_start = end
        speech = ((self._speech_start - start) * 2, (vad_event.sample - start) * 2)
        out.extend(self._commit_audio(audio, item_id, speech))
        if (
            self.session["type"] == "realtime"
            and detection.get("create_response", True)
            and self._active is None
        ):
            out.extend(self._start_response({}))
        return out

    def _check_idle_timeout(self) -> list[Event]:
        detection = self._turn_detection()
        timeout = detection.get("idle_timeout_ms") if detection else None
        if timeout is None or self._idle_deadline is None or self._active is not None or self._vad.in_speech:
            return []
        now = self._vad.position
        if now < self._idle_deadline + timeout * SAMPLES_PER_MS:
            return []
        start_ms = self._idle_deadline // SAMPLES_PER_MS
        self._idle_deadline = None
        item_id = new_id("item_")
        out = [
            event(
                "input_audio_buffer.timeout_triggered",
                item_id=item_id,
                audio_start_ms=start_ms,
                audio_end_ms=now // SAMPLES_PER_MS,
            )
        ]
        audio = bytes(self._buffer)
        self._buffer_start += len(self._buffer) // BYTES_PER_SAMPLE
        self._buffer.clear()
        out.extend(self._commit_audio(audio, item_id))
        out.extend(self._start_response({}))
        return out

    def _commit(self, client_event: dict[str, Any]) -> list[Event]:
        buffered = duration_ms(self._buffer)
        if buffered < MIN_COMMIT_MS:
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {buffered:.2f}ms of audio.",
            )
        item_id = self._speech_item_id or new_id("item_")
        self._speech_item_id = None
        self._vad.reset()
        audio = bytes(self._buffer)
        self._buffer_start += len(self._buffer) // BYTES_PER_SAMPLE
        self._buffer.clear()
        return self._commit_audio(audio, item_id)

    def _clear(self, client_event: dict[str, Any]) -> list[Event]:
        self._buffer_start += len(self._buffer) // BYTES_PER_SAMPLE
        self._buffer.clear()
        self._vad.reset()
        self._speech_item_id = None
        return [event("input_audio_buffer.cleared")]

    def _commit_audio(self, audio: bytes, item_id: str, speech: tuple[int, int] | None = None) -> list[Event]:
        previous = self.conversation.last_id()
        stored = StoredItem(
            {
                "id": item_id,
                "type": "message",
                "object": "realtime.item",
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": None}],
            },
            {0: bytearray(audio)},
            speech,
        )
        stored.heard = spoken.hear(audio)
        self.conversation.insert(stored)
        out = [
            event("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id),
            event("conversation.item.added", previous_item_id=previous, item=stored.public()),
            event("conversation.item.done", previous_item_id=previous, item=stored.public()),
        ]
        out.extend(self._transcribe(stored))
        return out

    def _transcribe(self, stored: StoredItem) -> list[Event]:
        # Transcription runs beside the response: its events follow asynchronously (see pop_background).
        transcription = self.session["audio"]["input"]["transcription"]
        if transcription is None:
            return []
        seconds = speech_ms(stored) / 1000
        transcript = stored.heard or f"(simulated transcript: {seconds:.1f} s of speech)"
        self._background.append(
            TranscriptStream(
                stored,
                transcript,
                transcription["model"],
                seconds,
                delay=self.options.transcription_delay,
                fail=self.options.fail_transcription,
            )
        )
        return []

    def _output_buffer_clear(self, client_event: dict[str, Any]) -> list[Event]:
        raise ProtocolError(
            "invalid_value",
            "output_audio_buffer.clear is only supported on WebRTC and SIP connections.",
            "type",
        )

    # ----- conversation items -----

    def _item_create(self, client_event: dict[str, Any]) -> list[Event]:
        raw = client_event.get("item")
        if raw is None:
            raise missing("item")
        stored = parse_item(raw, decode=self._item_decoder())
        previous_item_id = client_event.get("previous_item_id")
        if previous_item_id is not None and not isinstance(previous_item_id, str):
            raise invalid_type("previous_item_id", "a string")
        previous = self.conversation.insert(stored, previous_item_id)
        return [
            event("conversation.item.added", previous_item_id=previous, item=stored.public()),
            event("conversation.item.done", previous_item_id=previous, item=stored.public()),
        ]

    def _item_decoder(self) -> Callable[[bytes], bytes]:
        if is_g711(self._input_format()):
            return functools.partial(g711.to_pcm24k, format_type=self._input_format())
        return bytes

    def _item_id(self, client_event: dict[str, Any]) -> str:
        item_id = client_event.get("item_id")
        if item_id is None:
            raise missing("item_id")
        if not isinstance(item_id, str):
            raise invalid_type("item_id", "a string")
        return item_id

    def _item_retrieve(self, client_event: dict[str, Any]) -> list[Event]:
        stored = self.conversation.get(self._item_id(client_event))
        direction = "output" if stored.item.get("role") == "assistant" else "input"
        encoder = self._encoder(self.session["audio"][direction]["format"]["type"])
        return [event("conversation.item.retrieved", item=stored.with_audio(encoder))]

    def _item_delete(self, client_event: dict[str, Any]) -> list[Event]:
        item_id = self._item_id(client_event)
        self.conversation.delete(item_id)
        return [event("conversation.item.deleted", item_id=item_id)]

    def _item_truncate(self, client_event: dict[str, Any]) -> list[Event]:
        item_id = self._item_id(client_event)
        content_index = client_event.get("content_index")
        end_ms = client_event.get("audio_end_ms")
        if content_index is None:
            raise missing("content_index")
        if end_ms is None:
            raise missing("audio_end_ms")
        if isinstance(content_index, bool) or not isinstance(content_index, int):
            raise invalid_type("content_index", "an integer")
        if isinstance(end_ms, bool) or not isinstance(end_ms, int):
            raise invalid_type("audio_end_ms", "an integer")
        if end_ms < 0:
            raise invalid_value("audio_end_ms", end_ms, "a non-negative integer")
        stored = self.conversation.get(item_id)
        if stored.item.get("role") != "assistant" or content_index not in stored.audio:
            raise ProtocolError(
                "invalid_value",
                f"Item {item_id} has no assistant audio at content_index {content_index}.",
                "content_index",
            )
        available = stored.audio_ms(content_index)
        if end_ms > available:
            raise ProtocolError(
                "invalid_value",
                f"Audio content of {available:.0f}ms is already shorter than {end_ms}ms.",
                "audio_end_ms",
            )
        del stored.audio[content_index][ms_to_bytes(end_ms) :]
        # The service drops the transcript of truncated audio: it no longer matches what was heard.
        stored.item["content"][content_index]["transcript"] = ""
        return [
            event(
                "conversation.item.truncated",
                item_id=item_id,
                content_index=content_index,
                audio_end_ms=end_ms,
            )
        ]

    # ----- responses -----

    def _response_create(self, client_event: dict[str, Any]) -> list[Event]:
        request = client_event.get("response", {})
        if request is None:
            request = {}
        if not isinstance(request, dict):
            raise invalid_type("response", "an object")
        return self._start_response(request)

    def _response_cancel(self, client_event: dict[str, Any]) -> list[Event]:
        wanted = client_event.get("response_id")
        if self._active is None or (wanted is not None and wanted != self._active.id):
            raise ProtocolError(
                "response_cancel_not_active", "Cancellation failed: no active response found."
            )
        return self._active.cancel("client_cancelled")

    def _start_response(self, raw_request: dict[str, Any]) -> list[Event]:
        if self.session["type"] != "realtime":
            raise ProtocolError("invalid_value", "A transcription session does not create responses.", "type")
        if self._active is not None:
            raise ProtocolError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._active.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        request = parse_response_request(raw_request, self.session)
        context = self._context(raw_request)
        parallel = self.session.get("parallel_tool_calls", True) is not False
        modalities = request.output_modalities
        if self.options.text_after_text_history and answers_in_text(context):
            modalities = ["text"]
        reply = compose_reply(
            context,
            modalities,
            request.tools,
            request.tool_choice,
            parallel_tool_calls=parallel,
        )
        usage = input_usage(context, request.instructions, self._last_input_usage)
        self._last_input_usage = usage
        config = ResponseConfig(
            output_modalities=request.output_modalities,
            max_output_tokens=request.max_output_tokens,
            audio_output=request.audio_output,
            conversation_id=self.conversation.id if request.in_conversation else None,
            metadata=request.metadata,
            input_usage=usage,
            encode_audio=self._encoder(request.audio_output["format"]["type"]),
            failure=self._failure(),
        )
        stream = ResponseStream(
            config,
            reply,
            self._timing(),
            self.conversation if request.in_conversation else None,
            self._response_finished,
        )
        self._active = stream
        self._started = stream
        self._idle_deadline = None
        # The API reports rate limits as a response starts, counting what it reads.
        read = sum(v for k, v in usage.items() if not k.startswith("cached"))
        return [stream.created_event(), rate_limits_event(read, exhausted=config.failure is RATE_LIMITED)]

    def _failure(self) -> dict[str, Any] | None:
        """The error a response fails with when a fault switch says so (counted over the session's responses)."""
        self._responses += 1
        options = self.options
        if (
            options.rate_limit_after_responses is not None
            and self._responses > options.rate_limit_after_responses
        ):
            return RATE_LIMITED
        if options.fail_responses:
            return SERVER_FAILURE
        return None

    def _timing(self) -> Timing:
        options = self.options
        rng = random.Random(options.seed)
        return Timing(
            options.first_audio_delay, options.pace_audio, options.audio_speed, options.chunk_ms, rng
        )

    def _context(self, request: dict[str, Any]) -> list[StoredItem]:
        if "input" not in request:
            return self.conversation.items()
        raw = request["input"]
        if not isinstance(raw, list):
            raise invalid_type("response.input", "an array")
        context: list[StoredItem] = []
        for index, entry in enumerate(raw):
            if isinstance(entry, dict) and entry.get("type") == "item_reference":
                context.append(self.conversation.get(str(entry.get("id")), f"response.input[{index}].id"))
            else:
                context.append(parse_item(entry, f"response.input[{index}]", self._item_decoder()))
        return context

    def _response_finished(self, stream: ResponseStream) -> list[Event]:
        if self._active is stream:
            self._active = None
        # The idle timeout counts from when the reply has finished playing, on the input timeline.
        self._idle_deadline = self._vad.position + int(stream.audio_sent_ms) * SAMPLES_PER_MS
        return []
