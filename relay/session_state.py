"""The decisions of one relay session, free of socket I/O.

`SessionState` takes each frame a client or the upstream sent and answers with `Actions`: frames to send upstream,
frames to send to the client, and perhaps a close. The asyncio layer (`relay.session`) only moves frames; everything
that decides (which rate, what to resample, which error, what to rewrite) happens here and is unit-tested directly.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from relay import protocol, session_audio
from relay.audio import MAX_RATE, MIN_RATE, Resampler, make_resampler
from relay.bounds import RESAMPLE_SLICE_SECONDS, SessionBounds, payload_bytes
from relay.event_keys import duplicate_key, may_have_duplicate_keys
from relay.metrics import (
    NO_IDENTITY_METRICS,
    TO_CLIENT,
    TO_UPSTREAM,
    TRIGGER_COMMIT,
    TRIGGER_RESPONSE_CREATE,
    TRIGGER_SPEECH_STOPPED,
    IdentityMetrics,
    RelayMetrics,
)
from relay.policy import SessionPolicy
from relay.protocol import API_RATE, CloseCode
from relay.tools.calls import CallRequest, ToolCalls

DEFAULTS_EVENT_ID = "relay_session_defaults"
CANCEL_EVENT_ID = "relay_client_left"
_log = structlog.get_logger("relay.session")
_BYTES_PER_SECOND_24K = API_RATE * 2
# G.711 (audio/pcmu, audio/pcma) is 8 kHz, one byte per sample.
_BYTES_PER_SECOND_G711 = 8000
_G711_FORMATS = frozenset({"audio/pcmu", "audio/pcma"})


def _decoded_length(b64: str) -> int:
    """Bytes that base64 text decodes to, without decoding it (padding accounted for)."""
    return len(b64) * 3 // 4 - (2 if b64.endswith("==") else 1 if b64.endswith("=") else 0)


#: Estimated tokens per second of audio, charged to the budget as audio flows and settled by `response.done`'s
#: usage, so that a client that hangs up before `response.done` still pays for what it heard (OpenAI counts about
#: one user-audio token per 100 ms and one assistant-audio token per 50 ms).
USER_AUDIO_TOKENS_PER_SECOND = 10
ASSISTANT_AUDIO_TOKENS_PER_SECOND = 20
#: Above this size a frame whose quotes suggest duplicate keys is not re-parsed by the exact (slow) checker; what
#: the policy judged is forwarded re-serialised instead, so the upstream sees exactly what was checked.
_EXACT_DUPLICATE_CHECK_BYTES = 256 * 1024
#: Answers held for the client until its session.created (more are dropped: one per bad frame is enough).
_MAX_HELD_BEFORE_CREATED = 100
#: The two ways an SDK writes an audio append (compact, and the standard library's default separators).
_APPEND_HEADS = (
    '{"type":"input_audio_buffer.append","audio":"',
    '{"type": "input_audio_buffer.append", "audio": "',
)
#: How the Realtime API writes an audio delta (type first, the audio last).
_DELTA_HEAD = '{"type":"response.output_audio.delta",'
#: Base64 audio longer than this is decoded a slice at a time (a multiple of 4 characters: whole base64 quanta).
_DECODE_SLICE_CHARS = 256 * 1024


@dataclass(slots=True)
class Actions:
    """What to do after one frame: texts for each side, in order, and an optional close (code, reason)."""

    to_upstream: list[str] = field(default_factory=list)
    to_client: list[str] = field(default_factory=list)
    close: tuple[int, str] | None = None
    #: `to_client` carries the first audio of a response that answers a user's turn: once it is handed to the
    #: client socket, call `SessionState.first_audio_forwarded()` so the wait is measured up to that moment.
    first_audio: bool = False
    #: Seconds of audio `to_client` carries (for the client buffer's bound).
    audio_to_client: float = 0.0
    #: Further work on a large input, a slice at a time: the pump carries out each `Actions` and yields between
    #: them, so that decoding and resampling a large frame never holds the loop for long.
    more: Iterator[Actions] | None = None
    #: Seconds of client audio this frame carried (for the real-time pace).
    audio_from_client: float = 0.0
    #: Server tool calls now complete: the session runs each in its own task (`relay.tools.runner`).
    tool_calls: list[CallRequest] = field(default_factory=list)


class EventObserver(Protocol):
    """Sees every event the state parses (relay.conversations.tap): what a forwarded client event and each upstream
    event mean for the saved conversation. `from_upstream` may answer why the session must end (a spent budget)."""

    def from_client(self, event: dict[str, Any]) -> None: ...

    def from_upstream(self, event: dict[str, Any]) -> str | None: ...


def check_rate(value: Any, what: str) -> str | None:
    """Return an error message if `value` is not an acceptable PCM rate, else None."""
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_RATE <= value <= MAX_RATE:
        return (
            f"{what} must be an integer sample rate from {MIN_RATE} to {MAX_RATE} Hz (got {value!r}); "
            "send the rate your microphone actually captures at, the relay converts it to 24000."
        )
    return None


def _created_first(method: Callable[[SessionState, Any], Actions]) -> Callable[[SessionState, Any], Actions]:
    # The client's first server event must be session.created: whatever would reach it earlier waits.
    @functools.wraps(method)
    def decide(self: SessionState, frame: Any) -> Actions:
        actions = method(self, frame)
        self._hold_until_created(actions)
        return actions

    return decide


class SessionState:
    """Everything one session decides. Not thread-safe; one instance per client connection."""

    def __init__(
        self,
        *,
        metrics: RelayMetrics,
        policy: SessionPolicy,
        resampler_quality: str,
        bounds: SessionBounds,
        session_defaults: dict[str, Any] | None = None,
        input_rate: int = API_RATE,
        output_rate: int = API_RATE,
        on_usage: Callable[[int], str | None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        tools: ToolCalls | None = None,
        observer: EventObserver | None = None,
        seed: list[str] | None = None,
    ) -> None:
        self.observer = observer
        #: Decides which upstream events the client must not see (relay.conversations.rollover).
        self.swallow: Callable[[dict[str, Any]], bool] | None = None
        #: Frames sent upstream right after the defaults, before any client frame (a continued conversation).
        self._seed = seed or []
        self._metrics = metrics
        self._policy = policy
        self._quality = resampler_quality
        self._bounds = bounds
        self._max_message_bytes = bounds.max_message_bytes
        self._defaults = session_defaults
        self._on_usage = on_usage
        self._clock = clock
        self.input_rate = input_rate
        self.output_rate = output_rate
        # The rates the URL declared: what a session.update's 24000 (the only value the SDK allows) stands for.
        self._url_rates = {"input": input_rate, "output": output_rate}
        self._input_resampler: Resampler | None = self._new_resampler(input_rate, API_RATE)
        self._output_resamplers: dict[str, Resampler] = {}
        # session.created is held until the upstream has applied the server's defaults, so that the client's
        # first view of the session already carries them.
        self._held_created: dict[str, Any] | None = None
        self._awaiting_defaults = session_defaults is not None
        # End of the user's turn (clock, trigger) not yet answered by a response.created.
        self._turn_end: tuple[float, str] | None = None
        # Responses created but without audio yet, with the turn end each answers (None: not a user's turn).
        self._awaiting_audio: dict[str, tuple[float, str] | None] = {}
        self._audio_started: set[str] = set()
        self._unsent_first_audio: tuple[float, str] | None = None
        self._in_bytes_per_second = _BYTES_PER_SECOND_24K
        self._out_bytes_per_second = _BYTES_PER_SECOND_24K
        # G.711 passes untouched: these follow the formats the client set (and the upstream's first session).
        self._input_g711 = False
        self._output_g711 = False
        self._g711_responses: dict[str, bool] = {}  # response id → its audio is G.711 (from response.created)
        # Responses cut by barge-in or response.cancel: none of their audio (nor a resampler tail) follows.
        self._cut_responses: set[str] = set()
        self._interrupts = True
        self._created_sent = False
        self._before_created: list[str] = []
        #: Per-identity counters; the session sets them for its identity (a no-op unless the label is on).
        self.identity_metrics: IdentityMetrics = NO_IDENTITY_METRICS
        #: Told every wait for first audio too (the provider's own series, relay.providers.metrics).
        self.on_first_audio: Callable[[float], None] | None = None
        self.turns = 0
        self.first_audio_waits: list[float] = []
        self.audio_seconds = {TO_UPSTREAM: 0.0, TO_CLIENT: 0.0}
        self.tokens_used = 0
        # Tokens charged from audio seconds since the last `response.done` settled them against real usage.
        self._estimated_tokens = 0.0
        self._estimate_charged = 0
        #: Responses created upstream and not yet done: what the upstream will still bill for.
        self.responses_in_progress: set[str] = set()
        # Malformed upstream event kinds already logged (each is logged once per session).
        self._upstream_faults_seen: set[str] = set()
        #: The server tools offered in this session, if any (`relay.tools.calls`).
        self.tools = tools

    # -- opening ---------------------------------------------------------------------------------------------

    def opening_events(self) -> list[str]:
        """Frames to send upstream before any client event: the server's session defaults, then any seed."""
        if self._defaults is None:
            return list(self._seed)
        session = {"type": "realtime", **self._defaults}
        defaults = protocol.dumps(
            {"type": "session.update", "event_id": DEFAULTS_EVENT_ID, "session": session}
        )
        return [defaults, *self._seed]

    # -- client → upstream -----------------------------------------------------------------------------------

    @_created_first
    def from_client_text(self, text: str) -> Actions:
        """Decide what to do with a text frame from the client."""
        if text.startswith(_APPEND_HEADS):
            fast = self._plain_append(text)
            if fast is not None:
                return fast
        actions = Actions()
        size = payload_bytes(text)
        self._metrics.bytes_to_upstream.inc(size)
        if size > self._max_message_bytes:
            self._client_error(
                actions,
                protocol.LIMIT_EXCEEDED,
                f"A message of {size} bytes (UTF-8) exceeds this relay's limit of {self._max_message_bytes} bytes "
                "(RELAY_MAX_MESSAGE_BYTES); send audio in smaller appends (20-100 ms each).",
            )
            return actions
        try:
            event = protocol.loads(text)
        except ValueError as exc:
            self._client_error(
                actions,
                protocol.BAD_EVENT,
                f"The message is not valid JSON ({exc}); send one JSON event object per text frame.",
            )
            return actions
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self._client_error(
                actions,
                protocol.BAD_EVENT,
                "Each text frame must be a JSON object with a string "
                '"type", e.g. {"type": "response.create"}.',
            )
            return actions
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        try:
            text = self._without_duplicate_keys(text, event)
        except ValueError as exc:
            self._client_error(actions, protocol.BAD_EVENT, str(exc), event_id=event_id)
            return actions
        refusal = self._policy.check(event)
        if refusal is not None:
            self._client_error(actions, refusal.code, refusal.message, param=refusal.param, event_id=event_id)
            return actions
        if self.tools is not None:
            refusal, merged = self.tools.from_client(event)
            if refusal is not None:
                self._client_error(
                    actions, refusal.code, refusal.message, param=refusal.param, event_id=event_id
                )
                return actions
            if merged:
                text = protocol.dumps(event)
        event_type: str = event["type"]
        if self.observer is not None and event_type != "input_audio_buffer.append":
            self.observer.from_client(event)
        if event_type == "input_audio_buffer.append":
            self._append_base64(actions, event, text, event_id)
        elif event_type == "session.update":
            self._session_update(actions, event, text, event_id)
        elif event_type == "input_audio_buffer.commit":
            self._flush_input(actions)
            self._mark_turn_end(TRIGGER_COMMIT)
            actions.to_upstream.append(text)
        elif event_type == "input_audio_buffer.clear":
            if self._input_resampler is not None:
                self._input_resampler.reset()
            actions.to_upstream.append(text)
        elif event_type == "response.create":
            self._mark_turn_end(TRIGGER_RESPONSE_CREATE)
            actions.to_upstream.append(text)
        elif event_type == "response.cancel":
            self._cut_playing()
            actions.to_upstream.append(text)
        elif event_type == "conversation.item.create":
            self._item_create(actions, event, text)
        else:
            actions.to_upstream.append(text)
        if not actions.to_client:  # an event refused with an error was not forwarded
            self._metrics.count_client_event(event_type)
        return actions

    @staticmethod
    def _without_duplicate_keys(text: str, event: dict[str, Any]) -> str:
        """`text` to forward, judged on the same values the policy sees; raise ValueError to refuse it."""
        try:
            if not may_have_duplicate_keys(text, event):
                return text
            if len(text) > _EXACT_DUPLICATE_CHECK_BYTES:
                # Too large to parse twice on the loop: forward exactly what was judged instead.
                return protocol.dumps(event)
            key = duplicate_key(text)
        except RecursionError:
            raise ValueError(
                "The event is nested too deeply to be a Realtime event; send one JSON event object per frame."
            ) from None
        if key is not None:
            raise ValueError(
                f"The event has the key {key!r} more than once; each key may appear once per JSON object, or the "
                "relay and the API could read different values."
            )
        return text

    def refuse_oversized(self, size: int, *, binary: bool) -> Actions:
        """The error for a client message over the limit, which was skipped without being read."""
        actions = Actions()
        self._metrics.bytes_to_upstream.inc(size)
        what = "A binary frame" if binary else "A message"
        advice = (
            "send 20-100 ms of audio per frame"
            if binary
            else "send audio in smaller appends (20-100 ms each)"
        )
        self._client_error(
            actions,
            protocol.LIMIT_EXCEEDED,
            f"{what} of {size} bytes{'' if binary else ' (UTF-8)'} exceeds this relay's limit of "
            f"{self._max_message_bytes} bytes (RELAY_MAX_MESSAGE_BYTES); {advice}.",
        )
        self._hold_until_created(actions)
        return actions

    @_created_first
    def from_client_bytes(self, data: bytes) -> Actions:
        """Decide what to do with a binary frame: raw PCM16LE mono at the session's input rate."""
        actions = Actions()
        self._metrics.bytes_to_upstream.inc(len(data))
        if len(data) > self._max_message_bytes:
            self._client_error(
                actions,
                protocol.LIMIT_EXCEEDED,
                f"A binary frame of {len(data)} bytes exceeds this relay's limit of {self._max_message_bytes} bytes "
                "(RELAY_MAX_MESSAGE_BYTES); send 20-100 ms of audio per frame.",
            )
            return actions
        if not data or (len(data) % 2 and not self._input_g711):
            self._client_error(
                actions,
                protocol.BAD_AUDIO,
                f"A binary frame of {len(data)} bytes is not whole 16-bit samples; binary frames must carry PCM16LE "
                f"mono at {self.input_rate} Hz (an even number of bytes). The frame was dropped.",
            )
            return actions
        bytes_per_second = self._in_bytes_per_second if self._input_g711 else 2 * self.input_rate
        if not self._frame_too_long(actions, len(data) / bytes_per_second, None):
            self._forward_pcm(actions, data)
        if not actions.to_client:
            self._metrics.count_client_event("input_audio_buffer.append")
        return actions

    def finish(self) -> list[str]:
        """Frames to send upstream when the client has left: what the resampler still holds, and a cancel of any
        response in progress (its `response.done` then arrives at once, with the usage to charge)."""
        actions = Actions()
        self._flush_input(actions)
        if self.responses_in_progress:
            actions.to_upstream.append(
                protocol.dumps({"type": "response.cancel", "event_id": CANCEL_EVENT_ID})
            )
        return actions.to_upstream

    def _append_base64(
        self, actions: Actions, event: dict[str, Any], text: str, event_id: str | None
    ) -> None:
        audio = event.get("audio")
        if self._input_resampler is None or self._input_g711:
            # 24 kHz in, 24 kHz up (or G.711): forward the frame as it came, decoding nothing.
            if isinstance(audio, str):
                nbytes = _decoded_length(audio)
                if self._frame_too_long(actions, nbytes / self._in_bytes_per_second, event_id):
                    return
                self._count_audio_in(nbytes)
            actions.to_upstream.append(text)
            return
        if not isinstance(audio, str):
            self._client_error(
                actions,
                protocol.BAD_AUDIO,
                'input_audio_buffer.append needs "audio": base64 PCM16LE.',
                param="audio",
                event_id=event_id,
            )
            return
        # Judged on its length before decoding, so that a giant frame costs no decoding.
        if self._frame_too_long(actions, _decoded_length(audio) / (2 * self.input_rate), event_id):
            return
        if len(audio) > _DECODE_SLICE_CHARS:
            actions.more = self._decode_then_forward(audio, event_id)
            return
        pcm = self._decode(actions, audio, event_id)
        if pcm is not None:
            self._forward_decoded(actions, pcm, event_id)

    def _decode(self, actions: Actions, audio: str, event_id: str | None) -> bytes | None:
        try:
            return base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            self._client_error(
                actions,
                protocol.BAD_AUDIO,
                'input_audio_buffer.append "audio" is not valid '
                "base64; encode the PCM16LE bytes with standard base64. Nothing of it was forwarded.",
                param="audio",
                event_id=event_id,
            )
            return None

    def _decode_then_forward(self, audio: str, event_id: str | None) -> Iterator[Actions]:
        # All of it is decoded (a slice per step) before any of it goes up, so a bad tail refuses the whole frame.
        parts: list[bytes] = []
        for start in range(0, len(audio), _DECODE_SLICE_CHARS):
            actions = Actions()
            part = self._decode(actions, audio[start : start + _DECODE_SLICE_CHARS], event_id)
            if part is None:
                yield actions
                return
            parts.append(part)
            yield actions
        actions = Actions()
        self._forward_decoded(actions, b"".join(parts), event_id)
        yield actions
        if actions.more is not None:
            yield from actions.more

    def _forward_decoded(self, actions: Actions, pcm: bytes, event_id: str | None) -> None:
        if len(pcm) % 2:
            self._client_error(
                actions,
                protocol.BAD_AUDIO,
                f"The appended audio is {len(pcm)} bytes, not whole "
                "16-bit samples; PCM16LE needs an even number of bytes.",
                param="audio",
                event_id=event_id,
            )
            return
        self._forward_pcm(actions, pcm, event_id)

    def _frame_too_long(self, actions: Actions, seconds: float, event_id: str | None) -> bool:
        """Refuse a frame carrying more audio than a client may send ahead of real time."""
        limit = self._bounds.audio_ahead_seconds
        if seconds <= limit:
            actions.audio_from_client = seconds
            return False
        self._client_error(
            actions,
            protocol.LIMIT_EXCEEDED,
            f"One frame carried {seconds:.1f} s of audio, more than this relay accepts at once ({limit:g} s, "
            "RELAY_AUDIO_AHEAD_SECONDS). Send audio as you capture it, 20-100 ms per frame. The frame was dropped.",
            param="audio",
            event_id=event_id,
        )
        return True

    def _forward_pcm(self, actions: Actions, pcm: bytes, event_id: str | None = None) -> None:
        """Send client PCM, already judged by `_frame_too_long`, upstream at 24 kHz; a long input is resampled in
        slices (see `Actions`)."""
        if not pcm:  # nothing to resample: the upstream judges an empty append as it would without the relay
            empty = {"type": "input_audio_buffer.append", "audio": ""}
            actions.to_upstream.append(
                protocol.dumps(empty if event_id is None else {**empty, "event_id": event_id})
            )
            return
        step = 2 * max(1, int(self.input_rate * RESAMPLE_SLICE_SECONDS))
        self._send_audio(actions, self._resample_in(pcm[:step]), event_id)
        if len(pcm) > step:
            actions.more = self._slices(pcm, step)

    def _slices(self, pcm: bytes, step: int) -> Iterator[Actions]:
        view = memoryview(pcm)
        for start in range(step, len(pcm), step):
            more = Actions()
            self._send_audio(more, self._resample_in(bytes(view[start : start + step])))
            yield more

    def _session_update(
        self, actions: Actions, event: dict[str, Any], text: str, event_id: str | None
    ) -> None:
        session = event.get("session")
        audio = session.get("audio") if isinstance(session, dict) else None
        if not isinstance(audio, dict):
            actions.to_upstream.append(text)
            return
        self._note_client_formats(actions, session)
        new_rates: dict[str, int] = {}
        for direction in ("input", "output"):
            fmt = audio.get(direction, {}).get("format") if isinstance(audio.get(direction), dict) else None
            if not isinstance(fmt, dict) or fmt.get("type", "audio/pcm") != "audio/pcm" or "rate" not in fmt:
                continue
            problem = check_rate(fmt["rate"], f"session.audio.{direction}.format.rate")
            if problem is not None:
                self._client_error(
                    actions,
                    protocol.BAD_AUDIO,
                    problem,
                    param=f"session.audio.{direction}.format.rate",
                    event_id=event_id,
                )
                return
            new_rates[direction] = self._url_rates[direction] if fmt["rate"] == API_RATE else fmt["rate"]
            fmt["rate"] = API_RATE
        if not new_rates:
            actions.to_upstream.append(text)
            return
        if "input" in new_rates and new_rates["input"] != self.input_rate:
            self._flush_input(actions)  # audio at the old rate goes up before the rate changes
            self.input_rate = new_rates["input"]
            self._input_resampler = self._new_resampler(self.input_rate, API_RATE)
        if "output" in new_rates:
            self.output_rate = new_rates["output"]
            self._output_resamplers.clear()
        actions.to_upstream.append(protocol.dumps(event))

    def _send_audio(self, actions: Actions, pcm24k: bytes, event_id: str | None = None) -> None:
        if not pcm24k:
            return
        self._count_audio_in(len(pcm24k))
        event: dict[str, Any] = {
            "type": "input_audio_buffer.append",
            "audio": base64.b64encode(pcm24k).decode(),
        }
        if event_id is not None:
            event["event_id"] = event_id
        actions.to_upstream.append(protocol.dumps(event))

    def _flush_input(self, actions: Actions) -> None:
        if self._input_resampler is not None and not self._input_g711:
            self._send_audio(actions, self._input_resampler.flush())

    def _resample_in(self, pcm: bytes) -> bytes:
        if self._input_resampler is None or self._input_g711:
            return pcm
        started = self._clock()
        out = self._input_resampler.process(pcm)
        self._metrics.resample_to_upstream.observe(self._clock() - started)
        return out

    # -- upstream → client -----------------------------------------------------------------------------------

    @_created_first
    def from_upstream_text(self, text: str) -> Actions:
        """Decide what to do with a text frame from the upstream."""
        if text.startswith(_DELTA_HEAD):
            fast = self._plain_delta(text)
            if fast is not None:
                return fast
        actions = Actions()
        self._metrics.bytes_to_client.inc(payload_bytes(text))
        try:
            event = protocol.loads(text)
            event_type = event["type"]
            if not isinstance(event_type, str):
                raise TypeError("type is not a string")
        except (ValueError, TypeError, KeyError) as exc:
            self._upstream_fault(actions, "unparsable", f"not a JSON event object ({type(exc).__name__})")
            return actions
        self._metrics.count_upstream_event(event_type)
        if self.swallow is not None and self.swallow(event):
            return actions  # the relay's own business (an expiry it rolls over): the client does not see it
        spent = self.observer.from_upstream(event) if self.observer is not None else None
        verdict = self.tools.from_upstream(event) if self.tools is not None else None
        if verdict is not None:
            if verdict.drop:  # a server call's event, hidden from the client
                actions.tool_calls, actions.to_upstream = verdict.start, verdict.to_upstream
                return actions
            if verdict.changed:
                text = protocol.dumps(event)
        handler = _UPSTREAM_HANDLERS.get(event_type)
        if handler is None:
            actions.to_client.append(text)
        else:
            try:
                handler(self, actions, event, text)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                # A field of the wrong shape (`session: null`, `rate_limits: 5`, bad base64 audio): this event is
                # dropped, the session goes on. What the handler had queued for this event is dropped with it.
                actions = Actions()
                self._upstream_fault(actions, event_type, f"{type(exc).__name__}: {exc}"[:200])
        if verdict is not None:
            actions.tool_calls.extend(verdict.start)
            actions.to_upstream.extend(verdict.to_upstream)
        if spent is not None and actions.close is None:
            self._end_for_budget(actions, spent)
        return actions

    # -- the two events of every audio frame, judged without a full parse -------------------------------------

    def _plain_append(self, text: str) -> Actions | None:
        """An append written as the SDK writes it, `{"type": "input_audio_buffer.append", "audio": "..."}`, that
        needs no resampling: decided from its text alone. None: anything else (then it is parsed as usual).

        Exactly one such text is possible for each audio string: no other key, no escape, no quote inside the
        audio, so what the upstream parses is what was judged (no duplicate key can hide in it)."""
        if self._input_resampler is not None and not self._input_g711:
            return None
        start = len(_APPEND_HEADS[0]) if text[8] == '"' else len(_APPEND_HEADS[1])
        audio = text[start:-2]
        if not text.endswith('"}') or '"' in audio or "\\" in audio:
            return None
        size = payload_bytes(text)
        if size > self._max_message_bytes:
            return None
        actions = Actions()
        self._metrics.bytes_to_upstream.inc(size)
        nbytes = _decoded_length(audio)
        if self._frame_too_long(actions, nbytes / self._in_bytes_per_second, None):
            return actions
        self._count_audio_in(nbytes)
        actions.to_upstream.append(text)
        self._metrics.count_client_event("input_audio_buffer.append")
        return actions

    def _plain_delta(self, text: str) -> Actions | None:
        """An audio delta whose `delta` comes last and that needs no resampling, decided from its text alone (the
        response it belongs to is read from the fields before the audio). None: parse it as usual."""
        at = text.rfind(',"delta":"')
        if at < 0 or not text.endswith('"}'):
            return None
        head, delta = text[:at], text[at + 10 : -2]
        if "\\" in head or '"' in delta or "\\" in delta:
            return None
        key = head.find(',"response_id":"')
        if key < 0:
            return None
        end = head.find('"', key + 16)
        response_id = head[key + 16 : end]
        if self.output_rate != API_RATE and not self._g711_output_of(response_id):
            return None  # resampled: the slow path decodes it
        actions = Actions()
        self._metrics.bytes_to_client.inc(payload_bytes(text))
        self._metrics.count_upstream_event("response.output_audio.delta")
        actions.audio_to_client = self._count_audio_out(_decoded_length(delta))
        if response_id in self._cut_responses:
            return actions  # the response was cut: audio still in flight from the upstream is not played
        if response_id not in self._audio_started:
            self._first_audio_of(response_id, actions)
        actions.to_client.append(text)
        return actions

    def _upstream_fault(self, actions: Actions, kind: str, what: str) -> None:
        if kind not in self._upstream_faults_seen:
            self._upstream_faults_seen.add(kind)
            _log.warning("upstream_event_malformed", event_type=kind, problem=what)
        self._client_error(
            actions,
            protocol.UPSTREAM_PROTOCOL_ERROR,
            f"The upstream sent a malformed {kind} event ({what}); the relay dropped it and the session goes on. "
            "If this repeats, the operator should check that RELAY_UPSTREAM_URL points at a Realtime API.",
            error_type="server_error",
        )

    def _on_session_event(self, actions: Actions, event: dict[str, Any], text: str) -> None:
        if not isinstance(event.get("session"), dict):
            raise TypeError("its session is not an object")
        self._note_audio_formats(event)
        self._note_upstream_session(event)
        if event["type"] == "session.created" and self._awaiting_defaults:
            self._held_created = event
            return
        if self._awaiting_defaults and self._held_created is not None:
            # The reply to the server's defaults becomes the client's session.created.
            self._awaiting_defaults = False
            event["type"] = "session.created"
            self._held_created = None
        self._to_client_session(actions, event)

    def _on_error(self, actions: Actions, event: dict[str, Any], text: str) -> None:
        error = event.get("error")
        if (
            self._awaiting_defaults
            and isinstance(error, dict)
            and error.get("event_id") == DEFAULTS_EVENT_ID
            and self._held_created is not None
        ):
            # The upstream refused the server's defaults: show the session as it is, and say why.
            self._awaiting_defaults = False
            held, self._held_created = self._held_created, None
            self._to_client_session(actions, held)
            error["message"] = f"The relay's session defaults were refused upstream: {error.get('message')}"
            actions.to_client.append(protocol.dumps(event))
            return
        self._metrics.count_upstream_error(error.get("code") if isinstance(error, dict) else None)
        actions.to_client.append(text)

    def _note_audio_formats(self, event: dict[str, Any]) -> None:
        # The upstream's view of the formats is the truth for counting seconds of audio from bytes.
        session = event.get("session")
        audio = session.get("audio") if isinstance(session, dict) else None
        if not isinstance(audio, dict):
            return
        rates: list[int] = []
        for direction in ("input", "output"):
            side = audio.get(direction)
            fmt = side.get("format") if isinstance(side, dict) else None
            g711 = isinstance(fmt, dict) and fmt.get("type") in _G711_FORMATS
            rates.append(_BYTES_PER_SECOND_G711 if g711 else _BYTES_PER_SECOND_24K)
        self._in_bytes_per_second, self._out_bytes_per_second = rates

    def _to_client_session(self, actions: Actions, event: dict[str, Any]) -> None:
        # The spec's fields stay as the upstream sent them; the client's own rates go in the relay's field.
        session_audio.present_rates(event, self.input_rate, self.output_rate)
        actions.to_client.append(protocol.dumps(event))
        if event["type"] == "session.created" and not self._created_sent:
            self._created_sent = True
            actions.to_client.extend(self._before_created)
            self._before_created.clear()

    def _hold_until_created(self, actions: Actions) -> None:
        if self._created_sent:
            return
        if actions.close is not None:
            # The session ends before it was created: the client hears why, in order.
            actions.to_client[:0] = self._before_created
            self._before_created.clear()
            return
        # Bounded: a client flooding bad frames before the upstream answers must not grow the relay's memory.
        room = _MAX_HELD_BEFORE_CREATED - len(self._before_created)
        self._before_created.extend(actions.to_client[: max(0, room)])
        actions.to_client.clear()

    def _note_client_formats(self, actions: Actions, session: Any) -> None:
        for direction in ("input", "output"):
            kind = session_audio.format_type(session_audio.format_of(session, direction))
            if kind is None:
                continue
            g711 = session_audio.is_g711(kind)
            if direction == "input" and g711 and not self._input_g711:
                self._flush_input(actions)  # PCM already resampled goes up before G.711 bytes follow
            setattr(self, f"_{direction}_g711", g711)

    def _note_upstream_session(self, event: dict[str, Any]) -> None:
        session = event.get("session")
        if event["type"] == "session.created":
            for direction in ("input", "output"):
                kind = session_audio.format_type(session_audio.format_of(session, direction))
                setattr(self, f"_{direction}_g711", session_audio.is_g711(kind))
        audio = session.get("audio") if isinstance(session, dict) else None
        side = audio.get("input") if isinstance(audio, dict) else None
        if isinstance(side, dict) and "turn_detection" in side:
            detection = side["turn_detection"]
            self._interrupts = (
                isinstance(detection, dict) and detection.get("interrupt_response", True) is not False
            )

    def _cut_playing(self) -> None:
        self._cut_responses |= self._audio_started | set(self._output_resamplers) | set(self._awaiting_audio)
        self._output_resamplers.clear()

    def _item_create(self, actions: Actions, event: dict[str, Any], text: str) -> None:
        parts = [p for p, d in session_audio.audio_contents(event.get("item")) if d == "input"]
        if self.input_rate == API_RATE or self._input_g711 or not parts:
            actions.to_upstream.append(text)
            return
        for part in parts:
            part["audio"] = self._convert_whole(part["audio"], self.input_rate, API_RATE)
        actions.to_upstream.append(protocol.dumps(event))

    def _on_item_retrieved(self, actions: Actions, event: dict[str, Any], text: str) -> None:
        changed = False
        for part, direction in session_audio.audio_contents(event.get("item")):
            rate = self.input_rate if direction == "input" else self.output_rate
            if rate != API_RATE and not getattr(self, f"_{direction}_g711"):
                part["audio"] = self._convert_whole(part["audio"], API_RATE, rate)
                changed = True
        actions.to_client.append(protocol.dumps(event) if changed else text)

    def _convert_whole(self, b64: str, in_rate: int, out_rate: int) -> str:
        # A whole clip at once: what the resampler holds back belongs to it, so it is flushed right away.
        resampler = make_resampler(in_rate, out_rate, self._quality)
        pcm = base64.b64decode(b64)
        pcm = pcm[: len(pcm) - len(pcm) % 2]
        return base64.b64encode(resampler.process(pcm) + resampler.flush()).decode()

    def _on_audio_delta(self, actions: Actions, event: dict[str, Any], text: str) -> None:
        response_id = str(event.get("response_id", ""))
        delta = event.get("delta")
        if isinstance(delta, str):
            actions.audio_to_client = self._count_audio_out(_decoded_length(delta))
        if response_id in self._cut_responses:
            return  # the response was cut: audio still in flight from the upstream is not played
        if response_id not in self._audio_started:
            self._first_audio_of(response_id, actions)
        if self.output_rate == API_RATE or not isinstance(delta, str) or self._g711_output_of(response_id):
            actions.to_client.append(text)
            return
        resampler = self._output_resamplers.get(response_id)
        if resampler is None:
            resampler = self._output_resamplers[response_id] = make_resampler(
                API_RATE, self.output_rate, self._quality
            )
        started = self._clock()
        out = resampler.process(base64.b64decode(delta, validate=True))
        self._metrics.resample_to_client.observe(self._clock() - started)
        event["delta"] = base64.b64encode(out).decode()
        actions.to_client.append(protocol.dumps(event))

    def _on_audio_done(self, actions: Actions, event: dict[str, Any], text: str) -> None:
        resampler = self._output_resamplers.pop(str(event.get("response_id", "")), None)
        if resampler is not None:
            tail = resampler.flush()
            if tail:
                # What the resampler held back goes out as one last delta of the same part.
                delta: dict[str, Any] = {
                    key: event[key]
                    for key in ("response_id", "item_id", "output_index", "content_index")
                    if key in event
                }
                actions.to_client.append(
                    protocol.dumps(
                        {
                            "type": "response.output_audio.delta",
                            "event_id": protocol.new_event_id(),
                            **delta,
                            "delta": base64.b64encode(tail).decode(),
                        }
                    )
                )
        actions.to_client.append(text)

    def _on_speech_started(self, actions: Actions, event: dict[str, Any], text: str) -> None:
        # The user spoke again before a response was created: their turn ends at the next speech_stopped.
        self._turn_end = None
        if self._interrupts:
            self._cut_playing()
        actions.to_client.append(text)

    def _on_speech_stopped(self, actions: Actions, event: dict[str, Any], text: str) -> None:
        self._mark_turn_end(TRIGGER_SPEECH_STOPPED)
        actions.to_client.append(text)

    def _on_response_created(self, actions: Actions, event: dict[str, Any], text: str) -> None:
        response = event.get("response")
        if isinstance(response, dict):
            # This response answers the pending turn; a later turn end belongs to a later response.
            response_id = str(response.get("id", ""))
            self._awaiting_audio[response_id] = self._turn_end
            self._turn_end = None
            self.responses_in_progress.add(response_id)
            kind = session_audio.format_type(session_audio.format_of(response, "output"))
            g711 = self._output_g711 if kind is None else session_audio.is_g711(kind)
            self._g711_responses[response_id] = g711
        actions.to_client.append(text)

    def _on_response_done(self, actions: Actions, event: dict[str, Any], text: str) -> None:
        response = event.get("response")
        if isinstance(response, dict):
            response_id = str(response.get("id", ""))
            self._output_resamplers.pop(response_id, None)
            self._awaiting_audio.pop(response_id, None)
            self._audio_started.discard(response_id)
            self.responses_in_progress.discard(response_id)
            self._g711_responses.pop(response_id, None)
            self._cut_responses.discard(response_id)
            spent = self._settle_usage(response.get("usage"))
            if spent is not None:
                # The response still reaches the client; the session ends right after it.
                actions.to_client.append(text)
                self._end_for_budget(actions, spent)
                return
        actions.to_client.append(text)

    def _on_rate_limits(self, actions: Actions, event: dict[str, Any], text: str) -> None:
        for limit in event.get("rate_limits") or ():
            if isinstance(limit, dict) and isinstance(limit.get("remaining"), int | float):
                self._metrics.set_rate_limit(limit.get("name"), limit["remaining"])
        actions.to_client.append(text)

    # -- bookkeeping -----------------------------------------------------------------------------------------

    def _on_transcription_completed(self, actions: Actions, event: dict[str, Any], text: str) -> None:
        # Transcription is billed apart from responses, by tokens or (whisper-1) by audio duration.
        usage = event.get("usage")
        tokens = 0
        if isinstance(usage, dict):
            if usage.get("type") == "duration" and isinstance(usage.get("seconds"), int | float):
                tokens = math.ceil(usage["seconds"] * USER_AUDIO_TOKENS_PER_SECOND)
            elif isinstance(usage.get("total_tokens"), int):
                tokens = usage["total_tokens"]
        actions.to_client.append(text)
        spent = self._charge(tokens) if tokens > 0 else None
        if spent is not None:
            self._end_for_budget(actions, spent)

    def _end_for_budget(self, actions: Actions, message: str) -> None:
        self._client_error(actions, protocol.LIMIT_EXCEEDED, message)
        actions.close = (CloseCode.POLICY, protocol.LIMIT_EXCEEDED)

    def _charge(self, tokens: int) -> str | None:
        """Charge `tokens` (negative: give back an overestimate); why the session must end, if the budget is spent."""
        self.tokens_used += tokens
        if tokens > 0:
            self.identity_metrics.add_tokens(tokens)
        return self._on_usage(tokens) if self._on_usage is not None else None

    def _estimate(self, seconds: float, tokens_per_second: int) -> None:
        # Charged as audio flows, so that hanging up before `response.done` does not dodge the budget; settled
        # against the real usage when `response.done` arrives.
        self._estimated_tokens += seconds * tokens_per_second
        whole = int(self._estimated_tokens) - self._estimate_charged
        if whole > 0:
            self._estimate_charged += whole
            self._charge(whole)

    def _settle_usage(self, usage: Any) -> str | None:
        """Count a response's usage in place of the estimate charged so far; why the session must end, if it must."""
        estimated, self._estimated_tokens, self._estimate_charged = self._estimate_charged, 0.0, 0
        if not isinstance(usage, dict):
            return self._charge(0) if estimated else None
        kinds: dict[str, Any] = {}
        for side in ("input", "output"):
            details = usage.get(f"{side}_token_details")
            if isinstance(details, dict):
                kinds[f"{side}_text"] = details.get("text_tokens")
                kinds[f"{side}_audio"] = details.get("audio_tokens")
                if side == "input":
                    kinds["input_image"] = details.get("image_tokens")
                    kinds["input_cached"] = details.get("cached_tokens")
        for kind, count in kinds.items():
            if isinstance(count, int) and not isinstance(count, bool):
                self._metrics.count_tokens(kind, count)
        total = usage.get("total_tokens")
        if isinstance(total, int) and not isinstance(total, bool) and total > 0:
            return self._charge(total - estimated)
        # No usable total: the estimate stands.
        return self._charge(0) if estimated else None

    def _mark_turn_end(self, trigger: str) -> None:
        # The earliest end of turn counts: a client's response.create after server VAD stopped is not the start.
        if self._turn_end is None:
            self._turn_end = (self._clock(), trigger)

    def _g711_output_of(self, response_id: str) -> bool:
        return self._g711_responses.get(response_id, self._output_g711)

    def _first_audio_of(self, response_id: str, actions: Actions) -> None:
        self._audio_started.add(response_id)
        if response_id in self._awaiting_audio:
            turn = self._awaiting_audio.pop(response_id)
        else:
            # No response.created was seen for it: it answers whatever turn is pending.
            turn, self._turn_end = self._turn_end, None
        if turn is None:
            return
        self.turns += 1
        # Provisional: first_audio_forwarded() replaces it with the wait up to the hand-off to the client.
        self.first_audio_waits.append(self._clock() - turn[0])
        self._unsent_first_audio = turn
        actions.first_audio = True

    def first_audio_forwarded(self) -> None:
        """Record the wait for first audio: call right after `Actions.first_audio` frames reached the client socket.

        The wait runs from the end of the user's turn to this moment, so it includes the relay's own work on the
        delta (resampling, re-encoding) and any wait for the client socket.
        """
        turn, self._unsent_first_audio = self._unsent_first_audio, None
        if turn is None:
            return
        started, trigger = turn
        wait = self._clock() - started
        self.first_audio_waits[-1] = wait
        self._metrics.observe_first_audio(trigger, wait)
        if self.on_first_audio is not None:
            self.on_first_audio(wait)

    def _count_audio_in(self, nbytes: int) -> None:
        seconds = nbytes / self._in_bytes_per_second
        self.audio_seconds[TO_UPSTREAM] += seconds
        self._metrics.audio_to_upstream.inc(seconds)
        self._estimate(seconds, USER_AUDIO_TOKENS_PER_SECOND)

    def _count_audio_out(self, nbytes: int) -> float:
        seconds = nbytes / self._out_bytes_per_second
        self.audio_seconds[TO_CLIENT] += seconds
        self._metrics.audio_to_client.inc(seconds)
        self._estimate(seconds, ASSISTANT_AUDIO_TOKENS_PER_SECOND)
        return seconds

    def _client_error(
        self,
        actions: Actions,
        code: str,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        self._metrics.count_error(code)
        actions.to_client.append(
            protocol.dumps(
                protocol.error_event(
                    code, message, error_type=error_type, param=param, client_event_id=event_id
                )
            )
        )

    def _new_resampler(self, in_rate: int, out_rate: int) -> Resampler | None:
        return None if in_rate == out_rate else make_resampler(in_rate, out_rate, self._quality)


_Handler = Callable[[SessionState, Actions, dict[str, Any], str], None]
_UPSTREAM_HANDLERS: dict[str, _Handler] = {
    "session.created": SessionState._on_session_event,
    "session.updated": SessionState._on_session_event,
    "error": SessionState._on_error,
    "response.output_audio.delta": SessionState._on_audio_delta,
    "response.output_audio.done": SessionState._on_audio_done,
    "conversation.item.retrieved": SessionState._on_item_retrieved,
    "input_audio_buffer.speech_started": SessionState._on_speech_started,
    "input_audio_buffer.speech_stopped": SessionState._on_speech_stopped,
    "response.created": SessionState._on_response_created,
    "response.done": SessionState._on_response_done,
    "rate_limits.updated": SessionState._on_rate_limits,
    "conversation.item.input_audio_transcription.completed": SessionState._on_transcription_completed,
}
