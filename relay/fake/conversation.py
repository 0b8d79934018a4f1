"""The conversation the simulated model keeps: ordered items, with their audio held apart from the public item."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relay.fake.errors import ProtocolError
from relay.fake.signals import duration_ms


@dataclass
class StoredItem:
    """One conversation item. `item` is the public shape (audio left out); `audio` maps content index → PCM."""

    item: dict[str, Any]
    audio: dict[int, bytearray] = field(default_factory=dict)
    #: For audio committed by the VAD: the byte span of actual speech inside `audio[0]` (padding excluded).
    speech: tuple[int, int] | None = None

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
