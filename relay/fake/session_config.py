"""The GA session object of the simulated model: its defaults, and how a `session.update` is checked and merged.

Everything here is pure: `apply_update` either returns a new full session or raises `ProtocolError` without
touching the current one, so a refused update leaves the session exactly as it was.
"""

from __future__ import annotations

import copy
from typing import Any

from relay.fake.errors import ProtocolError, invalid_type, invalid_value, missing, unknown
from relay.fake.models import EFFORTS, TRANSCRIPTION_MODELS
from relay.protocol import API_RATE, new_id

DEFAULT_INSTRUCTIONS = "You are a helpful assistant."
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
AUDIO_FORMATS = ("audio/pcm", "audio/pcmu", "audio/pcma")

_TOP_LEVEL_KEYS = frozenset(
    {
        "type",
        "model",
        "output_modalities",
        "instructions",
        "audio",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "tracing",
        "truncation",
        "prompt",
        "include",
        "reasoning",
        "parallel_tool_calls",
    }
)
#: What a transcription session (`session.type: "transcription"`) may set: its input audio and `include`.
_TRANSCRIPTION_KEYS = frozenset({"type", "audio", "include"})
_SERVER_VAD_KEYS = frozenset(
    {
        "type",
        "threshold",
        "prefix_padding_ms",
        "silence_duration_ms",
        "idle_timeout_ms",
        "create_response",
        "interrupt_response",
    }
)
_SEMANTIC_VAD_KEYS = frozenset({"type", "eagerness", "create_response", "interrupt_response"})

#: Silence the semantic VAD waits for, by eagerness (the simulated model has no semantics, only timing).
SEMANTIC_SILENCE_MS = {"low": 1200, "medium": 700, "high": 350, "auto": 700}


def default_server_vad() -> dict[str, Any]:
    """The server VAD settings a new session starts with."""
    return {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "idle_timeout_ms": None,
        "create_response": True,
        "interrupt_response": True,
    }


def default_semantic_vad() -> dict[str, Any]:
    """The semantic VAD settings used when a client switches to `semantic_vad` without details."""
    return {"type": "semantic_vad", "eagerness": "auto", "create_response": True, "interrupt_response": True}


def transcription_session(expires_at: int) -> dict[str, Any]:
    """A transcription-only session (`?intent=transcription`): input audio in, transcripts out, no responses."""
    return {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": new_id("sess_"),
        "expires_at": expires_at,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": API_RATE},
                "transcription": {"model": "gpt-4o-transcribe", "language": None, "prompt": None},
                "noise_reduction": None,
                "turn_detection": default_server_vad(),
            }
        },
        "include": None,
    }


def default_session(model: str, expires_at: int) -> dict[str, Any]:
    """A complete GA session object, as carried by `session.created`."""
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": new_id("sess_"),
        "model": model,
        "output_modalities": ["audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": expires_at,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": API_RATE},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": default_server_vad(),
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": API_RATE},
                "voice": "marin",
                "speed": 1.0,
            },
        },
        "include": None,
    }


def apply_update(current: dict[str, Any], update: Any, *, audio_produced: bool) -> dict[str, Any]:
    """Check a `session.update` payload and return the merged full session.

    `audio_produced` tells whether the assistant already spoke (the voice is then fixed).
    Raises `ProtocolError` with OpenAI's codes: `missing_required_parameter`, `unknown_parameter`,
    `invalid_value`, `invalid_type`.
    """
    if not isinstance(update, dict):
        raise invalid_type("session", "an object")
    if "type" not in update:
        raise missing("session.type")
    if update["type"] not in ("realtime", "transcription"):
        raise invalid_value("session.type", update["type"], "'realtime', 'transcription'")
    if update["type"] != current["type"]:
        raise invalid_value("session.type", update["type"], f"'{current['type']}' (a session keeps its type)")
    allowed = _TOP_LEVEL_KEYS if update["type"] == "realtime" else _TRANSCRIPTION_KEYS
    for key in update:
        if key not in allowed:
            raise unknown(f"session.{key}")
    merged = copy.deepcopy(current)
    if "model" in update and update["model"] != current["model"]:
        raise ProtocolError(
            "invalid_value", "Cannot change the model of an existing session.", "session.model"
        )
    if "output_modalities" in update:
        merged["output_modalities"] = _modalities(update["output_modalities"], "session.output_modalities")
    if "instructions" in update:
        merged["instructions"] = _typed(update["instructions"], str, "session.instructions", "a string")
    if "audio" in update:
        _merge_audio(merged["audio"], update["audio"], audio_produced=audio_produced)
    if "tools" in update:
        merged["tools"] = validate_tools(update["tools"], "session.tools")
    if "tool_choice" in update:
        merged["tool_choice"] = validate_tool_choice(update["tool_choice"], "session.tool_choice")
    if "max_output_tokens" in update:
        merged["max_output_tokens"] = validate_max_tokens(
            update["max_output_tokens"], "session.max_output_tokens"
        )
    if "tracing" in update:
        merged["tracing"] = _nullable_choice(update["tracing"], "session.tracing", ("auto",))
    if "truncation" in update:
        merged["truncation"] = _nullable_choice(
            update["truncation"], "session.truncation", ("auto", "disabled"), nullable=False
        )
    if "prompt" in update:
        if update["prompt"] is not None and not isinstance(update["prompt"], dict):
            raise invalid_type("session.prompt", "an object or null")
        merged["prompt"] = copy.deepcopy(update["prompt"])
    if "reasoning" in update:
        merged["reasoning"] = _reasoning(update["reasoning"], "session.reasoning")
    if "parallel_tool_calls" in update:
        merged["parallel_tool_calls"] = _typed(
            update["parallel_tool_calls"], bool, "session.parallel_tool_calls", "a boolean"
        )
    if "include" in update:
        include = update["include"]
        if include is not None and not (
            isinstance(include, list) and all(isinstance(x, str) for x in include)
        ):
            raise invalid_type("session.include", "an array of strings or null")
        merged["include"] = copy.deepcopy(include)
    return merged


def _merge_audio(audio: dict[str, Any], update: Any, *, audio_produced: bool) -> None:
    if not isinstance(update, dict):
        raise invalid_type("session.audio", "an object")
    for key in update:
        if key not in ("input", "output"):
            raise unknown(f"session.audio.{key}")
    if "input" in update:
        inp = update["input"]
        if not isinstance(inp, dict):
            raise invalid_type("session.audio.input", "an object")
        target = audio["input"]
        for key, value in inp.items():
            param = f"session.audio.input.{key}"
            if key == "format":
                target["format"] = validate_format(value, param)
            elif key == "transcription":
                target["transcription"] = _transcription(value, param)
            elif key == "noise_reduction":
                target["noise_reduction"] = _noise_reduction(value, param)
            elif key == "turn_detection":
                target["turn_detection"] = _turn_detection(target["turn_detection"], value, param)
            else:
                raise unknown(param)
    if "output" in update:
        if "output" not in audio:
            raise unknown("session.audio.output")
        out = update["output"]
        if not isinstance(out, dict):
            raise invalid_type("session.audio.output", "an object")
        target = audio["output"]
        for key, value in out.items():
            param = f"session.audio.output.{key}"
            if key == "format":
                target["format"] = validate_format(value, param)
            elif key == "voice":
                voice = validate_voice(value, param)
                if audio_produced and voice != target["voice"]:
                    raise ProtocolError(
                        "invalid_value",
                        "Cannot update a conversation's voice if assistant audio is present.",
                        param,
                    )
                target["voice"] = voice
            elif key == "speed":
                target["speed"] = validate_speed(value, param)
            else:
                raise unknown(param)


def validate_format(value: Any, param: str) -> dict[str, Any]:
    """Normalise an audio format object; PCM must be 24 kHz, the only rate the API accepts."""
    if not isinstance(value, dict):
        raise invalid_type(param, "an object")
    for key in value:
        if key not in ("type", "rate"):
            raise unknown(f"{param}.{key}")
    kind = value.get("type")
    if kind is None:
        raise missing(f"{param}.type")
    if kind not in AUDIO_FORMATS:
        raise invalid_value(f"{param}.type", kind, ", ".join(f"'{f}'" for f in AUDIO_FORMATS))
    if kind != "audio/pcm":
        if "rate" in value:
            raise unknown(f"{param}.rate")
        return {"type": kind}
    rate = value.get("rate", API_RATE)
    if isinstance(rate, bool) or rate != API_RATE:
        raise invalid_value(f"{param}.rate", rate, str(API_RATE))
    return {"type": "audio/pcm", "rate": API_RATE}


def validate_voice(value: Any, param: str) -> str | dict[str, str]:
    """Check a voice: a built-in name, or a custom voice as `{"id": ...}`."""
    if isinstance(value, dict):
        if set(value) != {"id"} or not isinstance(value["id"], str) or not value["id"]:
            raise invalid_value(param, value, "a voice name or {'id': '<voice id>'}")
        return {"id": value["id"]}
    if not isinstance(value, str) or value not in VOICES:
        raise invalid_value(param, value, ", ".join(f"'{v}'" for v in VOICES))
    return value


def validate_speed(value: Any, param: str) -> float:
    """Check an output speed (0.25–1.5)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_type(param, "a number")
    if not 0.25 <= value <= 1.5:
        raise invalid_value(param, value, "a number between 0.25 and 1.5")
    return float(value)


def validate_max_tokens(value: Any, param: str) -> int | str:
    """Check `max_output_tokens`: 1–4096 or `"inf"`."""
    if value == "inf":
        return "inf"
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_type(param, "an integer or 'inf'")
    if not 1 <= value <= 4096:
        raise invalid_value(param, value, "an integer between 1 and 4096, or 'inf'")
    return value


def validate_tools(value: Any, param: str) -> list[dict[str, Any]]:
    """Check a tool list: function tools need a name; MCP tools pass through."""
    if not isinstance(value, list):
        raise invalid_type(param, "an array")
    tools: list[dict[str, Any]] = []
    for index, tool in enumerate(value):
        where = f"{param}[{index}]"
        if not isinstance(tool, dict):
            raise invalid_type(where, "an object")
        kind = tool.get("type", "function")
        if kind not in ("function", "mcp"):
            raise invalid_value(f"{where}.type", kind, "'function', 'mcp'")
        if kind == "function" and not isinstance(tool.get("name"), str):
            raise missing(f"{where}.name")
        tools.append({"type": kind, **{k: copy.deepcopy(v) for k, v in tool.items() if k != "type"}})
    return tools


def validate_tool_choice(value: Any, param: str) -> str | dict[str, Any]:
    """Check `tool_choice`: auto, none, required, or a named function/MCP tool."""
    if value in ("auto", "none", "required"):
        return str(value)
    if isinstance(value, dict) and value.get("type") in ("function", "mcp"):
        return copy.deepcopy(value)
    raise invalid_value(param, value, "'auto', 'none', 'required', or a named tool")


def _modalities(value: Any, param: str) -> list[str]:
    if value not in (["audio"], ["text"]):
        raise invalid_value(param, value, "['audio'], ['text']")
    return list(value)


def _nullable_choice(value: Any, param: str, choices: tuple[str, ...], *, nullable: bool = True) -> Any:
    if (value is None and nullable) or value in choices or isinstance(value, dict):
        return copy.deepcopy(value)
    raise invalid_value(param, value, ", ".join(f"'{c}'" for c in choices))


def _transcription(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type(param, "an object or null")
    for key in value:
        if key not in ("model", "language", "prompt", "languages", "keywords", "delay"):
            raise unknown(f"{param}.{key}")
    model = value.get("model", "whisper-1")
    if model not in TRANSCRIPTION_MODELS:
        raise invalid_value(f"{param}.model", model, ", ".join(f"'{m}'" for m in TRANSCRIPTION_MODELS))
    result: dict[str, Any] = {
        "model": model,
        "language": value.get("language"),
        "prompt": value.get("prompt"),
    }
    for key in ("languages", "keywords"):
        if key in value:
            if value[key] is not None and not (
                isinstance(value[key], list) and all(isinstance(x, str) for x in value[key])
            ):
                raise invalid_type(f"{param}.{key}", "an array of strings or null")
            result[key] = copy.deepcopy(value[key])
    if "delay" in value:
        if value["delay"] is not None and value["delay"] not in EFFORTS:
            raise invalid_value(f"{param}.delay", value["delay"], ", ".join(f"'{e}'" for e in EFFORTS))
        result["delay"] = value["delay"]
    return result


def _typed(value: Any, kind: type, param: str, expected: str) -> Any:
    """`value` when it is of JSON type `kind`, else the `invalid_type` error for `param`."""
    if not isinstance(value, kind):
        raise invalid_type(param, expected)
    return value


def _reasoning(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type(param, "an object or null")
    for key in value:
        if key != "effort":
            raise unknown(f"{param}.{key}")
    effort = value.get("effort")
    if effort is not None and effort not in EFFORTS:
        raise invalid_value(f"{param}.effort", effort, ", ".join(f"'{e}'" for e in EFFORTS))
    return {"effort": effort}


def _noise_reduction(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in ("near_field", "far_field"):
        raise invalid_value(f"{param}.type", value, "'near_field', 'far_field'")
    for key in value:
        if key not in ("type", "strength"):
            raise unknown(f"{param}.{key}")
    result: dict[str, Any] = {"type": value["type"]}
    if "strength" in value:
        strength = value["strength"]
        if strength is not None and (isinstance(strength, bool) or not isinstance(strength, int | float)):
            raise invalid_type(f"{param}.strength", "a number or null")
        result["strength"] = strength
    return result


def _turn_detection(current: dict[str, Any] | None, value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type(param, "an object or null")
    kind = value.get("type", current["type"] if current else None)
    if kind == "server_vad":
        base = current if current and current["type"] == "server_vad" else default_server_vad()
        allowed = _SERVER_VAD_KEYS
    elif kind == "semantic_vad":
        base = current if current and current["type"] == "semantic_vad" else default_semantic_vad()
        allowed = _SEMANTIC_VAD_KEYS
    else:
        raise invalid_value(f"{param}.type", kind, "'server_vad', 'semantic_vad'")
    merged = copy.deepcopy(base)
    for key, item in value.items():
        where = f"{param}.{key}"
        if key not in allowed:
            raise unknown(where)
        if key in ("create_response", "interrupt_response"):
            if not isinstance(item, bool):
                raise invalid_type(where, "a boolean")
        elif key == "threshold":
            if isinstance(item, bool) or not isinstance(item, int | float) or not 0.0 <= item <= 1.0:
                raise invalid_value(where, item, "a number between 0 and 1")
        elif key in ("prefix_padding_ms", "silence_duration_ms"):
            if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= 10_000:
                raise invalid_value(where, item, "an integer between 0 and 10000")
        elif key == "idle_timeout_ms":
            if item is not None and (isinstance(item, bool) or not isinstance(item, int) or item <= 0):
                raise invalid_value(where, item, "a positive integer or null")
        elif key == "eagerness" and item not in SEMANTIC_SILENCE_MS:
            raise invalid_value(where, item, "'low', 'medium', 'high', 'auto'")
        merged[key] = item
    merged["type"] = kind
    return merged
