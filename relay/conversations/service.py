"""The conversations of one relay process: the store and its writer (when history is on), the cost metric, the
daily money budget, and a `ConversationTap` for each session."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from relay.config import Config
from relay.conversations.budget import CostBudget
from relay.conversations.items import Item
from relay.conversations.metrics import HistoryMetrics
from relay.conversations.record import ConversationRecord
from relay.conversations.recording import Recordings
from relay.conversations.renewal import UpstreamRenewal
from relay.conversations.rollover import Rollover
from relay.conversations.tap import ConversationTap
from relay.conversations.writer import HistoryWriter, problem_of
from relay.metrics import RelayMetrics

if TYPE_CHECKING:
    from relay.conversations.store import ConversationStore

_log = structlog.get_logger("relay.history")
#: How long start-up waits for the history database before going on without it.
OPEN_TIMEOUT_SECONDS = 10.0


class Conversations:
    """History, cost and budget for every session of the process."""

    def __init__(self, config: Config, metrics: RelayMetrics) -> None:
        self.config = config
        self.metrics = HistoryMetrics(
            metrics.registry, config.models, identity_label=config.metrics_identity_label
        )
        self.budget = CostBudget(config.daily_cost_budget)
        self.store: ConversationStore | None = None
        self.writer: HistoryWriter | None = None
        self.recordings: Recordings | None = None
        if config.history_on:
            # Imported only when history is on: SQLAlchemy costs a relay without history most of a second to start.
            from relay.conversations.store import ConversationStore, database_url

            self.store = ConversationStore(database_url(config.history_database_url, Path(config.data_dir)))
            if config.record_audio:
                self.recordings = Recordings(Path(config.data_dir) / "recordings")
            self.writer = HistoryWriter(
                self.store,
                self.metrics,
                queue_size=config.history_queue,
                retention_days=config.history_retention_days,
                on_expired=self.recordings.delete if self.recordings is not None else None,
            )
        elif config.record_audio:
            _log.warning(
                "recording_off", detail="RELAY_RECORD_AUDIO needs RELAY_HISTORY on; no audio is kept."
            )

    @property
    def saving(self) -> bool:
        """True when conversations are saved."""
        return self.store is not None

    async def start(self) -> None:
        """Open the database (migrating it) and start the writer.

        A database that cannot be reached does not stop the relay: sessions run, the failure is logged, and the
        writer tries again with every batch (what it cannot write is counted).
        """
        if self.store is None or self.writer is None:
            return
        self.store.connect()
        from relay.conversations.store import shown_url

        database = shown_url(self.store.url)
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_SECONDS):
                version = await self.store.ensure_schema()
        except Exception as exc:
            _log.warning(
                "history_unavailable",
                database=database,
                problem=problem_of(exc),
                detail="Sessions run; conversations are saved once the database answers.",
            )
        else:
            _log.info(
                "history_opened",
                database=database,
                schema_version=version,
                retention_days=self.config.history_retention_days,
            )
        self.writer.start()

    async def stop(self) -> None:
        """Write what is queued, then close the database."""
        if self.writer is not None:
            await self.writer.stop()
        if self.store is not None:
            await self.store.close()
        if self.recordings is not None:
            await asyncio.to_thread(self.recordings.stop)

    def tap(
        self,
        conversation_id: str,
        identity: str,
        model: str,
        *,
        continued_from: str | None = None,
        defaults: dict[str, Any] | None = None,
    ) -> ConversationTap:
        """The record and tap of a new session's conversation (with its roll-over unless that is off)."""
        record = ConversationRecord(
            conversation_id, identity, self.config.prices, model=model, continued_from=continued_from
        )
        rollover = None
        if self.config.rollover_seconds > 0 or self.config.rollover_retries > 0:
            rollover = Rollover(
                age_seconds=self.config.rollover_seconds,
                retries=self.config.rollover_retries,
                defaults=defaults,
            )
        return ConversationTap(
            record,
            writer=self.writer,
            metrics=self.metrics,
            budget=self.budget,
            rollover=rollover,
            recorder=self.recordings.recorder(conversation_id) if self.recordings is not None else None,
        )

    def renewal(self, tap: ConversationTap) -> UpstreamRenewal | None:
        """The roll-over of a tap's session (None when roll-over is off)."""
        if tap.rollover is None:
            return None
        return UpstreamRenewal(tap.rollover, tap.record.text_items, self.metrics)

    async def items_to_continue(self, identity: str, conversation_id: str) -> list[Item] | None:
        """The text items of one of `identity`'s saved conversations (None: none such, or history is off)."""
        if self.store is None:
            return None
        try:
            await self.store.ensure_schema()
            return await self.store.items_of(identity, conversation_id)
        except Exception as exc:
            _log.warning("history_read_failed", problem=problem_of(exc))
            return None
