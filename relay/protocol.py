"""The OpenAI Realtime (GA) wire protocol as the relay sees it: event names, ids, JSON, error events, close codes.

Nothing here does I/O. Every other module speaks the protocol through these names so that a renamed event is a
one-line change.
"""

from __future__ import annotations

import secrets
import string
from enum import IntEnum
from typing import Any

import orjson

#: The only PCM rate the Realtime API accepts, in both directions.
API_RATE = 24000

#: Client events defined by the GA protocol, in the order OpenAI lists them in its "supported values" messages.
CLIENT_EVENTS = (
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
#: The same as a set. Anything else is refused by the relay's policy.
CLIENT_EVENT_TYPES = frozenset(CLIENT_EVENTS)

#: Server events defined by the GA protocol (and the legacy `conversation.item.created` still in the SDK union).
SERVER_EVENT_TYPES = frozenset(
    {
        "error",
        "session.created",
        "session.updated",
        "conversation.created",
        "conversation.item.created",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.retrieved",
        "conversation.item.truncated",
        "conversation.item.deleted",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.failed",
        "conversation.item.input_audio_transcription.segment",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "input_audio_buffer.timeout_triggered",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "response.created",
        "response.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
        "rate_limits.updated",
    }
)


class CloseCode(IntEnum):
    """WebSocket close codes the relay sends to its clients (documented in the README)."""

    NORMAL = 1000  # the upstream ended the session normally, or the client asked to close
    GOING_AWAY = 1001  # the relay is shutting down, or the upstream session expired
    POLICY = 1008  # a limit or policy was exceeded; the preceding error event names it
    TOO_BIG = 1009  # a message exceeded RELAY_MAX_MESSAGE_BYTES
    INTERNAL = 1011  # unexpected relay failure (a bug: the log has the details)
    TRY_AGAIN_LATER = 1013  # the client read too slowly (or not at all) and fell behind: reconnect
    UPSTREAM_AUTH = 4401  # the upstream refused the relay's API key (operator must fix the key)
    UPSTREAM_RATE_LIMITED = 4429  # the upstream answered 429: retry later
    UPSTREAM_UNAVAILABLE = (
        4502  # the upstream could not be reached, refused, failed, or dropped the connection
    )
    UPSTREAM_TIMEOUT = 4504  # the upstream did not complete the handshake in time


# Relay error codes, carried in `error.code` of an OpenAI-shaped error event.
UPSTREAM_UNAVAILABLE = "relay_upstream_unavailable"
UPSTREAM_TIMEOUT = "relay_upstream_timeout"
UPSTREAM_AUTH_FAILED = "relay_upstream_auth_failed"
UPSTREAM_RATE_LIMITED = "relay_upstream_rate_limited"
UPSTREAM_PROTOCOL_ERROR = "relay_upstream_protocol_error"
POLICY_VIOLATION = "relay_policy_violation"
LIMIT_EXCEEDED = "relay_limit_exceeded"
BAD_AUDIO = "relay_bad_audio"
BAD_EVENT = "relay_bad_event"
INTERNAL_ERROR = "relay_internal_error"
SERVER_SHUTTING_DOWN = "relay_shutting_down"
CLIENT_TOO_SLOW = "relay_client_too_slow"
STATE_UNAVAILABLE = "relay_state_unavailable"

_ID_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 21) -> str:
    """Return an id shaped like OpenAI's (`event_`, `sess_`, `item_`, `resp_`, … followed by random characters)."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def new_event_id() -> str:
    """Return a server event id (`event_` + 21 characters, as observed on the wire)."""
    return new_id("event_")


def dumps(event: dict[str, Any]) -> str:
    """Serialise an event to the text of a WebSocket frame."""
    return orjson.dumps(event).decode()


def loads(text: str | bytes) -> Any:
    """Parse the text of a WebSocket frame. Raises `ValueError` on malformed JSON."""
    return orjson.loads(text)


def error_event(
    code: str,
    message: str,
    *,
    error_type: str = "invalid_request_error",
    param: str | None = None,
    client_event_id: str | None = None,
) -> dict[str, Any]:
    """Build an OpenAI-shaped `error` event.

    `client_event_id` names the client event that caused the error, as OpenAI does in `error.event_id`.
    """
    return {
        "type": "error",
        "event_id": new_event_id(),
        "error": {
            "type": error_type,
            "code": code,
            "message": message,
            "param": param,
            "event_id": client_event_id,
        },
    }
