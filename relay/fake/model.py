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
import math
import time
from collections.abc import Callable
from typing import Any

from relay.fake import g711, session_config
from relay.fake.conversation import Conversation, StoredItem
from relay.fake.errors import ProtocolError, invalid_type, invalid_value, missing, unknown
from relay.fake.g711 import is_g711
from relay.fake.options import FakeOptions
from relay.fake.response import Event, Reply, ResponseConfig, ResponseStream, Timing, event, text_tokens
from relay.fake.signals import BYTES_PER_MS, BYTES_PER_SAMPLE, duration_ms, ms_to_bytes, speech_like
from relay.fake.vad import EnergyVad, VadEvent, VadSettings
from relay.protocol import API_RATE, dumps, error_event, loads, new_id

__all__ = ["FakeOptions", "SimulatedModel", "beta_rejection_events"]

MAX_APPEND_BYTES = 15 * 1024 * 1024
MIN_COMMIT_MS = 100
#: Input audio costs one token per 100 ms (600 per minute).
AUDIO_MS_PER_INPUT_TOKEN = 100
#: While nobody speaks, the VAD keeps only this much audio beyond the prefix padding.
IDLE_BUFFER_MS = 1000
SAMPLES_PER_MS = API_RATE // 1000
#: Silence kept around the speech when the model plays a voice turn back.
ECHO_PADDING_MS = 50

RATE_LIMIT_REQUESTS = 5000
RATE_LIMIT_TOKENS = 400_000

#: GA client events, in the order OpenAI lists them in its "supported values" messages.
_SUPPORTED_EVENTS = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
)
_RESPONSE_KEYS = frozenset(
    {
        "output_modalities",
        "instructions",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "audio",
        "conversation",
        "input",
        "metadata",
        "prompt",
    }
)


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
    ) -> None:
        self.options = options
        self.session = session_config.default_session(model, int(clock() + options.session_seconds))
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
        self._tokens_used = 0
        self._requests = 0
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
                raise invalid_value("type", kind, ", ".join(f"'{name}'" for name in _SUPPORTED_EVENTS))
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
        self.session = session_config.apply_update(
            self.session, client_event["session"], audio_produced=self._audio_produced()
        )
        self._vad.update_settings(self._vad_settings())
        if self._turn_detection() is None:
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
            out = [
                event(
                    "input_audio_buffer.speech_started",
                    audio_start_ms=vad_event.sample // SAMPLES_PER_MS,
                    item_id=self._speech_item_id,
                )
            ]
            if self._active is not None and detection.get("interrupt_response", True):
                out.extend(self._active.cancel("turn_detected"))
            return out
        item_id = self._speech_item_id or new_id("item_")
        self._speech_item_id = None
        out = [
            event(
                "input_audio_buffer.speech_stopped",
                audio_end_ms=vad_event.sample // SAMPLES_PER_MS,
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
        if detection.get("create_response", True) and self._active is None:
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
        self.conversation.insert(stored)
        out = [
            event("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id),
            event("conversation.item.added", previous_item_id=previous, item=stored.public()),
            event("conversation.item.done", previous_item_id=previous, item=stored.public()),
        ]
        out.extend(self._transcribe(stored))
        return out

    def _transcribe(self, stored: StoredItem) -> list[Event]:
        transcription = self.session["audio"]["input"]["transcription"]
        if transcription is None:
            return []
        seconds = _speech_ms(stored) / 1000
        transcript = f"(simulated transcript: {seconds:.1f} s of speech)"
        stored.item["content"][0]["transcript"] = transcript
        usage: dict[str, Any]
        if transcription["model"] == "whisper-1":
            usage = {"type": "duration", "seconds": round(seconds, 3)}
        else:
            audio_tokens = math.ceil(seconds * 1000 / AUDIO_MS_PER_INPUT_TOKEN)
            out_tokens = text_tokens(transcript)
            usage = {
                "type": "tokens",
                "total_tokens": audio_tokens + out_tokens,
                "input_tokens": audio_tokens,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                "output_tokens": out_tokens,
            }
        ids = {"item_id": stored.id, "content_index": 0}
        return [
            event("conversation.item.input_audio_transcription.delta", **ids, delta=transcript),
            event(
                "conversation.item.input_audio_transcription.completed",
                **ids,
                transcript=transcript,
                usage=usage,
            ),
        ]

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
        stored = _stored_item(raw, decode=self._item_decoder())
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
        if isinstance(end_ms, bool) or not isinstance(end_ms, int | float) or end_ms < 0:
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

    def _start_response(self, request: dict[str, Any]) -> list[Event]:
        if self._active is not None:
            raise ProtocolError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._active.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        for key in request:
            if key not in _RESPONSE_KEYS:
                raise unknown(f"response.{key}")
        session = self.session
        modalities = session["output_modalities"]
        if "output_modalities" in request:
            if request["output_modalities"] not in (["audio"], ["text"]):
                raise invalid_value("response.output_modalities", request["output_modalities"])
            modalities = request["output_modalities"]
        max_tokens = session["max_output_tokens"]
        if "max_output_tokens" in request:
            max_tokens = session_config.validate_max_tokens(
                request["max_output_tokens"], "response.max_output_tokens"
            )
        tools = session["tools"]
        if "tools" in request:
            tools = session_config.validate_tools(request["tools"], "response.tools")
        tool_choice = session["tool_choice"]
        if "tool_choice" in request:
            tool_choice = session_config.validate_tool_choice(request["tool_choice"], "response.tool_choice")
        instructions = request.get("instructions", session["instructions"])
        audio_output = {
            "format": dict(session["audio"]["output"]["format"]),
            "voice": session["audio"]["output"]["voice"],
        }
        requested_audio = request.get("audio")
        if isinstance(requested_audio, dict) and isinstance(requested_audio.get("output"), dict):
            out = requested_audio["output"]
            if "format" in out:
                audio_output["format"] = session_config.validate_format(
                    out["format"], "response.audio.output.format"
                )
            if "voice" in out:
                audio_output["voice"] = session_config.validate_voice(
                    out["voice"], "response.audio.output.voice"
                )
        conversation_mode = request.get("conversation", "auto")
        if conversation_mode not in ("auto", "none"):
            raise invalid_value("response.conversation", conversation_mode, "'auto', 'none'")
        metadata = request.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise invalid_type("response.metadata", "an object or null")
        context = self._context(request)
        reply = _compose_reply(context, modalities, tools, tool_choice)
        in_conversation = conversation_mode == "auto"
        config = ResponseConfig(
            output_modalities=list(modalities),
            max_output_tokens=max_tokens,
            audio_output=audio_output,
            conversation_id=self.conversation.id if in_conversation else None,
            metadata=metadata,
            input_usage=self._input_usage(context, str(instructions)),
            encode_audio=self._encoder(audio_output["format"]["type"]),
        )
        stream = ResponseStream(
            config,
            reply,
            Timing(self.options.first_audio_delay, self.options.pace_audio),
            self.conversation if in_conversation else None,
            self._response_finished,
        )
        self._active = stream
        self._started = stream
        self._idle_deadline = None
        return [stream.created_event()]

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
                context.append(_stored_item(entry, f"response.input[{index}]", self._item_decoder()))
        return context

    def _input_usage(self, context: list[StoredItem], instructions: str) -> dict[str, int]:
        text = text_tokens(instructions)
        audio = 0
        for stored in context:
            for index, part in enumerate(stored.item.get("content", [])):
                text += text_tokens(str(part.get("text") or part.get("transcript") or ""))
                audio += math.ceil(stored.audio_ms(index) / AUDIO_MS_PER_INPUT_TOKEN)
            if stored.item.get("type") != "message":
                text += text_tokens(str(stored.item.get("arguments") or stored.item.get("output") or ""))
        # What the previous response already read is served from the prompt cache.
        usage = {
            "text_tokens": text,
            "audio_tokens": audio,
            "cached_text_tokens": min(text, self._last_input_usage.get("text_tokens", 0)),
            "cached_audio_tokens": min(audio, self._last_input_usage.get("audio_tokens", 0)),
        }
        self._last_input_usage = usage
        return usage

    def _response_finished(self, stream: ResponseStream) -> list[Event]:
        if self._active is stream:
            self._active = None
        # The idle timeout counts from when the reply has finished playing, on the input timeline.
        self._idle_deadline = self._vad.position + int(stream.audio_sent_ms) * SAMPLES_PER_MS
        usage = stream.output_usage()
        total = sum(usage.values()) + sum(
            v for k, v in stream.config.input_usage.items() if not k.startswith("cached")
        )
        self._tokens_used += total
        self._requests += 1
        return [
            event(
                "rate_limits.updated",
                rate_limits=[
                    {
                        "name": "requests",
                        "limit": RATE_LIMIT_REQUESTS,
                        "remaining": RATE_LIMIT_REQUESTS - 1,
                        "reset_seconds": round(60 / RATE_LIMIT_REQUESTS, 3),
                    },
                    {
                        "name": "tokens",
                        "limit": RATE_LIMIT_TOKENS,
                        "remaining": max(0, RATE_LIMIT_TOKENS - total),
                        "reset_seconds": round(60 * total / RATE_LIMIT_TOKENS, 3),
                    },
                ],
            )
        ]


def _compose_reply(
    context: list[StoredItem], modalities: list[str], tools: list[dict[str, Any]], tool_choice: Any
) -> Reply:
    """Decide what the simulated model answers, from the newest meaningful item in the context."""
    last_user_text = ""
    reply_text = "Hello! This is the simulated realtime model."
    reply_audio: bytes | None = None
    last_kind = ""
    for stored in reversed(context):
        item = stored.item
        if item.get("type") == "function_call_output":
            reply_text = f"The function returned: {item.get('output', '')}"
            last_kind = "function_call_output"
            break
        if item.get("type") != "message" or item.get("role") != "user":
            continue
        audio_parts = [i for i, p in enumerate(item["content"]) if p.get("type") == "input_audio"]
        heard = [_speech_audio(stored, i) for i in audio_parts if stored.audio.get(i)]
        texts = [str(p.get("text", "")) for p in item["content"] if p.get("type") == "input_text"]
        if heard:
            reply_audio = b"".join(bytes(a) for a in heard)
            reply_text = f"You spoke for {_speech_ms(stored) / 1000:.1f} seconds; here it is back."
            last_user_text = " ".join(str(p.get("transcript") or "") for p in item["content"])
        elif texts:
            last_user_text = " ".join(texts)
            reply_text = f"You said: {last_user_text}"
        else:
            continue
        last_kind = "user"
        break
    tool = _choose_tool(tools, tool_choice, last_user_text, last_kind)
    if tool is not None:
        return Reply("function_call", function_name=str(tool["name"]), arguments=_example_arguments(tool))
    if modalities == ["text"]:
        return Reply("text", text=reply_text)
    if reply_audio is None:
        reply_audio = speech_like(reply_text)
    return Reply("audio", text=reply_text, audio=reply_audio)


def _speech_ms(stored: StoredItem) -> float:
    """How long the user actually spoke in an item (its whole audio when the VAD did not mark the speech)."""
    if stored.speech is not None:
        return (stored.speech[1] - stored.speech[0]) / BYTES_PER_MS
    return sum(stored.audio_ms(index) for index in stored.audio)


def _speech_audio(stored: StoredItem, content_index: int) -> bytes:
    """The spoken part of an audio content part, with a little of the padding the VAD kept around it."""
    audio = bytes(stored.audio.get(content_index, b""))
    if stored.speech is None or content_index != 0:
        return audio
    pad = ms_to_bytes(ECHO_PADDING_MS)
    start, end = stored.speech
    return audio[max(0, start - pad) : end + pad]


def _choose_tool(
    tools: list[dict[str, Any]], tool_choice: Any, user_text: str, last_kind: str
) -> dict[str, Any] | None:
    functions = [t for t in tools if t.get("type") == "function"]
    if not functions or tool_choice == "none":
        return None
    if isinstance(tool_choice, dict):
        return next((t for t in functions if t["name"] == tool_choice.get("name")), None)
    if tool_choice == "required":
        return functions[0]
    # "auto": call a function the user named, but never right after a function result (no call loops).
    if last_kind != "user":
        return None
    spoken = user_text.lower()
    for tool in functions:
        name = str(tool["name"]).lower()
        if name in spoken or name.replace("_", " ") in spoken:
            return tool
    return None


def _example_arguments(tool: dict[str, Any]) -> str:
    """Arguments that fit the tool's JSON schema, with placeholder values."""
    properties = (tool.get("parameters") or {}).get("properties") or {}
    examples = {"string": "example", "number": 1, "integer": 1, "boolean": True, "array": [], "object": {}}
    args = {
        name: examples.get(str(spec.get("type")) if isinstance(spec, dict) else "")
        for name, spec in properties.items()
    }
    return dumps(args)


_CONTENT_TYPES = {
    "user": ("input_text", "input_audio", "input_image"),
    "system": ("input_text",),
    "assistant": ("output_text", "output_audio", "text", "audio"),
}


def _stored_item(raw: Any, param: str = "item", decode: Callable[[bytes], bytes] = bytes) -> StoredItem:
    """Check a client-supplied item and split its audio (`decode`d to 24 kHz PCM16) from its public shape."""
    if not isinstance(raw, dict):
        raise invalid_type(param, "an object")
    kind = raw.get("type")
    if kind is None:
        raise missing(f"{param}.type")
    item_id = raw.get("id") or new_id("item_")
    if not isinstance(item_id, str):
        raise invalid_type(f"{param}.id", "a string")
    item: dict[str, Any] = {"id": item_id, "type": kind, "object": "realtime.item", "status": "completed"}
    audio: dict[int, bytearray] = {}
    if kind == "message":
        role = raw.get("role")
        if role not in _CONTENT_TYPES:
            raise invalid_value(f"{param}.role", role, "'user', 'assistant', 'system'")
        content = raw.get("content")
        if not isinstance(content, list):
            raise missing(f"{param}.content")
        parts: list[dict[str, Any]] = []
        for index, part in enumerate(content):
            where = f"{param}.content[{index}]"
            if not isinstance(part, dict) or part.get("type") not in _CONTENT_TYPES[role]:
                value = part.get("type") if isinstance(part, dict) else part
                raise invalid_value(f"{where}.type", value, ", ".join(f"'{t}'" for t in _CONTENT_TYPES[role]))
            public = {k: v for k, v in part.items() if k != "audio"}
            if part["type"] in ("input_text", "output_text", "text") and not isinstance(
                part.get("text"), str
            ):
                raise missing(f"{where}.text")
            if part["type"] in ("input_audio", "output_audio", "audio"):
                public.setdefault("transcript", None)
                encoded = part.get("audio")
                if encoded is not None:
                    try:
                        audio[index] = bytearray(decode(base64.b64decode(str(encoded), validate=True)))
                    except (binascii.Error, ValueError) as exc:
                        raise invalid_value(f"{where}.audio", "<audio>", "base64-encoded audio") from exc
            parts.append(public)
        item["role"] = role
        item["content"] = parts
    elif kind == "function_call":
        for key in ("call_id", "name", "arguments"):
            if not isinstance(raw.get(key), str):
                raise missing(f"{param}.{key}")
            item[key] = raw[key]
    elif kind == "function_call_output":
        for key in ("call_id", "output"):
            if not isinstance(raw.get(key), str):
                raise missing(f"{param}.{key}")
            item[key] = raw[key]
    else:
        raise invalid_value(f"{param}.type", kind, "'message', 'function_call', 'function_call_output'")
    for key in raw:
        if key not in item and key not in ("audio", "content") and key != "object":
            raise unknown(f"{param}.{key}")
    return StoredItem(item, audio)
