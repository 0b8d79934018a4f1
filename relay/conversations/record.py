"""What each Realtime event means for the saved conversation: pure decisions, no I/O.

`ConversationRecord` is fed the events a session's `SessionState` parses (both directions) and answers with
writes for the store (`ConversationWrite`, `ItemWrite`, `UsageWrite`), which the session hands to a bounded queue.
It never depends on the high-rate events (audio appends, deltas): user words come from
`conversation.item.input_audio_transcription.completed` (late, matched by item_id), assistant words from the final
transcript (`response.output_audio_transcript.done`, `conversation.item.done`), an interruption from the client's
`conversation.item.truncate` (the audio actually heard).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from relay.conversations.items import Item, has_audio, visible, words_of
from relay.conversations.pricing import PriceTable
from relay.conversations.replay import SPEAK_ON_ID

#: Characters of the first words shown in a conversation list.
FIRST_WORDS_CHARS = 80


@dataclass(frozen=True)
class ConversationWrite:
    """The conversation's summary row: who, when, how long, what it cost so far."""

    conversation_id: str
    identity: str
    started_at: float
    updated_at: float
    model: str | None
    first_words: str
    cost: Decimal
    continued_from: str | None = None


@dataclass(frozen=True)
class ItemWrite:
    """One item as it now stands (an upsert by conversation and item id)."""

    conversation_id: str
    identity: str
    item: Item


@dataclass(frozen=True)
class UsageWrite:
    """The usage and cost of one response, or of one input transcription."""

    conversation_id: str
    identity: str
    usage_id: str
    kind: str  # response or transcription
    model: str | None
    usage: dict[str, Any]
    cost: Decimal | None
    created_at: float


Write = ConversationWrite | ItemWrite | UsageWrite


@dataclass(frozen=True)
class Spent:
    """Money a usage event cost, for the metric and the daily budget."""

    model: str | None
    cost: Decimal


@dataclass
class ConversationRecord:
    """One conversation's record, built from the events of its session (and of every upstream it rolls over to)."""

    conversation_id: str
    identity: str
    prices: PriceTable
    model: str | None = None
    continued_from: str | None = None
    clock: Callable[[], float] = time.time
    items: dict[str, Item] = field(default_factory=dict)
    cost: Decimal = Decimal(0)
    transcription_model: str | None = None
    started_at: float = 0.0
    _seq: int = 0
    _first_words: str = ""

    def __post_init__(self) -> None:
        self.started_at = self.started_at or self.clock()

    # -- events ----------------------------------------------------------------------------------------------

    def from_client(self, event: dict[str, Any]) -> list[Write]:
        """Writes that a client event (already let through by the policy) calls for."""
        if event.get("type") != "conversation.item.truncate":
            return []
        item = self.items.get(str(event.get("item_id")))
        end_ms = event.get("audio_end_ms")
        if item is None or isinstance(end_ms, bool) or not isinstance(end_ms, int) or end_ms < 0:
            return []
        item.interrupted, item.audio_end_ms = True, end_ms
        return self._item_changed(item)

    def from_upstream(self, event: dict[str, Any]) -> tuple[list[Write], Spent | None]:
        """Writes that an upstream event calls for, and the money it says was spent (if any)."""
        handler = _HANDLERS.get(str(event.get("type")))
        if handler is None:
            return [], None
        return handler(self, event)

    # -- handlers --------------------------------------------------------------------------------------------

    def _session(self, event: dict[str, Any]) -> tuple[list[Write], Spent | None]:
        session = event.get("session")
        if isinstance(session, dict):
            if isinstance(session.get("model"), str):
                self.model = session["model"]
            audio = session.get("audio")
            side = audio.get("input") if isinstance(audio, dict) else None
            transcription = side.get("transcription") if isinstance(side, dict) else None
            if isinstance(transcription, dict) and isinstance(transcription.get("model"), str):
                self.transcription_model = transcription["model"]
        return [], None

    def _item_event(self, event: dict[str, Any]) -> tuple[list[Write], Spent | None]:
        raw = event.get("item")
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or raw["id"] == SPEAK_ON_ID:
            return [], None
        previous = event.get("previous_item_id")
        item = self._item(
            raw["id"], previous if isinstance(previous, str) else None, "previous_item_id" in event
        )
        self._fill(item, raw)
        return self._item_changed(item), None

    def _output_item(self, event: dict[str, Any]) -> tuple[list[Write], Spent | None]:
        raw = event.get("item")
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            return [], None
        item = self._item(raw["id"], None, False)
        if isinstance(event.get("response_id"), str):
            item.response_id = event["response_id"]
        self._fill(item, raw)
        return self._item_changed(item), None

    def _final_words(self, event: dict[str, Any]) -> tuple[list[Write], Spent | None]:
        words = event.get("transcript") if "transcript" in event else event.get("text")
        item = self.items.get(str(event.get("item_id")))
        if item is None or not isinstance(words, str) or not words:
            return [], None
        item.text = words
        return self._item_changed(item), None

    def _arguments(self, event: dict[str, Any]) -> tuple[list[Write], Spent | None]:
        item = self.items.get(str(event.get("item_id")))
        if item is None:
            return [], None
        item.kind = "function_call"
        for name in ("arguments", "call_id", "name"):
            if isinstance(event.get(name), str):
                setattr(item, name, event[name])
        return self._item_changed(item), None

    def _transcription(self, event: dict[str, Any]) -> tuple[list[Write], Spent | None]:
        item_id = str(event.get("item_id"))
        writes: list[Write] = []
        transcript = event.get("transcript")
        item = self.items.get(item_id)
        if item is None and isinstance(transcript, str):
            # The transcript outran the item event (or the item came before the relay saw the session).
            item = self._item(item_id, None, False)
            item.role, item.spoken = "user", True
        if item is not None and isinstance(transcript, str):
            item.text = transcript.strip()
            writes += self._item_changed(item)
        usage = event.get("usage")
        if not isinstance(usage, dict):
            return writes, None
        cost = self.prices.transcription_cost(self.transcription_model, usage)
        writes.append(
            self._usage(f"transcription:{item_id}", "transcription", self.transcription_model, usage, cost)
        )
        return writes + self._spent(cost), Spent(self.transcription_model, cost) if cost else None

    def _truncated(self, event: dict[str, Any]) -> tuple[list[Write], Spent | None]:
        return self.from_client({**event, "type": "conversation.item.truncate"}), None

    def _deleted(self, event: dict[str, Any]) -> tuple[list[Write], Spent | None]:
        item = self.items.get(str(event.get("item_id")))
        if item is None:
            return [], None
        item.deleted = True
        return self._item_changed(item), None

    def _response_done(self, event: dict[str, Any]) -> tuple[list[Write], Spent | None]:
        response = event.get("response")
        if not isinstance(response, dict):
            return [], None
        writes: list[Write] = []
        response_id = response.get("id") if isinstance(response.get("id"), str) else None
        for raw in response.get("output") or ():
            if isinstance(raw, dict) and isinstance(raw.get("id"), str) and raw["id"] in self.items:
                item = self.items[raw["id"]]
                item.response_id = item.response_id or response_id
                self._fill(item, raw)
                writes += self._item_changed(item)
        usage = response.get("usage")
        if not isinstance(usage, dict):
            return writes, None
        cost = self.prices.response_cost(self.model, usage)
        usage_id = f"response:{response_id or self._next_seq()}"
        writes.append(self._usage(usage_id, "response", self.model, usage, cost))
        return writes + self._spent(cost), Spent(self.model, cost) if cost else None

    # -- bookkeeping -----------------------------------------------------------------------------------------

    def _item(self, item_id: str, previous: str | None, previous_given: bool) -> Item:
        item = self.items.get(item_id)
        if item is None:
            item = self.items[item_id] = Item(item_id, previous, self._next_seq(), created_at=self.clock())
        elif previous_given and previous is not None:
            item.previous_item_id = previous
        return item

    def _fill(self, item: Item, raw: dict[str, Any]) -> None:
        kind = raw.get("type")
        if isinstance(kind, str):
            item.kind = kind
        if isinstance(raw.get("role"), str):
            item.role = raw["role"]
        item.spoken = item.spoken or has_audio(raw)
        words = words_of(raw)
        # A truncated item comes back with an empty transcript: the words already heard stay.
        if words:
            item.text = words
        for name in ("call_id", "name", "arguments", "output"):
            if isinstance(raw.get(name), str):
                setattr(item, name, raw[name])

    def _item_changed(self, item: Item) -> list[Write]:
        writes: list[Write] = [ItemWrite(self.conversation_id, self.identity, replace(item))]
        first = self._first_words_now()
        if first != self._first_words:
            self._first_words = first
            writes.append(self.summary())
        return writes

    def _first_words_now(self) -> str:
        for item in visible(list(self.items.values())):
            if item.kind == "message" and item.role in ("user", "assistant") and item.text:
                return item.text[:FIRST_WORDS_CHARS]
        return ""

    def _usage(
        self, usage_id: str, kind: str, model: str | None, usage: dict[str, Any], cost: Decimal | None
    ) -> UsageWrite:
        return UsageWrite(
            self.conversation_id, self.identity, usage_id, kind, model, usage, cost, self.clock()
        )

    def _spent(self, cost: Decimal | None) -> list[Write]:
        if not cost:
            return []
        self.cost += cost
        return [self.summary()]

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def summary(self) -> ConversationWrite:
        """The conversation's summary row as it now stands."""
        return ConversationWrite(
            self.conversation_id,
            self.identity,
            self.started_at,
            self.clock(),
            self.model,
            self._first_words,
            self.cost,
            self.continued_from,
        )

    def text_items(self) -> list[Item]:
        """The items a new upstream needs to go on: messages with words, tool calls and outputs, in order."""
        return [
            item
            for item in visible(list(self.items.values()))
            if (item.kind == "message" and item.text and item.role in ("user", "assistant", "system"))
            or (item.kind == "function_call" and item.call_id)
            or (item.kind == "function_call_output" and item.call_id)
        ]


_Handler = Callable[[ConversationRecord, dict[str, Any]], tuple[list[Write], Spent | None]]
_HANDLERS: dict[str, _Handler] = {
    "session.created": ConversationRecord._session,
    "session.updated": ConversationRecord._session,
    "conversation.item.added": ConversationRecord._item_event,
    "conversation.item.created": ConversationRecord._item_event,
    "conversation.item.done": ConversationRecord._item_event,
    "response.output_item.done": ConversationRecord._output_item,
    "response.output_audio_transcript.done": ConversationRecord._final_words,
    "response.output_text.done": ConversationRecord._final_words,
    "response.function_call_arguments.done": ConversationRecord._arguments,
    "conversation.item.input_audio_transcription.completed": ConversationRecord._transcription,
    "conversation.item.truncated": ConversationRecord._truncated,
    "conversation.item.deleted": ConversationRecord._deleted,
    "response.done": ConversationRecord._response_done,
}
