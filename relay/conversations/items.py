"""One conversation item as the history keeps it, and the order the API holds items in."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: Content part types whose words the history keeps, and the field that holds them.
_WORDS = {
    "input_text": "text",
    "output_text": "text",
    "text": "text",
    "input_audio": "transcript",
    "output_audio": "transcript",
    "audio": "transcript",
}


@dataclass
class Item:
    """A message (its text: typed, or the final transcript of speech), a tool call or a tool's output."""

    item_id: str
    previous_item_id: str | None
    #: Arrival order within the conversation: breaks ties and orders items whose predecessor is unknown.
    seq: int
    kind: str = "message"  # message, function_call or function_call_output
    role: str | None = None
    text: str = ""
    #: Cut by barge-in: only `audio_end_ms` of its audio was heard.
    interrupted: bool = False
    audio_end_ms: int | None = None
    #: The item carried audio (the user spoke, the assistant answered aloud).
    spoken: bool = False
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    response_id: str | None = None
    deleted: bool = False
    created_at: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """The item as the HTTP API and the export show it."""
        shown: dict[str, Any] = {
            "id": self.item_id,
            "previous_item_id": self.previous_item_id,
            "type": self.kind,
            "created_at": self.created_at,
        }
        if self.kind == "message":
            shown.update(role=self.role, text=self.text, spoken=self.spoken)
            if self.interrupted:
                shown.update(interrupted=True, audio_end_ms=self.audio_end_ms)
        elif self.kind == "function_call":
            shown.update(call_id=self.call_id, name=self.name, arguments=self.arguments)
        else:
            shown.update(call_id=self.call_id, output=self.output)
        if self.response_id is not None:
            shown["response_id"] = self.response_id
        return shown


def words_of(item: dict[str, Any]) -> str:
    """The words an API item carries: its text parts and audio transcripts, joined."""
    words: list[str] = []
    for part in item.get("content") or ():
        if isinstance(part, dict):
            value = part.get(_WORDS.get(str(part.get("type")), ""))
            if isinstance(value, str) and value:
                words.append(value)
    return " ".join(words)


def has_audio(item: dict[str, Any]) -> bool:
    """True when an API item has an audio content part."""
    return any(
        isinstance(part, dict) and part.get("type") in ("input_audio", "output_audio", "audio")
        for part in item.get("content") or ()
    )


def in_order(items: Iterable[Item]) -> list[Item]:
    """Items in conversation order: each after its `previous_item_id`, as the API inserted it.

    An item inserted after one that already had a follower goes between them (the API's insertion), so of the
    items naming the same predecessor the latest comes first. Items whose predecessor is unknown (null, deleted,
    or from before the relay saw the session) start a run of their own, in arrival order.
    """
    everything = sorted(items, key=lambda item: item.seq)
    known = {item.item_id for item in everything}
    followers: dict[str, list[Item]] = {}
    roots: list[Item] = []
    for item in everything:
        previous = item.previous_item_id
        if previous is not None and previous in known and previous != item.item_id:
            followers.setdefault(previous, []).append(item)
        else:
            roots.append(item)
    ordered: list[Item] = []
    placed: set[str] = set()
    stack: list[Item] = list(reversed(roots))
    while stack:
        item = stack.pop()
        if item.item_id in placed:
            continue
        placed.add(item.item_id)
        ordered.append(item)
        # The latest follower goes right after its predecessor: push the earliest first so it pops last.
        stack.extend(followers.get(item.item_id, ()))
    # A cycle of predecessors (a misbehaving upstream) leaves items unplaced: they follow in arrival order.
    ordered.extend(item for item in everything if item.item_id not in placed)
    return ordered


def visible(items: Sequence[Item]) -> list[Item]:
    """Items still in the conversation (not deleted), in order."""
    return [item for item in in_order(items) if not item.deleted]
