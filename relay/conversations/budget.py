"""A daily budget in money per identity, beside the token budget (relay.limits): the one place it is checked."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from decimal import Decimal

from relay import protocol
from relay.access import Denial


class CostBudget:
    """Dollars each identity may spend per UTC day, from priced usage. 0 means unlimited.

    Kept in memory like the token budget: a restart forgets the day's spending.
    """

    def __init__(self, daily_dollars: float, clock: Callable[[], float] = time.time) -> None:
        self.daily = Decimal(str(daily_dollars))
        self._clock = clock
        self._day: dt.date | None = None
        self._spent: dict[str, Decimal] = {}

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
        if not self._exhausted(identity):
            return None
        minutes = math.ceil(self._renews_in() / 60)
        return (
            f"Your daily budget of ${self.daily} is spent (RELAY_DAILY_COST_BUDGET), so this session ends. It "
            f"renews at 00:00 UTC, in {minutes} min."
        )

    def denial(self, identity: str) -> Denial | None:
        """Refuse a new session while `identity`'s money budget is spent (429 until midnight UTC)."""
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
