"""The options of one `response.create`, checked and resolved against the session's defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay.fake import session_config
from relay.fake.errors import invalid_type, invalid_value, unknown

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


@dataclass(frozen=True)
class ResponseRequest:
    """What a response should be: the request's overrides on top of the session."""

    output_modalities: list[str]
    max_output_tokens: int | str
    tools: list[dict[str, Any]]
    tool_choice: str | dict[str, Any]
    instructions: str
    audio_output: dict[str, Any]
    in_conversation: bool
    metadata: dict[str, Any] | None


def parse_response_request(request: dict[str, Any], session: dict[str, Any]) -> ResponseRequest:
    """Check the `response` object of a `response.create`; raises `ProtocolError` naming the bad field."""
    for key in request:
        if key not in _RESPONSE_KEYS:
            raise unknown(f"response.{key}")
    modalities = session["output_modalities"]
    if "output_modalities" in request:
        if request["output_modalities"] not in (["audio"], ["text"]):
            raise invalid_value(
                "response.output_modalities", request["output_modalities"], "['audio'], ['text']"
            )
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
    if not isinstance(instructions, str):
        raise invalid_type("response.instructions", "a string")
    audio_output = {
        "format": dict(session["audio"]["output"]["format"]),
        "voice": session["audio"]["output"]["voice"],
    }
    requested_audio = request.get("audio")
    if requested_audio is not None:
        if not isinstance(requested_audio, dict) or not isinstance(requested_audio.get("output", {}), dict):
            raise invalid_type("response.audio", "an object with an 'output' object")
        out = requested_audio.get("output", {})
        if "format" in out:
            audio_output["format"] = session_config.validate_format(
                out["format"], "response.audio.output.format"
            )
        if "voice" in out:
            audio_output["voice"] = session_config.validate_voice(out["voice"], "response.audio.output.voice")
    conversation_mode = request.get("conversation", "auto")
    if conversation_mode not in ("auto", "none"):
        raise invalid_value("response.conversation", conversation_mode, "'auto', 'none'")
    metadata = request.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise invalid_type("response.metadata", "an object or null")
    return ResponseRequest(
        output_modalities=list(modalities),
        max_output_tokens=max_tokens,
        tools=tools,
        tool_choice=tool_choice,
        instructions=instructions,
        audio_output=audio_output,
        in_conversation=conversation_mode == "auto",
        metadata=metadata,
    )
