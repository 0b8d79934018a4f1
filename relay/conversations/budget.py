"""A daily budget in money per identity, beside the token budget (relay.limits): the one place it is checked."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import time
from collections.abc import Callable
from decimal import Decimal

from relay import protocol
from relay.access import Denial
from relay.shared_state import SharedState, SharedStateUnavailable

#: The unit the money budget is counted in, in the shared store (relay.shared_state).
DOLLARS = "usd"


class CostBudget:
    """Dollars each identity may spend per UTC day, from priced usage. 0 means unlimited.

    Counted in this process, and, with a shared store (`share`), also there: every replica and worker then adds to
    one total per identity and day, and a new session is refused on any of them once it is spent.
    """

    def __init__(self, daily_dollars: float, clock: Callable[[], float] = time.time) -> None:
        self.daily = Decimal(str(daily_dollars))
        self._clock = clock
        self._day: dt.date | None = None
        self._spent: dict[str, Decimal] = {}
        self._shared: SharedState | None = None
        self._writes: set[asyncio.Task[None]] = set()

    def share(self, shared: SharedState) -> None:
        """Count the spending in `shared` too (Redis when RELAY_REDIS_URL is set)."""
        self._shared = shared

    def _roll(self) -> None:
        day = dt.datetime.fromtimestamp(self._clock(), dt.UTC).date()
        if day != self._day:
            self._day = day
            self._spent.clear()

    def spent(self, identity: str) -> Decimal:
        """Dollars `identity` spent today."""
        self._roll()
        return self._spent.get(identity, Decimal(0))

    def _exhausted(self, identity: str) -> bool:
        return self.daily > 0 and self.spent(identity) >= self.daily

    def _renews_in(self) -> int:
        now = self._clock()
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        midnight = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp()
        return max(1, math.ceil(midnight - now))

    def spend(self, identity: str, dollars: Decimal) -> str | None:
        """Count `dollars` spent by `identity`; why its session must end if today's budget is now spent."""
        self._roll()
        if dollars > 0:
            self._spent[identity] = self._spent.get(identity, Decimal(0)) + dollars
            if self._shared is not None:
                # Off the forwarding path: the store's total comes back and counts from then on.
                write = asyncio.get_running_loop().create_task(self._share(identity, dollars))
                self._writes.add(write)
                write.add_done_callback(self._writes.discard)
        if not self._exhausted(identity):
            return None
        minutes = math.ceil(self._renews_in() / 60)
        return (
            f"Your daily budget of ${self.daily} is spent (RELAY_DAILY_COST_BUDGET), so this session ends. It "
            f"renews at 00:00 UTC, in {minutes} min."
        )

    async def _share(self, identity: str, dollars: Decimal) -> None:
        assert self._shared is not None
        with contextlib.suppress(
            SharedStateUnavailable
        ):  # counted and logged by the store; the local count stands
            total = Decimal(str(await self._shared.charge(DOLLARS, identity, float(dollars))))
            self._spent[identity] = max(self._spent.get(identity, Decimal(0)), total)

    async def denial(self, identity: str) -> Denial | None:
        """Refuse a new session while `identity`'s money budget is spent (429 until midnight UTC), here or, with a
        shared store, on any relay. Raises `SharedStateUnavailable` when the store does not answer."""
        if self.daily <= 0:
            return None
        if self._shared is not None:
            total = Decimal(str(await self._shared.spent(DOLLARS, identity)))
            self._roll()
            self._spent[identity] = max(self._spent.get(identity, Decimal(0)), total)
        if not self._exhausted(identity):
            return None
        wait = self._renews_in()
        return Denial(
            429,
            protocol.LIMIT_EXCEEDED,
            f"Your daily budget of ${self.daily} is spent (RELAY_DAILY_COST_BUDGET). It renews at 00:00 UTC, in "
            f"{math.ceil(wait / 60)} min; connect again then, or ask the operator to raise it.",
            "cost_budget",
            {"Retry-After": str(wait)},
        )
