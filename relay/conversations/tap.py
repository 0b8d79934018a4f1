"""The conversation's ear on one session: `SessionState` hands it every event it parses, in both directions.

It keeps the record (relay.conversations.record), queues the record's writes for the history writer, and turns
priced usage into the cost metric and the daily money budget. It never raises into the session.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import structlog

from relay.conversations.budget import CostBudget
from relay.conversations.metrics import HistoryMetrics
from relay.conversations.pricing import rounded
from relay.conversations.record import ConversationRecord, Write
from relay.conversations.recording import SessionRecorder
from relay.conversations.rollover import Rollover
from relay.conversations.writer import HistoryWriter

_log = structlog.get_logger("relay.history")


class ConversationTap:
    """Feeds one session's events to its conversation record; an `EventObserver` of `SessionState`."""

    def __init__(
        self,
        record: ConversationRecord,
        *,
        writer: HistoryWriter | None,
        metrics: HistoryMetrics,
        budget: CostBudget,
        rollover: Rollover | None = None,
        recorder: SessionRecorder | None = None,
    ) -> None:
        self.record = record
        self.rollover = rollover
        #: Picks the session's audio out of its frames when recording is on (RelaySession calls it).
        self.recorder = recorder
        self._writer = writer
        self._metrics = metrics
        self._budget = budget
        self._faulted = False

    @property
    def cost(self) -> Decimal:
        """What the session has cost so far, in dollars."""
        return self.record.cost

    def opened(self) -> None:
        """The session began: its summary row is written at once, so it lists even before anything is said."""
        self._put([self.record.summary()])

    def closed(self) -> None:
        """The session ended: its summary row gets the final duration and cost, its recording is finished."""
        self._put([self.record.summary()])
        if self.recorder is not None:
            self.recorder.close()

    def from_client(self, event: dict[str, Any]) -> None:
        """A client event the relay forwards."""
        try:
            if self.rollover is not None:
                self.rollover.from_client(event)
            self._put(self.record.from_client(event))
        except Exception as exc:  # a record bug must never cost the session a frame
            self._fault(exc)

    def from_upstream(self, event: dict[str, Any]) -> str | None:
        """An upstream event; returns why the session must end when it spent the day's money budget."""
        try:
            writes, spent = self.record.from_upstream(event)
        except Exception as exc:
            self._fault(exc)
            return None
        self._put(writes)
        if spent is None:
            return None
        self._metrics.spend(spent.model, self.record.identity, spent.cost)
        return self._budget.spend(self.record.identity, spent.cost)

    def summary_fields(self) -> dict[str, Any]:
        """Fields for the session_closed log line."""
        return {"cost_usd": rounded(self.record.cost), "conversation_id": self.record.conversation_id}

    def _put(self, writes: list[Write]) -> None:
        if writes and self._writer is not None:
            self._writer.put(writes)

    def _fault(self, exc: Exception) -> None:
        if not self._faulted:
            self._faulted = True
            _log.warning("history_record_failed", problem=f"{type(exc).__name__}: {exc}"[:200])
