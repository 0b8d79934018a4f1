"""One model response as a paced stream of GA server events that can be cut short at any point.

The stream is a queue of steps, each `(delay_seconds, produce)`. The I/O layer asks for `next_delay()`, waits,
then calls `emit()`; state (what was said, what audio went out) changes only when a step is emitted, so a cancel
between two steps closes exactly what was opened and the assistant item keeps exactly the audio that was sent —
which is what `conversation.item.truncate` is later checked against.
"""

from __future__ import annotations

import base64
import math
import random
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from relay.fake.conversation import Conversation, StoredItem
from relay.fake.signals import CHUNK_MS, duration_ms, ms_to_bytes
from relay.protocol import new_event_id, new_id

#: Output audio costs one token per 50 ms (1200 per minute), roughly what the service bills.
AUDIO_MS_PER_OUTPUT_TOKEN = 50
CHARS_PER_TEXT_TOKEN = 4

Event = dict[str, Any]
Step = tuple[float, Callable[[], list[Event]]]


def event(kind: str, **fields: Any) -> Event:
    """A server event with a fresh `event_id`."""
    return {"type": kind, "event_id": new_event_id(), **fields}


def text_tokens(text: str) -> int:
    """Plausible token count of a text."""
    return math.ceil(len(text) / CHARS_PER_TEXT_TOKEN)


def split_deltas(text: str) -> list[str]:
    """Split text into word-sized deltas whose concatenation is the text."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


@dataclass
class Reply:
    """What a response says. `kind` picks the output: spoken audio, plain text, or a function call."""

    kind: Literal["audio", "text", "function_call"]
    text: str = ""
    audio: bytes = b""
    function_name: str = ""
    arguments: str = "{}"
    #: Further function calls of the same response (parallel tool calls), each its own output item.
    more_calls: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Timing:
    """Pacing of a response, as the API streams it.

    `first_delay` seconds pass before the first content delta. With `pace`, audio leaves `speed` times faster than
    real time (the API sends faster than it plays, so a client builds a backlog); without, as fast as possible.
    Each audio delta lasts a duration drawn from `chunk_ms` (inclusive bounds), so chunk sizes vary as on the wire.
    """

    first_delay: float = 0.0
    pace: bool = False
    speed: float = 1.0
    chunk_ms: tuple[int, int] = (CHUNK_MS, CHUNK_MS)
    rng: random.Random = field(default_factory=random.Random)

    def split(self, pcm: bytes) -> list[bytes]:
        """Cut audio into deltas of varying duration within `chunk_ms`."""
        low, high = self.chunk_ms
        pieces: list[bytes] = []
        start = 0
        while start < len(pcm):
            size = ms_to_bytes(self.rng.randint(low, high))
            pieces.append(pcm[start : start + size])
            start += size
        return pieces

    def gap(self, previous_ms: float) -> float:
        """Seconds to wait after a delta of `previous_ms` before the next one."""
        return previous_ms / 1000 / self.speed if self.pace else 0.0


@dataclass
class ResponseConfig:
    """The fixed fields of the `response` object, decided when the response is created."""

    output_modalities: list[str]
    max_output_tokens: int | str
    audio_output: dict[str, Any]
    conversation_id: str | None
    metadata: dict[str, Any] | None = None
    input_usage: dict[str, Any] = field(default_factory=dict)
    #: Turns the model's 24 kHz PCM16 into the wire format of `audio_output` (identity for PCM).
    encode_audio: Callable[[bytes], bytes] = bytes
    #: When set, the response produces nothing and ends `failed` with this `status_details.error`.
    failure: dict[str, Any] | None = None


class ResponseStream:
    """A response being generated. Create it, send `created_event()`, then pace `next_delay()`/`emit()`."""

    def __init__(
        self,
        config: ResponseConfig,
        reply: Reply,
        timing: Timing,
        conversation: Conversation | None,
        on_finish: Callable[[ResponseStream], list[Event]],
    ) -> None:
        self.id = new_id("resp_")
        self.config = config
        self.reply = reply
        self._timing = timing
        self._conversation = conversation
        self._on_finish = on_finish
        self._steps: deque[Step] = deque()
        self.finished = False
        self.status = "in_progress"
        self.status_details: dict[str, Any] | None = None
        self.item = StoredItem(self._initial_item())
        # Output items already closed, before the current one (whose output_index is their count).
        self._closed_items: list[StoredItem] = []
        self._item_added = False
        self._item_done = False
        self._part_open = False
        self._said = ""
        self._arguments = ""
        self._incomplete = False
        self._plan()

    # ----- public API -----

    def created_event(self) -> Event:
        """`response.created`, to be sent before any step."""
        return event("response.created", response=self._response_object(with_usage=False))

    def next_delay(self) -> float | None:
        """Seconds to wait before the next `emit()`, or None when the stream is over."""
        if self.finished or not self._steps:
            return None
        return self._steps[0][0]

    def emit(self) -> list[Event]:
        """Produce the next step's events (empty once finished or cancelled)."""
        if self.finished or not self._steps:
            return []
        _, produce = self._steps.popleft()
        return produce()

    def drain(self) -> list[Event]:
        """All remaining events at once, ignoring delays (for tests and unpaced use)."""
        out: list[Event] = []
        while self.next_delay() is not None:
            out.extend(self.emit())
        return out

    def cancel(self, reason: str) -> list[Event]:
        """Stop now: close whatever is open, then `response.done` with status cancelled and this `reason`."""
        if self.finished:
            return []
        self._steps.clear()
        out = self._close_open_parts(item_status="incomplete")
        return out + self._done("cancelled", {"type": "cancelled", "reason": reason})

    @property
    def audio_sent_ms(self) -> float:
        """Milliseconds of audio delivered so far."""
        return self.item.audio_ms(0)

    # ----- planning -----

    def _initial_item(self) -> dict[str, Any]:
        if self.reply.kind == "function_call":
            return self._call_item(self.reply.function_name)
        return {
            "id": new_id("item_"),
            "type": "message",
            "object": "realtime.item",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }

    def _plan(self) -> None:
        add = self._steps.append
        failure = self.config.failure
        if failure is not None:
            add(
                (
                    self._timing.first_delay,
                    lambda: self._done("failed", {"type": "failed", "error": dict(failure)}),
                )
            )
            return
        add((0.0, self._add_item))
        if self.reply.kind == "function_call":
            self._plan_function_call()
        elif self.reply.kind == "text":
            self._plan_text()
        else:
            self._plan_audio()

    def _budget_tokens(self) -> float:
        limit = self.config.max_output_tokens
        return math.inf if limit == "inf" else float(limit)

    def _plan_audio(self) -> None:
        add = self._steps.append
        add((0.0, self._open_part))
        transcript = self.reply.text
        budget = self._budget_tokens() - text_tokens(transcript)
        audio = self.reply.audio
        max_ms = max(0.0, budget) * AUDIO_MS_PER_OUTPUT_TOKEN
        if duration_ms(audio) > max_ms:
            audio = audio[: ms_to_bytes(max_ms)]
            self._incomplete = True
        words = split_deltas(transcript)
        pieces = self._timing.split(audio)
        previous_ms = 0.0
        for index, piece in enumerate(pieces):
            if index < len(words):
                add((0.0, self._say(words[index])))
            delay = self._timing.first_delay if index == 0 else self._timing.gap(previous_ms)
            add((delay, self._play(piece)))
            previous_ms = duration_ms(piece)
        for index, word in enumerate(words[len(pieces) :]):
            # Without any audio (all cut by max_output_tokens), the first content still waits first_delay.
            delay = self._timing.first_delay if not pieces and index == 0 else 0.0
            add((delay, self._say(word)))
        add((self._timing.gap(previous_ms), self._close_and_finish))

    def _plan_text(self) -> None:
        add = self._steps.append
        add((0.0, self._open_part))
        text = self.reply.text
        budget = self._budget_tokens()
        if text_tokens(text) > budget:
            text = text[: int(budget) * CHARS_PER_TEXT_TOKEN]
            self._incomplete = True
        for index, word in enumerate(split_deltas(text)):
            delay = self._timing.first_delay if index == 0 else (0.03 if self._timing.pace else 0.0)
            add((delay, self._say(word)))
        add((0.0, self._close_and_finish))

    @staticmethod
    def _call_item(name: str) -> dict[str, Any]:
        return {
            "id": new_id("item_"),
            "type": "function_call",
            "object": "realtime.item",
            "status": "in_progress",
            "call_id": new_id("call_", 16),
            "name": name,
            "arguments": "",
        }

    def _plan_function_call(self) -> None:
        add = self._steps.append
        for index, piece in enumerate(split_deltas(self.reply.arguments) or [""]):
            add((self._timing.first_delay if index == 0 else 0.0, self._argue(piece)))
        for name, arguments in self.reply.more_calls:
            add((0.0, self._next_call(name)))
            for piece in split_deltas(arguments) or [""]:
                add((0.0, self._argue(piece)))
        add((0.0, self._close_and_finish))

    def _next_call(self, name: str) -> Callable[[], list[Event]]:
        def produce() -> list[Event]:
            out = self._close_open_parts(item_status="completed")
            self._closed_items.append(self.item)
            self.item = StoredItem(self._call_item(name))
            self._item_added = self._item_done = False
            self._arguments = ""
            return out + self._add_item()

        return produce

    # ----- step producers -----

    def _ids(self) -> dict[str, Any]:
        return {"response_id": self.id, "item_id": self.item.id, "output_index": len(self._closed_items)}

    def _add_item(self) -> list[Event]:
        self._item_added = True
        index = len(self._closed_items)
        out = [
            event(
                "response.output_item.added", response_id=self.id, output_index=index, item=self.item.public()
            )
        ]
        if self._conversation is not None:
            previous = self._conversation.insert(self.item)
            out.append(event("conversation.item.added", previous_item_id=previous, item=self.item.public()))
        return out

    def _part(self) -> dict[str, Any]:
        if self.reply.kind == "text":
            return {"type": "text", "text": self._said}
        return {"type": "audio", "transcript": self._said}

    def _open_part(self) -> list[Event]:
        self._part_open = True
        if self.reply.kind == "audio":
            self.item.audio[0] = bytearray()
            self.item.item["content"] = [{"type": "output_audio", "transcript": ""}]
        else:
            self.item.item["content"] = [{"type": "output_text", "text": ""}]
        return [event("response.content_part.added", **self._ids(), content_index=0, part=self._part())]

    def _say(self, delta: str) -> Callable[[], list[Event]]:
        def produce() -> list[Event]:
            self._said += delta
            kind = (
                "response.output_text.delta"
                if self.reply.kind == "text"
                else "response.output_audio_transcript.delta"
            )
            return [event(kind, **self._ids(), content_index=0, delta=delta)]

        return produce

    def _play(self, pcm: bytes) -> Callable[[], list[Event]]:
        def produce() -> list[Event]:
            self.item.audio[0] += pcm
            return [
                event(
                    "response.output_audio.delta",
                    **self._ids(),
                    content_index=0,
                    delta=base64.b64encode(self.config.encode_audio(pcm)).decode(),
                )
            ]

        return produce

    def _argue(self, delta: str) -> Callable[[], list[Event]]:
        def produce() -> list[Event]:
            self._arguments += delta
            return [
                event(
                    "response.function_call_arguments.delta",
                    **self._ids(),
                    call_id=self.item.item["call_id"],
                    delta=delta,
                )
            ]

        return produce

    def _close_and_finish(self) -> list[Event]:
        out = self._close_open_parts(item_status="incomplete" if self._incomplete else "completed")
        if self._incomplete:
            return out + self._done("incomplete", {"type": "incomplete", "reason": "max_output_tokens"})
        return out + self._done("completed", None)

    def _close_open_parts(self, item_status: str) -> list[Event]:
        out: list[Event] = []
        ids = self._ids()
        if self._part_open:
            self._part_open = False
            if self.reply.kind == "text":
                self.item.item["content"] = [{"type": "output_text", "text": self._said}]
                out.append(event("response.output_text.done", **ids, content_index=0, text=self._said))
            else:
                self.item.item["content"] = [{"type": "output_audio", "transcript": self._said}]
                out.append(event("response.output_audio.done", **ids, content_index=0))
                out.append(
                    event(
                        "response.output_audio_transcript.done", **ids, content_index=0, transcript=self._said
                    )
                )
            out.append(event("response.content_part.done", **ids, content_index=0, part=self._part()))
        if self.reply.kind == "function_call" and self._item_added and not self._item_done:
            self.item.item["arguments"] = self._arguments
            out.append(
                event(
                    "response.function_call_arguments.done",
                    **ids,
                    call_id=self.item.item["call_id"],
                    name=self.item.item["name"],
                    arguments=self._arguments,
                )
            )
        if self._item_added and not self._item_done:
            self._item_done = True
            self.item.item["status"] = item_status
            out.append(
                event(
                    "response.output_item.done",
                    response_id=self.id,
                    output_index=len(self._closed_items),
                    item=self.item.public(),
                )
            )
            if self._conversation is not None and self.item.id in self._conversation:
                previous = self._previous_id()
                out.append(
                    event("conversation.item.done", previous_item_id=previous, item=self.item.public())
                )
        return out

    def _previous_id(self) -> str | None:
        assert self._conversation is not None
        previous: str | None = None
        for stored in self._conversation.items():
            if stored.id == self.item.id:
                return previous
            previous = stored.id
        return None

    def _done(self, status: str, details: dict[str, Any] | None) -> list[Event]:
        self.finished = True
        self.status = status
        self.status_details = details
        done = event("response.done", response=self._response_object(with_usage=True))
        return [done, *self._on_finish(self)]

    # ----- the response object -----

    def output_usage(self) -> dict[str, int]:
        """Output tokens for what was actually produced."""
        arguments = "".join(str(i.item.get("arguments", "")) for i in self._closed_items) + self._arguments
        text = text_tokens(self._said if self.reply.kind != "function_call" else arguments)
        audio = math.ceil(self.audio_sent_ms / AUDIO_MS_PER_OUTPUT_TOKEN)
        return {"text_tokens": text, "audio_tokens": audio}

    def _usage(self) -> dict[str, Any]:
        inp = self.config.input_usage
        out = self.output_usage()
        input_tokens = int(inp.get("text_tokens", 0)) + int(inp.get("audio_tokens", 0))
        output_tokens = out["text_tokens"] + out["audio_tokens"]
        return {
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {
                "text_tokens": int(inp.get("text_tokens", 0)),
                "audio_tokens": int(inp.get("audio_tokens", 0)),
                "image_tokens": 0,
                "cached_tokens": int(inp.get("cached_text_tokens", 0))
                + int(inp.get("cached_audio_tokens", 0)),
                "cached_tokens_details": {
                    "text_tokens": int(inp.get("cached_text_tokens", 0)),
                    "audio_tokens": int(inp.get("cached_audio_tokens", 0)),
                    "image_tokens": 0,
                },
            },
            "output_token_details": out,
        }

    def _response_object(self, *, with_usage: bool) -> dict[str, Any]:
        output = [i.public() for i in self._closed_items] + ([self.item.public()] if self._item_added else [])
        return {
            "object": "realtime.response",
            "id": self.id,
            "status": self.status,
            "status_details": self.status_details,
            "output": output,
            "conversation_id": self.config.conversation_id,
            "output_modalities": list(self.config.output_modalities),
            "max_output_tokens": self.config.max_output_tokens,
            "audio": {"output": dict(self.config.audio_output)},
            "usage": self._usage() if with_usage else None,
            "metadata": self.config.metadata,
        }
