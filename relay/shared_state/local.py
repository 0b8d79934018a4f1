"""Shared state kept in this process: what a single relay without RELAY_REDIS_URL has always done."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable

from relay.access import Denial, DoorRequest
from relay.auth import AttemptLimiter
from relay.config import Config
from relay.limits import SessionSlots, TokenBudget, utc_day
from relay.protocol import new_id
from relay.shared_state.interface import TOKENS, Lease
from relay.shared_state.revocations import RevokedLogins


class LocalState:
    """Slots, budgets, failed sign-ins and sign-outs in memory: one process, forgotten at restart."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.slots = SessionSlots(config.max_sessions, config.max_sessions_per_identity)
        self.budget = TokenBudget(config.daily_token_budget, clock)
        self.limiter = AttemptLimiter()
        self.revoked = RevokedLogins()
        self._clock = clock
        self._ledger: dict[tuple[str, str], float] = {}
        self._ledger_day = ""

    async def start(self) -> None:
        """Nothing to connect to."""

    async def aclose(self) -> None:
        """Nothing to write back."""

    @contextlib.asynccontextmanager
    async def consulted(self, request: DoorRequest, *, required: bool = True) -> AsyncIterator[None]:
        """The door reads and writes this process's own counters directly."""
        yield

    async def open_session(self, identity: str) -> Lease | Denial:
        """Refused while the budget is spent or either session limit is reached; else a slot."""
        refused = self.budget.denial(identity) or self.slots.acquire(identity)
        return refused or Lease(identity, new_id("lease_", 12))

    async def close_session(self, lease: Lease) -> None:
        """Give the slot back."""
        self.slots.release(lease.identity)

    def spend(self, identity: str, tokens: int) -> str | None:
        """Count tokens against today's budget."""
        return self.budget.spend(identity, tokens)

    async def charge(self, unit: str, identity: str, amount: float) -> float:
        """Add to today's spending in `unit` (tokens go to the token budget)."""
        if unit == TOKENS:
            self.budget.spend(identity, round(amount))
            return float(self.budget.spent(identity))
        ledger = self._today()
        total = max(0.0, ledger.get((unit, identity), 0.0) + amount)
        ledger[(unit, identity)] = total
        return total

    async def spent(self, unit: str, identity: str) -> float:
        """Today's spending in `unit`."""
        if unit == TOKENS:
            return float(self.budget.spent(identity))
        return self._today().get((unit, identity), 0.0)

    async def revoke_login(self, cookie: str, ttl_seconds: float) -> None:
        """Remember the cookie as signed out."""
        self.revoked.add(cookie, ttl_seconds)

    def _today(self) -> dict[tuple[str, str], float]:
        day = utc_day(self._clock()).isoformat()
        if day != self._ledger_day:
            self._ledger_day = day
            self._ledger.clear()
        return self._ledger
