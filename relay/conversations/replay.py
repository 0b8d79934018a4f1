"""A conversation's text items as `conversation.item.create` events, for a new upstream to go on from.

Used to continue a saved conversation and to roll a session over to a new upstream. The API refuses assistant
audio items, so every turn goes back as text: the user's as `input_text` (their transcript), the assistant's as
`output_text` (its final transcript), tool calls and outputs as they were. After text-only assistant turns a model
tends to answer in text; `SPEAK_ON` (a system item after the replay) keeps it speaking: see docs/conversations.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from relay.conversations.items import Item

#: Ids of the relay's own replay items start with this (the API takes client-chosen item ids up to 32 chars).
REPLAY_PREFIX = "relay_"
SPEAK_ON_ID = "relay_speak_on"
SPEAK_ON = (
    "The conversation above was restored from a transcript. Your earlier turns were spoken aloud; keep answering "
    "the user aloud, in audio, as before."
)


def item_create_events(items: Sequence[Item], *, speak_on: bool = True) -> list[dict[str, Any]]:
    """`conversation.item.create` events that rebuild `items` (in order) in a new upstream session.

    Each item keeps its id, so that what the record knows and what the new upstream holds stay the same items.
    """
    events: list[dict[str, Any]] = []
    for item in items:
        created = _as_api_item(item)
        if created is not None:
            events.append(
                {
                    "type": "conversation.item.create",
                    "event_id": f"relay_replay_{len(events)}",
                    "item": created,
                }
            )
    if events and speak_on:
        events.append(
            {
                "type": "conversation.item.create",
                "event_id": f"relay_replay_{len(events)}",
                "item": {
                    "id": SPEAK_ON_ID,
                    "type": "message",
                    "role": "system",
                    "content": [{"type": "input_text", "text": SPEAK_ON}],
                },
            }
        )
    return events


def _as_api_item(item: Item) -> dict[str, Any] | None:
    base: dict[str, Any] = {"id": item.item_id[:32]}
    if item.kind == "message" and item.text:
        if item.role == "assistant":
            part = {"type": "output_text", "text": item.text}
        elif item.role in ("user", "system"):
            part = {"type": "input_text", "text": item.text}
        else:
            return None
        return {**base, "type": "message", "role": item.role, "content": [part]}
    if item.kind == "function_call" and item.call_id:
        return {
            **base,
            "type": "function_call",
            "call_id": item.call_id,
            "name": item.name or "",
            "arguments": item.arguments or "",
        }
    if item.kind == "function_call_output" and item.call_id:
        return {**base, "type": "function_call_output", "call_id": item.call_id, "output": item.output or ""}
    return None
