"""Session policy: which client events may pass, and which session fields the server keeps for itself.

Pure decisions on parsed events; the session applies them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from relay.protocol import CLIENT_EVENT_TYPES

# Fields of `response.create`'s `response` object that override the session for one response.
_RESPONSE_OVERRIDES = {
    "instructions",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "audio.output.voice",
    "output_modalities",
    "audio.output.format",
    "audio.output.speed",
}


@dataclass(frozen=True)
class Refusal:
    """Why a client event is not forwarded: a relay error code, a message for a person, and the offending param."""

    code: str
    message: str
    param: str | None = None


@dataclass(frozen=True)
class SessionPolicy:
    """What clients may do inside a session."""

    locked_fields: tuple[str, ...] = ()

    def check(self, event: dict[str, Any]) -> Refusal | None:
        """Return a `Refusal` when `event` must not go upstream, else None."""
        event_type = event.get("type")
        if event_type not in CLIENT_EVENT_TYPES:
            # OpenAI refuses an unknown type itself; the relay answers as it would, so clients see one answer.
            return Refusal(
                "invalid_value",
                f"Invalid value: {event_type!r}. Event type is not a client event of the Realtime API; the relay "
                "does not forward "
                "it. See the GA client events: session.update, input_audio_buffer.*, conversation.item.*, "
                "response.create, response.cancel.",
                "type",
            )
        if not self.locked_fields:
            return None
        if event_type == "session.update":
            return self._check_locked(event.get("session"), "session", self.locked_fields)
        if event_type == "response.create":
            locked = tuple(f for f in self.locked_fields if f in _RESPONSE_OVERRIDES)
            return self._check_locked(event.get("response"), "response", locked)
        return None

    @staticmethod
    def _check_locked(obj: Any, root: str, locked: Iterable[str]) -> Refusal | None:
        if not isinstance(obj, dict):
            return None
        for dotted in locked:
            if _has_path(obj, dotted.split(".")):
                return Refusal(
                    "relay_policy_violation",
                    f"{root}.{dotted} is set by this relay's operator and cannot be changed by clients; "
                    f"remove it from the event.",
                    f"{root}.{dotted}",
                )
        return None


def _has_path(obj: dict[str, Any], parts: list[str]) -> bool:
    node: Any = obj
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
