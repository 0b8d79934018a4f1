"""Shared state in Redis: one count of sessions, budgets, failed sign-ins and sign-outs for every worker and replica.

Policy when Redis does not answer within `REQUEST_TIMEOUT_SECONDS` (fail closed, sessions go on):

- a new session or a sign-in is refused with 503 `relay_state_unavailable` and Retry-After (a relay that cannot
  count cannot enforce a limit, and an outage must not become a way around one);
- open sessions carry on: their leases are renewed again once Redis is back (and put back if they expired), and
  the tokens they spend are kept here and written back then;
- the page and /api/config still answer (they open nothing);
- every failure is logged (`shared_state_unavailable`, once per outage, then `shared_state_restored`) and counted
  in `relay_shared_state_errors_total{operation}`, with `relay_shared_state_up` at 0 meanwhile.

Session slots are leases: a sorted set of lease ids scored by expiry, renewed every third of
RELAY_SESSION_LEASE_SECONDS while the session lives, so a relay that is killed frees its slots within that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import structlog
from redis import asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from relay.access import Denial, DoorRequest
from relay.auth import COOKIE_NAME, LOGIN_BURST, LOGIN_MAX_CLIENTS, LOGIN_REFILL_SECONDS, client_key
from relay.config import Config
from relay.limits import (
    budget_denial,
    budget_spent_message,
    capacity_denial,
    identity_sessions_denial,
    seconds_until_utc_midnight,
    utc_day,
)
from relay.protocol import new_id
from relay.shared_state import scripts
from relay.shared_state.interface import TOKENS, Lease, SharedStateUnavailable, unavailable_denial
from relay.shared_state.metrics import SharedStateMetrics
from relay.shared_state.revocations import RevokedLogins, cookie_digest

_log = structlog.get_logger("relay.shared_state")

#: Longest wait for one request to Redis before the relay acts as if it were away.
REQUEST_TIMEOUT_SECONDS = 1.0
#: How long spending that could not be written back waits before the next try.
WRITE_BACK_RETRY_SECONDS = 1.0
#: Spending keys outlive their UTC day by this much, so a late write-back still lands in the right day.
SPENDING_KEY_MARGIN_SECONDS = 3600
PREFIX = "relay:"
_T = TypeVar("_T")


class MirroredAttempts:
    """The door's synchronous view of failed sign-ins kept in Redis: waits fetched before a decision, failures
    queued during it and written back after."""

    def __init__(self) -> None:
        self._waits: dict[str, int] = {}
        self._failures: list[str] = []

    def retry_after(self, address: str | None) -> int | None:
        """The wait Redis reported for `address` just before this decision."""
        return self._waits.get(client_key(address))

    def record_failure(self, address: str | None) -> None:
        """Queue one failure of `address` for writing back."""
        self._failures.append(client_key(address))

    def note(self, key: str, wait: int) -> None:
        """Record what Redis says `key` must wait (0: nothing)."""
        if wait <= 0:
            self._waits.pop(key, None)
            return
        if len(self._waits) >= LOGIN_MAX_CLIENTS:
            self._waits.clear()  # a cache refreshed before every decision: losing it costs one request each
        self._waits[key] = wait

    def take_failures(self) -> list[str]:
        """The failures queued since the last call."""
        taken, self._failures = self._failures, []
        return taken


class RedisState:
    """Slots, budgets, failed sign-ins and sign-outs in Redis (the `redis` package's asyncio client)."""

    def __init__(
        self,
        config: Config,
        metrics: SharedStateMetrics,
        *,
        clock: Callable[[], float] = time.time,
        client: aioredis.Redis | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._redis = client or aioredis.Redis.from_url(
            config.redis_url,
            decode_responses=True,
            socket_timeout=REQUEST_TIMEOUT_SECONDS,
            socket_connect_timeout=REQUEST_TIMEOUT_SECONDS,
            # One try per request: the timeout above is the whole wait, and callers decide what failure means.
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._take = self._redis.register_script(scripts.TAKE_SLOT)
        self._renew = self._redis.register_script(scripts.RENEW_SLOTS)
        self._release = self._redis.register_script(scripts.RELEASE_SLOT)
        self._add = self._redis.register_script(scripts.ADD_SPENDING)
        self._attempt = self._redis.register_script(scripts.LOGIN_ATTEMPT)
        self.limiter = MirroredAttempts()
        self.revoked = RevokedLogins()
        self._lease_ms = max(1, round(config.session_lease_seconds * 1000))
        self._owner = f"{socket.gethostname()}:{os.getpid()}"
        self._leases: dict[str, str] = {}
        # Tokens spent but not yet in Redis, and Redis's last word on each day's total, by (day, identity).
        self._pending: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._known: dict[tuple[str, str], float] = {}
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._away = False

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Check that Redis answers (a relay that cannot reach it starts anyway, refusing new sessions) and start
        renewing leases and writing spending back."""
        with contextlib.suppress(SharedStateUnavailable):
            await self._call("connect", self._redis.ping())
        self._tasks = [
            asyncio.create_task(self._renew_leases(), name="shared-state-leases"),
            asyncio.create_task(self._write_back(), name="shared-state-spending"),
        ]

    async def aclose(self) -> None:
        """Write back pending spending (bounded), stop background work, disconnect."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(SharedStateUnavailable):
            await self._flush_spending()
        await self._redis.aclose()

    # -- the door ------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def consulted(self, request: DoorRequest, *, required: bool = True) -> AsyncIterator[None]:
        """Fetch this client's sign-in wait and whether its cookie was signed out; write failures back after."""
        key = client_key(request.client)
        cookie = request.cookies.get(COOKIE_NAME)
        try:
            wait = await self._call(
                "login", self._attempt(keys=[self._login_key(key)], args=self._bucket("peek"))
            )
            self.limiter.note(key, int(wait))
            if cookie:
                left = await self._call("login", self._redis.pttl(self._signed_out_key(cookie)))
                self.revoked.note(cookie, int(left) / 1000 if int(left) > 0 else None)
        except SharedStateUnavailable:
            if required:
                raise
        try:
            yield
        finally:
            for failed in self.limiter.take_failures():
                with contextlib.suppress(SharedStateUnavailable):
                    wait = await self._call(
                        "login", self._attempt(keys=[self._login_key(failed)], args=self._bucket("fail"))
                    )
                    self.limiter.note(failed, int(wait))

    async def revoke_login(self, cookie: str, ttl_seconds: float) -> None:
        """Record the cookie as signed out in Redis (and here) until it would have expired."""
        self.revoked.add(cookie, ttl_seconds)
        await self._call(
            "revoke",
            self._redis.set(self._signed_out_key(cookie), "1", px=max(1, math.ceil(ttl_seconds * 1000))),
        )

    # -- sessions ------------------------------------------------------------------------------------------

    async def open_session(self, identity: str) -> Lease | Denial:
        """Refused while the budget is spent, at either limit, or while Redis does not answer."""
        config = self._config
        try:
            if config.daily_token_budget > 0:
                day = self._day()
                total = await self._call("admit", self._redis.get(self._spending_key(TOKENS, day, identity)))
                self._known[(day, identity)] = float(total or 0)
                if self._estimate(day, identity) >= config.daily_token_budget:
                    return budget_denial(config.daily_token_budget, seconds_until_utc_midnight(self._clock()))
            lease_id = f"{self._owner}:{new_id('', 12)}"
            verdict = await self._call(
                "admit",
                self._take(
                    keys=[self._slots_key(), self._slots_key(identity)],
                    args=[lease_id, config.max_sessions, config.max_sessions_per_identity, self._lease_ms],
                ),
            )
        except SharedStateUnavailable:
            return unavailable_denial()
        if verdict == "capacity":
            return capacity_denial(config.max_sessions)
        if verdict == "identity_sessions":
            return identity_sessions_denial(config.max_sessions_per_identity)
        self._leases[lease_id] = identity
        return Lease(identity, lease_id)

    async def close_session(self, lease: Lease) -> None:
        """Write back what the session spent, then give the slot back; if Redis is away, the lease simply expires
        (and the spending is written back when it returns)."""
        self._leases.pop(lease.lease_id, None)
        with contextlib.suppress(SharedStateUnavailable):
            await self._flush()
            await self._call(
                "release",
                self._release(
                    keys=[self._slots_key(), self._slots_key(lease.identity)], args=[lease.lease_id]
                ),
            )

    async def _renew_leases(self) -> None:
        period = self._config.session_lease_seconds / 3
        while True:
            await asyncio.sleep(period)
            leases = list(self._leases.items())
            if not leases:
                continue
            with contextlib.suppress(SharedStateUnavailable):
                await self._call(
                    "renew",
                    self._renew(
                        keys=[self._slots_key(), *(self._slots_key(identity) for _, identity in leases)],
                        args=[self._lease_ms, *(lease_id for lease_id, _ in leases)],
                    ),
                )

    # -- budgets -------------------------------------------------------------------------------------------

    def spend(self, identity: str, tokens: int) -> str | None:
        """Count tokens now (written back to Redis in the background); why the session ends if spent."""
        day = self._day()
        if tokens:
            self._pending[(day, identity)] += tokens
            self._wake.set()
        daily = self._config.daily_token_budget
        if daily <= 0 or self._estimate(day, identity) < daily:
            return None
        return budget_spent_message(daily, seconds_until_utc_midnight(self._clock()))

    async def charge(self, unit: str, identity: str, amount: float) -> float:
        """Add to today's spending in `unit`, atomically in Redis; today's total."""
        day = self._day()
        total = float(await self._call("spend", self._add_spending(unit, day, identity, amount)))
        if unit == TOKENS:
            self._known[(day, identity)] = total
        return total

    async def spent(self, unit: str, identity: str) -> float:
        """Today's spending in `unit`, from Redis."""
        total = await self._call("spend", self._redis.get(self._spending_key(unit, self._day(), identity)))
        return float(total or 0)

    def _estimate(self, day: str, identity: str) -> float:
        return self._known.get((day, identity), 0.0) + self._pending.get((day, identity), 0)

    async def _write_back(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except SharedStateUnavailable:
                await asyncio.sleep(WRITE_BACK_RETRY_SECONDS)
                self._wake.set()

    async def _flush(self) -> None:
        # One flush at a time: two would both add the same pending amount.
        async with self._flush_lock:
            await self._flush_spending()

    async def _flush_spending(self) -> None:
        for (day, identity), amount in list(self._pending.items()):
            if amount:
                total = await self._call("spend", self._add_spending(TOKENS, day, identity, amount))
                self._known[(day, identity)] = float(total)
            self._pending[(day, identity)] -= amount
            if not self._pending[(day, identity)]:
                del self._pending[(day, identity)]
        today = self._day()
        for stale in [key for key in self._known if key[0] != today and key not in self._pending]:
            del self._known[stale]

    def _add_spending(self, unit: str, day: str, identity: str, amount: float) -> Awaitable[Any]:
        expires = (
            math.ceil(self._clock()) + seconds_until_utc_midnight(self._clock()) + SPENDING_KEY_MARGIN_SECONDS
        )
        return self._add(keys=[self._spending_key(unit, day, identity)], args=[amount, expires])

    # -- plumbing ------------------------------------------------------------------------------------------

    async def _call(self, operation: str, request: Awaitable[_T]) -> _T:
        """Await one Redis request within the timeout; failures are counted, logged once per outage and raised
        as `SharedStateUnavailable`."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                result = await request
        except (RedisError, OSError, TimeoutError) as exc:
            self._metrics.failed(operation)
            if not self._away:
                self._away = True
                # The exception's type only: its text may carry the URL, and with it a password.
                _log.warning("shared_state_unavailable", operation=operation, error=type(exc).__name__)
            raise SharedStateUnavailable(operation) from None
        self._metrics.succeeded()
        if self._away:
            self._away = False
            _log.info("shared_state_restored", operation=operation)
        return result

    def _day(self) -> str:
        return utc_day(self._clock()).isoformat()

    @staticmethod
    def _bucket(mode: str) -> list[Any]:
        return [LOGIN_BURST, LOGIN_REFILL_SECONDS, mode]

    @staticmethod
    def _slots_key(identity: str | None = None) -> str:
        return f"{PREFIX}slots" if identity is None else f"{PREFIX}slots:{identity}"

    @staticmethod
    def _spending_key(unit: str, day: str, identity: str) -> str:
        return f"{PREFIX}spent:{unit}:{day}:{identity}"

    @staticmethod
    def _login_key(key: str) -> str:
        return f"{PREFIX}login:{key}"

    @staticmethod
    def _signed_out_key(cookie: str) -> str:
        return f"{PREFIX}signed-out:{cookie_digest(cookie)}"
