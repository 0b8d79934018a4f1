"""The simulated Gemini Live model: Google's `BidiGenerateContent` protocol as state, free of socket I/O.

`handle(message)` takes one client message and says what to send now, which model turn to stream (as paced
steps), whether a streaming turn is interrupted, and whether to close with which code. The conversation lives in
a `Memory`, which session resumption hands from one connection to the next.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from typing import Any

from relay.audio import Resampler, make_resampler
from relay.fake.gemini.replies import (
    Step,
    example_args,
    named_tools,
    spoken_reply,
    tokens_of_audio,
    tokens_of_text,
    turn_end,
)
from relay.fake.signals import BYTES_PER_MS
from relay.fake.vad import EnergyVad, VadSettings
from relay.protocol import API_RATE

_SETUP_KEYS = frozenset(
    {
        "model",
        "generationConfig",
        "systemInstruction",
        "tools",
        "realtimeInputConfig",
        "sessionResumption",
        "contextWindowCompression",
        "inputAudioTranscription",
        "outputAudioTranscription",
        "proactivity",
        "explicitVadSignal",
    }
)
_MESSAGE_KEYS = ("setup", "clientContent", "realtimeInput", "toolResponse")
#: Audio kept for the echo: the newest this many milliseconds of input.
_BUFFER_MS = 60_000
_SAMPLES_PER_MS = API_RATE // 1000


def camel(key: str) -> str:
    """`realtime_input` → `realtimeInput` (the SDK sends its top-level keys in snake case; protobuf takes both)."""
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


#: Fields whose contents are the caller's own JSON (schemas, arguments, results): their keys are kept as sent.
_OPAQUE = frozenset(
    {"args", "response", "parameters", "parametersJsonSchema", "responseJsonSchema", "labels"}
)


def normalize(value: Any) -> Any:
    """Every structural key in camel case, as protobuf's JSON parser reads both spellings (google-genai sends
    some of each); the contents of schema, argument and result fields are left exactly as sent."""
    if isinstance(value, list):
        return [normalize(item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = camel(key)
        out[name] = item if name in _OPAQUE else normalize(item)
    return out


@dataclass
class Memory:
    """One conversation: what was said, in order, and the handles that resume it."""

    turns: list[tuple[str, str, float]] = field(default_factory=list)  # (role, text, audio ms)

    def prompt_tokens(self) -> tuple[int, int]:
        """Tokens of the whole context so far: (all, of which audio)."""
        audio = sum(tokens_of_audio(ms) for _, _, ms in self.turns)
        text = sum(tokens_of_text(t) for _, t, ms in self.turns if not ms)
        return text + audio, audio


@dataclass
class Output:
    """What the server does with one client message."""

    now: list[dict[str, Any]] = field(default_factory=list)
    turn: list[Step] | None = None
    interrupt: bool = False
    close: tuple[int, str] | None = None


class GeminiSimModel:
    """One connection's protocol state."""

    def __init__(self, models: tuple[str, ...], memories: dict[str, Memory]) -> None:
        self._models = models
        self._memories = memories
        self.memory = Memory()
        self.setup: dict[str, Any] | None = None
        self.resumed_from: str | None = None
        self._vad: EnergyVad | None = None
        self._upsampler: Resampler | None = None
        self._input_rate = 0
        self._buffer = bytearray()  # 24 kHz PCM16 since the last turn ended
        self._buffer_start = 0  # sample position of the buffer's first sample
        self._speech_start: int | None = None
        self._manual_open = False
        self._pending_calls: dict[str, str] = {}
        self.first_delay = 0.3
        self.speed = 3.0
        self.chunk_ms = 100
        #: True while a model turn streams (set by the I/O layer, which owns the pacing).
        self.speaking = False

    # -- setup -----------------------------------------------------------------------------------------------

    @property
    def modality(self) -> str:
        """AUDIO or TEXT, from the setup's generation config."""
        generation = (self.setup or {}).get("generationConfig") or {}
        modalities = generation.get("responseModalities") or ["AUDIO"]
        return "TEXT" if modalities == ["TEXT"] else "AUDIO"

    def _automatic(self) -> dict[str, Any]:
        config = (self.setup or {}).get("realtimeInputConfig") or {}
        automatic: dict[str, Any] = config.get("automaticActivityDetection") or {}
        return automatic

    def _declarations(self) -> list[dict[str, Any]]:
        return [
            d
            for tool in (self.setup or {}).get("tools") or []
            for d in tool.get("functionDeclarations") or []
        ]

    def _setup(self, setup: Any) -> Output:
        if self.setup is not None:
            return Output(close=(1007, "Request contains an invalid argument: setup may be sent only once."))
        if not isinstance(setup, dict):
            return Output(close=(1007, "Invalid JSON payload received: setup must be an object."))
        unknown = sorted(set(setup) - _SETUP_KEYS)
        if unknown:
            return Output(
                close=(
                    1007,
                    f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at 'setup': Cannot find field.",
                )
            )
        model = str(setup.get("model") or "")
        if model.removeprefix("models/") not in self._models:
            return Output(
                close=(
                    1008,
                    f"models/{model.removeprefix('models/')} is not found for API version v1beta, or is not "
                    "supported for bidiGenerateContent.",
                )
            )
        resumption = setup.get("sessionResumption")
        handle = resumption.get("handle") if isinstance(resumption, dict) else None
        if handle:
            memory = self._memories.get(str(handle))
            if memory is None:
                return Output(close=(1008, "Session resumption handle is invalid or has expired."))
            self.memory, self.resumed_from = memory, str(handle)
        self.setup = setup
        automatic = self._automatic()
        settings = VadSettings(
            prefix_padding_ms=int(automatic.get("prefixPaddingMs", 300)),
            silence_duration_ms=int(automatic.get("silenceDurationMs", 500)),
        )
        self._vad = EnergyVad(settings)
        out = Output(now=[{"setupComplete": {}}])
        if isinstance(resumption, dict):
            out.now.append(self.resumption_update())
        return out

    def resumption_update(self) -> dict[str, Any]:
        """A fresh handle for this conversation (every handle given stays valid while the server runs)."""
        handle = "handle-" + secrets.token_hex(8)
        self._memories[handle] = self.memory
        return {"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}}

    # -- messages --------------------------------------------------------------------------------------------

    def handle(self, message: Any) -> Output:
        """One client message, already parsed from JSON."""
        if not isinstance(message, dict):
            return Output(close=(1007, "Invalid JSON payload received: expected an object."))
        message = normalize(message)
        present = [k for k in _MESSAGE_KEYS if k in message]
        if len(present) != 1 or len(message) != 1:
            return Output(
                close=(
                    1007,
                    "Invalid JSON payload received: a message holds exactly one of "
                    + ", ".join(_MESSAGE_KEYS)
                    + ".",
                )
            )
        kind = present[0]
        if kind == "setup":
            return self._setup(message["setup"])
        if self.setup is None:
            return Output(
                close=(1007, "Request contains an invalid argument: the first message must be setup.")
            )
        body = message[kind] if isinstance(message[kind], dict) else {}
        if kind == "realtimeInput":
            return self._realtime_input(body)
        if kind == "clientContent":
            return self._client_content(body)
        return self._tool_response(body)

    def _realtime_input(self, body: dict[str, Any]) -> Output:
        if "activityStart" in body or "activityEnd" in body:
            if not self._automatic().get("disabled"):
                return Output(
                    close=(
                        1007,
                        "Request contains an invalid argument: activityStart and activityEnd "
                        "need automatic activity detection disabled.",
                    )
                )
            if "activityStart" in body:
                self._manual_open = True
                self._speech_start = self._buffer_start + len(self._buffer) // 2
                return Output(interrupt=self.speaking)
            self._manual_open = False
            return self._user_turn_ended(self._buffer_start + len(self._buffer) // 2)
        blob = body.get("audio")
        if not isinstance(blob, dict):
            return Output()  # audioStreamEnd, text and video are accepted and ignored
        rate = _rate(str(blob.get("mimeType", "")))
        if rate is None:
            return Output(
                close=(1007, "Request contains an invalid argument: audio must be audio/pcm;rate=N.")
            )
        try:
            pcm = decode_bytes(blob.get("data"))
        except ValueError:
            return Output(
                close=(1007, "Invalid value at 'realtime_input.audio.data' (TYPE_BYTES): invalid base64.")
            )
        if len(pcm) % 2:
            return Output(
                close=(1007, "Request contains an invalid argument: PCM16 audio has an odd byte count.")
            )
        return self._audio(pcm, rate)

    def _audio(self, pcm: bytes, rate: int) -> Output:
        if rate != self._input_rate or self._upsampler is None:
            self._input_rate, self._upsampler = rate, make_resampler(rate, API_RATE)
        pcm24 = self._upsampler.process(pcm)
        self._buffer += pcm24
        excess = len(self._buffer) - _BUFFER_MS * BYTES_PER_MS
        if excess > 0 and self._speech_start is None:
            del self._buffer[:excess]
            self._buffer_start += excess // 2
        if self._automatic().get("disabled") or self._vad is None:
            return Output()
        out = Output()
        for boundary in self._vad.process(pcm24):
            if boundary.kind == "speech_started":
                self._speech_start = max(
                    self._buffer_start,
                    boundary.sample - self._vad.settings.prefix_padding_ms * _SAMPLES_PER_MS,
                )
                out.interrupt = out.interrupt or self.speaking
                out.now.append({"voiceActivity": {"type": "ACTIVITY_START"}})
            else:
                out.now.append({"voiceActivity": {"type": "ACTIVITY_END"}})
                ended = self._user_turn_ended(boundary.sample + 50 * _SAMPLES_PER_MS)
                out.now += ended.now
                out.turn = ended.turn
        return out

    def _user_turn_ended(self, end: int) -> Output:
        start = self._speech_start if self._speech_start is not None else self._buffer_start
        self._speech_start = None
        lo = max(0, (start - self._buffer_start) * 2)
        hi = max(lo, (end - self._buffer_start) * 2)
        speech = bytes(self._buffer[lo:hi])
        del self._buffer[:hi]
        self._buffer_start += hi // 2
        seconds = len(speech) / BYTES_PER_MS / 1000
        heard = f"(speech, {seconds:.1f} s)"
        self.memory.turns.append(("user", heard, seconds * 1000))
        out = Output()
        if "inputAudioTranscription" in (self.setup or {}):
            out.now.append({"serverContent": {"inputTranscription": {"text": heard}}})
        out.turn = self._answer(f"You spoke for {seconds:.1f} seconds; here it is back.", speech)
        return out

    def _client_content(self, body: dict[str, Any]) -> Output:
        said = ""
        for turn in body.get("turns") or []:
            text = " ".join(
                str(p.get("text", "")) for p in (turn or {}).get("parts") or [] if isinstance(p, dict)
            )
            role = "model" if (turn or {}).get("role") == "model" else "user"
            self.memory.turns.append((role, text, 0.0))
            if role == "user":
                said = text
        if not (body.get("turnComplete") or body.get("turn_complete")):
            return Output()
        tools = named_tools(self._declarations(), said)
        if tools:
            calls = []
            for declaration in tools:
                call_id = "function-call-" + secrets.token_hex(6)
                self._pending_calls[call_id] = str(declaration["name"])
                calls.append({"id": call_id, "name": declaration["name"], "args": example_args(declaration)})
            return Output(turn=[(self.first_delay, {"toolCall": {"functionCalls": calls}})])
        return Output(
            turn=self._answer(
                f"You said: {said}" if said else "Hello! This is the simulated Gemini Live model.", None
            )
        )

    def _tool_response(self, body: dict[str, Any]) -> Output:
        responses = body.get("functionResponses") or []
        results = []
        for response in responses:
            if not isinstance(response, dict) or response.get("id") not in self._pending_calls:
                return Output(
                    close=(
                        1007,
                        "Request contains an invalid argument: functionResponses[].id names no pending call.",
                    )
                )
            self._pending_calls.pop(str(response["id"]))
            results.append(response.get("response"))
        text = "The function returned: " + ", ".join(_compact(r) for r in results)
        self.memory.turns.append(("user", text, 0.0))
        if self._pending_calls:
            return Output()
        return Output(turn=self._answer(text, None))

    def _answer(self, text: str, audio: bytes | None) -> list[Step]:
        steps = spoken_reply(
            text,
            audio,
            first_delay=self.first_delay,
            speed=self.speed,
            chunk_ms=self.chunk_ms,
            modality=self.modality,
        )
        spoken_ms = len(audio) / BYTES_PER_MS if audio else 0.0
        prompt, prompt_audio = self.memory.prompt_tokens()
        self.memory.turns.append(("model", text, spoken_ms))
        response_tokens = tokens_of_audio(spoken_ms) if spoken_ms else tokens_of_text(text)
        steps += turn_end(prompt, prompt_audio, response_tokens, self.modality)
        if isinstance((self.setup or {}).get("sessionResumption"), dict):
            steps.append((0.0, self.resumption_update()))
        return steps


def decode_bytes(data: Any) -> bytes:
    """Bytes of a JSON `bytes` field: protobuf's JSON form takes standard and URL-safe base64 (pydantic, and so
    google-genai, writes the URL-safe one)."""
    text = str(data or "").replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _rate(mime: str) -> int | None:
    kind, _, params = mime.partition(";")
    if kind.strip() != "audio/pcm":
        return None
    name, _, value = params.strip().partition("=")
    if name != "rate" or not value.isdigit():
        return 16000 if not params.strip() else None
    return int(value)


def _compact(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), sort_keys=True)
