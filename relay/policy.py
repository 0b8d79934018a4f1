"""Session policy: which client events may pass, and which session fields the server keeps for itself.

Pure decisions on parsed events; the session applies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay.protocol import CLIENT_EVENT_TYPES


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
    #: Models a client may name in `session.model` (empty: not checked).
    allowed_models: tuple[str, ...] = ()

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
        if event_type == "session.update":
            session = event.get("session")
            return self._check_model(session) or self._check_locked(session, "session")
        if event_type == "response.create":
            # A response's overrides (instructions, tools, audio.output.voice, ...) are session fields for one
            # response: the same locks apply, on the same paths.
            return self._check_locked(event.get("response"), "response")
        return None

    def _check_model(self, session: Any) -> Refusal | None:
        if not self.allowed_models or not isinstance(session, dict) or "model" not in session:
            return None
        model = session["model"]
        if model in self.allowed_models:
            return None
        return Refusal(
            "relay_policy_violation",
            f"Model {model!r} is not offered by this relay; use one of: {', '.join(self.allowed_models)}.",
            "session.model",
        )

    def _check_locked(self, obj: Any, root: str) -> Refusal | None:
        if not isinstance(obj, dict):
            return None
        for dotted in self.locked_fields:
            if _touches(obj, dotted.split(".")):
                return Refusal(
                    "relay_policy_violation",
                    f"{root}.{dotted} is set by this relay's operator and cannot be changed by clients; "
                    f"remove it from the event.",
                    f"{root}.{dotted}",
                )
        return None


def _touches(obj: dict[str, Any], parts: list[str]) -> bool:
    """True if `obj` sets the field at `parts` or anything under it, or replaces an object on its path.

    A lock on `audio.output` is touched by `audio.output.voice`; a lock on `audio.output.voice` is touched by
    `audio.output.voice` and by `audio.output: null`, which would replace the object holding it.
    """
    node: Any = obj
    for part in parts:
        if not isinstance(node, dict):
            return True
        if part not in node:
            return False
        node = node[part]
    return True
