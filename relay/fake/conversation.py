"""The conversation the simulated model keeps: ordered items, with their audio held apart from the public item,
and the checking of items that clients supply."""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relay.fake.errors import ProtocolError, invalid_type, invalid_value, missing, unknown
from relay.fake.signals import duration_ms
from relay.protocol import new_id


@dataclass
class StoredItem:
    """One conversation item. `item` is the public shape (audio left out); `audio` maps content index → PCM."""

    item: dict[str, Any]
    audio: dict[int, bytearray] = field(default_factory=dict)
    #: For audio committed by the VAD: the byte span of actual speech inside `audio[0]` (padding excluded).
    speech: tuple[int, int] | None = None
    #: Words the model heard in the item's audio (`relay.fake.spoken`), "" when it carried none.
    heard: str = ""

    @property
    def id(self) -> str:
        """The item id."""
        return str(self.item["id"])

    def public(self) -> dict[str, Any]:
        """The item as `conversation.item.added`/`.done` carry it: without audio bytes."""
        return copy.deepcopy(self.item)

    def with_audio(self, encode: Callable[[bytes], bytes] = bytes) -> dict[str, Any]:
        """The item as `conversation.item.retrieved` carries it: audio included, `encode`d, base64."""
        item = copy.deepcopy(self.item)
        for index, pcm in self.audio.items():
            item["content"][index]["audio"] = base64.b64encode(encode(bytes(pcm))).decode()
        return item

    def audio_ms(self, content_index: int) -> float:
        """Duration of the audio in one content part (0 when it has none)."""
        return duration_ms(self.audio.get(content_index, b""))


class Conversation:
    """Items in order, addressable by id."""

    def __init__(self, conversation_id: str) -> None:
        self.id = conversation_id
        self._order: list[str] = []
        self._items: dict[str, StoredItem] = {}

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __len__(self) -> int:
        return len(self._order)

    def items(self) -> list[StoredItem]:
        """All items, oldest first."""
        return [self._items[i] for i in self._order]

    def last_id(self) -> str | None:
        """Id of the newest item, or None for an empty conversation."""
        return self._order[-1] if self._order else None

    def get(self, item_id: str, param: str = "item_id") -> StoredItem:
        """Look an item up; unknown ids are the client's error."""
        stored = self._items.get(item_id)
        if stored is None:
            raise ProtocolError("invalid_value", f"Item with item_id not found: {item_id}", param)
        return stored

    def insert(self, stored: StoredItem, previous_item_id: str | None = None) -> str | None:
        """Add an item after `previous_item_id` (`"root"` = first; None = at the end).

        Returns the id of the item it now follows (None when it is first).
        """
        if stored.id in self._items:
            raise ProtocolError("invalid_value", f"Item with id '{stored.id}' already exists.", "item.id")
        if previous_item_id is None:
            position = len(self._order)
        elif previous_item_id == "root":
            position = 0
        elif previous_item_id in self._items:
            position = self._order.index(previous_item_id) + 1
        else:
            raise ProtocolError(
                "invalid_value",
                f"Previous item with id '{previous_item_id}' not found.",
                "previous_item_id",
            )
        self._order.insert(position, stored.id)
        self._items[stored.id] = stored
        return self._order[position - 1] if position > 0 else None

    def delete(self, item_id: str) -> None:
        """Remove an item."""
        self.get(item_id)
        self._order.remove(item_id)
        del self._items[item_id]


_CONTENT_TYPES = {
    "user": ("input_text", "input_audio", "input_image"),
    "system": ("input_text",),
    "assistant": ("output_text", "output_audio", "text", "audio"),
}


def parse_item(raw: Any, param: str = "item", decode: Callable[[bytes], bytes] = bytes) -> StoredItem:
    """Check a client-supplied item and split its audio (`decode`d to 24 kHz PCM16) from its public shape."""
    if not isinstance(raw, dict):
        raise invalid_type(param, "an object")
    kind = raw.get("type")
    if kind is None:
        raise missing(f"{param}.type")
    item_id = raw.get("id") or new_id("item_")
    if not isinstance(item_id, str):
        raise invalid_type(f"{param}.id", "a string")
    item: dict[str, Any] = {"id": item_id, "type": kind, "object": "realtime.item", "status": "completed"}
    audio: dict[int, bytearray] = {}
    if kind == "message":
        role = raw.get("role")
        if role not in _CONTENT_TYPES:
            raise invalid_value(f"{param}.role", role, "'user', 'assistant', 'system'")
        content = raw.get("content")
        if not isinstance(content, list):
            raise missing(f"{param}.content")
        parts: list[dict[str, Any]] = []
        for index, part in enumerate(content):
            where = f"{param}.content[{index}]"
            if not isinstance(part, dict) or part.get("type") not in _CONTENT_TYPES[role]:
                value = part.get("type") if isinstance(part, dict) else part
                raise invalid_value(f"{where}.type", value, ", ".join(f"'{t}'" for t in _CONTENT_TYPES[role]))
            public = {k: v for k, v in part.items() if k != "audio"}
            if part["type"] in ("input_text", "output_text", "text") and not isinstance(
                part.get("text"), str
            ):
                raise missing(f"{where}.text")
            if part["type"] in ("input_audio", "output_audio", "audio"):
                public.setdefault("transcript", None)
                encoded = part.get("audio")
                if encoded is not None:
                    try:
                        audio[index] = bytearray(decode(base64.b64decode(str(encoded), validate=True)))
                    except (binascii.Error, ValueError) as exc:
                        raise invalid_value(f"{where}.audio", "<audio>", "base64-encoded audio") from exc
            parts.append(public)
        item["role"] = role
        item["content"] = parts
    elif kind == "function_call":
        for key in ("call_id", "name", "arguments"):
            if not isinstance(raw.get(key), str):
                raise missing(f"{param}.{key}")
            item[key] = raw[key]
    elif kind == "function_call_output":
        for key in ("call_id", "output"):
            if not isinstance(raw.get(key), str):
                raise missing(f"{param}.{key}")
            item[key] = raw[key]
    else:
        raise invalid_value(f"{param}.type", kind, "'message', 'function_call', 'function_call_output'")
    for key in raw:
        if key not in item and key not in ("audio", "content") and key != "object":
            raise unknown(f"{param}.{key}")
    return StoredItem(item, audio)
