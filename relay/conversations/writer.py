"""The one task that writes history, fed by a bounded queue: sessions hand writes over and never wait.

A slow, locked or vanished database makes the queue fill; what no longer fits is dropped and counted, and every
failed batch is logged and counted. Nothing of it reaches a session's frames or ends a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from relay.conversations.metrics import HistoryMetrics
from relay.conversations.record import ConversationWrite, ItemWrite, UsageWrite, Write

if TYPE_CHECKING:
    from relay.conversations.store import ConversationStore

_log = structlog.get_logger("relay.history")

#: Writes applied in one transaction at most.
BATCH_WRITES = 200
#: A batch that takes longer than this is abandoned (counted as failed) so the queue keeps moving.
WRITE_TIMEOUT_SECONDS = 10.0
#: Seconds between retention sweeps.
SWEEP_SECONDS = 3600.0


def _key(write: Write) -> tuple[str, ...]:
    if isinstance(write, ItemWrite):
        return ("item", write.conversation_id, write.item.item_id)
    if isinstance(write, UsageWrite):
        return ("usage", write.conversation_id, write.usage_id)
    return ("conversation", write.conversation_id)


def coalesce(writes: list[Write]) -> list[Write]:
    """The writes that matter: of several upserts of one row, the last (each is the row's whole state)."""
    latest: dict[tuple[str, ...], Write] = {}
    for write in writes:
        latest.pop(_key(write), None)
        latest[_key(write)] = write
    return list(latest.values())


class HistoryWriter:
    """Owns the queue and the writing task of one relay process."""

    def __init__(
        self,
        store: ConversationStore,
        metrics: HistoryMetrics,
        *,
        queue_size: int,
        retention_days: float,
        on_expired: Callable[[list[str]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._metrics = metrics
        self._queue: asyncio.Queue[Write] = asyncio.Queue(maxsize=queue_size)
        self._retention_seconds = retention_days * 86400
        self._on_expired = on_expired
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._dropping = False

    def put(self, writes: list[Write]) -> None:
        """Queue `writes` without waiting; what does not fit is dropped (and counted, and logged once per spell)."""
        for write in writes:
            try:
                self._queue.put_nowait(write)
            except asyncio.QueueFull:
                self._metrics.writes.labels("dropped").inc()
                if not self._dropping:
                    self._dropping = True
                    _log.warning("history_queue_full", queued=self._queue.qsize())
                continue
            self._idle.clear()
        self._metrics.queue_depth.set(self._queue.qsize())

    def start(self) -> None:
        """Start writing (and sweeping old conversations)."""
        self._task = asyncio.create_task(self._run(), name="history-writer")
        if self._retention_seconds > 0:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="history-retention")

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far was written (or failed); False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (for at most `timeout` seconds), then stop."""
        await self.flush(timeout)
        for task in (self._task, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < BATCH_WRITES and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._metrics.queue_depth.set(self._queue.qsize())
            writes = coalesce(batch)
            started = time.perf_counter()
            try:
                async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                    await self.store.ensure_schema()
                    await self.store.apply(writes)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._metrics.writes.labels("failed").inc(len(writes))
                _log.warning("history_write_failed", writes=len(writes), problem=problem_of(exc))
            else:
                self._metrics.writes.labels("written").inc(len(writes))
                self._metrics.write_seconds.observe(time.perf_counter() - started)
                if self._dropping and self._queue.empty():
                    self._dropping = False
                    _log.info("history_queue_recovered")
            if self._queue.empty():
                self._idle.set()

    async def sweep(self) -> int:
        """Delete conversations older than the retention; return how many went."""
        await self.store.ensure_schema()
        gone = await self.store.delete_older_than(self._clock() - self._retention_seconds)
        if gone:
            _log.info("history_expired", conversations=len(gone))
            if self._on_expired is not None:
                self._on_expired(gone)
        return len(gone)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("history_sweep_failed", problem=problem_of(exc))
            await asyncio.sleep(SWEEP_SECONDS)


def problem_of(exc: BaseException) -> str:
    """An exception for a log line: its kind and first line (driver messages may go on to quote a URL)."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"[:200]


__all__ = ["ConversationWrite", "HistoryWriter", "coalesce"]
