"""The OpenAI session as a Gemini Live `setup`: what maps, and what a `session.update` may still change.

Pure functions on plain dicts. The OpenAI session object shown to the client is kept in the GA shape (PCM at
24 kHz both ways, as the SDK types it); the relay converts the input to Gemini's 16 kHz itself.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from relay.config import GA_VOICES
from relay.protocol import API_RATE, new_id

PROVIDER = "Gemini Live"
#: Session keys the translation honours; any other key a client sets is refused by name.
_HONOURED_KEYS = frozenset(
    {
        "type",
        "model",
        "output_modalities",
        "instructions",
        "audio",
        "tools",
        "tool_choice",
        "max_output_tokens",
    }
)
_IGNORED_KEYS = frozenset({"tracing"})
_AUDIO_KEYS = {
    "input": frozenset({"format", "transcription", "turn_detection", "noise_reduction"}),
    "output": frozenset({"format", "voice"}),
}


@dataclass(frozen=True)
class Refused:
    """A session field the translation cannot honour: the param, and why in words naming the provider."""

    param: str
    message: str


def initial_session(model: str, voice: str, instructions: str = "") -> dict[str, Any]:
    """The GA session object a new translated session starts with."""
    pcm = {"type": "audio/pcm", "rate": API_RATE}
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": new_id("sess_"),
        "model": model,
        "output_modalities": ["audio"],
        "instructions": instructions,
        "audio": {
            "input": {
                "format": dict(pcm),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                    "idle_timeout_ms": None,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": dict(pcm), "voice": voice, "speed": 1.0},
        },
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
    }


def _refuse(param: str, what: str) -> Refused:
    return Refused(param, f"{PROVIDER} cannot honour session.{param}: {what}")


def merge_update(current: dict[str, Any], update: Any, voices: tuple[str, ...]) -> dict[str, Any] | Refused:
    """The session after `update`, or why it cannot be applied (the current session is left as it was)."""
    if not isinstance(update, dict):
        return Refused("session", "session.update needs a session object.")
    # OpenAI's own tracing has no Gemini counterpart and changes nothing in the conversation: left out.
    update = {k: v for k, v in update.items() if k not in _IGNORED_KEYS}
    unknown = sorted(set(update) - _HONOURED_KEYS)
    if unknown:
        return _refuse(unknown[0], "the field has no Gemini Live equivalent; remove it from the update.")
    merged = copy.deepcopy(current)
    for key, value in update.items():
        if key == "audio":
            problem = _merge_audio(merged["audio"], value, voices)
            if problem is not None:
                return problem
        elif key == "output_modalities":
            if value not in (["audio"], ["text"]):
                return _refuse(key, 'use ["audio"] or ["text"].')
            merged[key] = list(value)
        elif key == "tool_choice" and value not in ("auto", "none"):
            return _refuse(key, "Gemini decides itself when to call a tool; use auto or none.")
        elif key == "type" and value != "realtime":
            return _refuse(key, "only realtime sessions are translated (no transcription sessions).")
        elif key == "model" and value != current["model"]:
            return _refuse(
                key, "the model is chosen when the session opens (?model=); connect again to change it."
            )
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _merge_audio(audio: dict[str, Any], update: Any, voices: tuple[str, ...]) -> Refused | None:
    if not isinstance(update, dict):
        return Refused("session.audio", "session.audio must be an object.")
    for side, value in update.items():
        if side not in _AUDIO_KEYS or not isinstance(value, dict):
            return _refuse(f"audio.{side}", "expected audio.input or audio.output objects.")
        for key, field in value.items():
            param = f"audio.{side}.{key}"
            if key not in _AUDIO_KEYS[side]:
                return _refuse(param, "the field has no Gemini Live equivalent; remove it from the update.")
            if key == "format":
                kind = field.get("type") if isinstance(field, dict) else None
                if kind != "audio/pcm":
                    return _refuse(
                        param, "Gemini Live takes PCM only; use audio/pcm (G.711 is not translated)."
                    )
                continue  # the rate is the relay's business (it resamples); the API-side rate stays 24000
            if key == "voice" and field in GA_VOICES and field not in voices:
                # A client that knows only OpenAI's voices (the Agents SDK sends one by default) keeps the
                # provider's; the session it is shown names the voice really used.
                continue
            if key == "voice" and field not in voices:
                return _refuse(param, f"use one of its voices: {', '.join(voices)}.")
            if key == "turn_detection" and isinstance(field, dict) and field.get("create_response") is False:
                return _refuse(
                    f"{param}.create_response",
                    "Gemini always answers at the end of a turn; use turn_detection: null for manual turns.",
                )
            before = audio[side].get(key)
            same_kind = (
                isinstance(before, dict)
                and isinstance(field, dict)
                and field.get("type", before.get("type")) == before.get("type")
            )
            if key == "turn_detection" and isinstance(field, dict) and same_kind:
                audio[side][key] = {**audio[side][key], **field}
            else:
                audio[side][key] = copy.deepcopy(field)
    return None


def setup_message(session: dict[str, Any], model: str, handle: str | None) -> dict[str, Any]:
    """The Gemini `setup` for this session (with `handle`, resuming the conversation held under it)."""
    audio_out = session["output_modalities"] == ["audio"]
    generation: dict[str, Any] = {"responseModalities": ["AUDIO" if audio_out else "TEXT"]}
    voice = session["audio"]["output"].get("voice")
    if audio_out and voice:
        generation["speechConfig"] = {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": voice}}}
    if isinstance(session.get("max_output_tokens"), int):
        generation["maxOutputTokens"] = session["max_output_tokens"]
    setup: dict[str, Any] = {
        "model": model if model.startswith("models/") else f"models/{model}",
        "generationConfig": generation,
        "realtimeInputConfig": realtime_input_config(session),
        "outputAudioTranscription": {},
        "sessionResumption": {"handle": handle} if handle else {},
    }
    if session["audio"]["input"].get("transcription") is not None:
        setup["inputAudioTranscription"] = {}
    if session.get("instructions"):
        setup["systemInstruction"] = {"parts": [{"text": session["instructions"]}]}
    functions = [
        {
            "name": tool["name"],
            "description": tool.get("description") or "",
            "parametersJsonSchema": tool.get("parameters") or {"type": "object", "properties": {}},
        }
        for tool in session.get("tools") or []
        if isinstance(tool, dict) and tool.get("type") == "function" and tool.get("name")
    ]
    if functions and session.get("tool_choice") != "none":
        setup["tools"] = [{"functionDeclarations": functions}]
    return {"setup": setup}


def realtime_input_config(session: dict[str, Any]) -> dict[str, Any]:
    """Gemini's activity detection for the session's turn detection (null: manual turns, activityStart/End)."""
    detection = session["audio"]["input"].get("turn_detection")
    if not isinstance(detection, dict):
        return {"automaticActivityDetection": {"disabled": True}}
    automatic: dict[str, Any] = {"disabled": False}
    if isinstance(detection.get("silence_duration_ms"), int):
        automatic["silenceDurationMs"] = detection["silence_duration_ms"]
    if isinstance(detection.get("prefix_padding_ms"), int):
        automatic["prefixPaddingMs"] = detection["prefix_padding_ms"]
    config: dict[str, Any] = {"automaticActivityDetection": automatic}
    if detection.get("interrupt_response") is False:
        config["activityHandling"] = "NO_INTERRUPTION"
    return config


def manual_turns(session: dict[str, Any]) -> bool:
    """Whether the client ends turns itself (`turn_detection: null`)."""
    return not isinstance(session["audio"]["input"].get("turn_detection"), dict)


def setup_fields(session: dict[str, Any], model: str) -> dict[str, Any]:
    """What of the session the Gemini setup depends on (to tell whether an update changes it)."""
    fields: dict[str, Any] = setup_message(session, model, None)["setup"]
    return fields
