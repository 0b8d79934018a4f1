"""Input audio transcription as the API delivers it: asynchronously, in several deltas, possibly after the reply.

A `TranscriptStream` has the same `next_delay()`/`emit()` shape as a response stream, so the I/O layer paces it
alongside; it starts `delay` seconds after the commit and sends one word per step, then `completed` (or `failed`
when the fault switch says so). The item's transcript is set only when `completed` goes out, as on the API.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from relay.fake.conversation import StoredItem
from relay.fake.response import Event, event, split_deltas
from relay.fake.usage import transcription_usage

#: Seconds between deltas of one transcript.
DELTA_GAP = 0.05


class TranscriptStream:
    """The transcription of one committed user item, paced by the I/O layer."""

    def __init__(
        self, stored: StoredItem, transcript: str, model: str, seconds: float, *, delay: float, fail: bool
    ) -> None:
        self._stored = stored
        ids = {"item_id": stored.id, "content_index": 0}
        steps: deque[tuple[float, Callable[[], list[Event]]]] = deque()
        if fail:
            error = {
                "type": "server_error",
                "code": "transcription_failed",
                "message": "Transcription failed.",
                "param": None,
            }
            steps.append(
                (
                    delay,
                    lambda: [event("conversation.item.input_audio_transcription.failed", **ids, error=error)],
                )
            )
        else:
            for index, word in enumerate(split_deltas(transcript)):
                steps.append(
                    (
                        delay if index == 0 else DELTA_GAP,
                        self._delta(ids, word),
                    )
                )
            usage = transcription_usage(model, seconds, transcript)
            steps.append((DELTA_GAP, self._completed(ids, transcript, usage)))
        self._steps = steps

    @staticmethod
    def _delta(ids: dict[str, Any], word: str) -> Callable[[], list[Event]]:
        return lambda: [event("conversation.item.input_audio_transcription.delta", **ids, delta=word)]

    def _completed(
        self, ids: dict[str, Any], transcript: str, usage: dict[str, Any]
    ) -> Callable[[], list[Event]]:
        def produce() -> list[Event]:
            self._stored.item["content"][0]["transcript"] = transcript
            return [
                event(
                    "conversation.item.input_audio_transcription.completed",
                    **ids,
                    transcript=transcript,
                    usage=usage,
                )
            ]

        return produce

    def next_delay(self) -> float | None:
        """Seconds before the next `emit()`, or None when the transcript is complete."""
        return self._steps[0][0] if self._steps else None

    def emit(self) -> list[Event]:
        """The next step's events."""
        return self._steps.popleft()[1]() if self._steps else []

    def drain(self) -> list[Event]:
        """Every remaining event at once (for tests)."""
        out: list[Event] = []
        while self._steps:
            out.extend(self.emit())
        return out
