"""Limits: concurrent sessions (in all and per identity), a daily token budget per identity, and session timers.

All pure bookkeeping with injectable clocks; the app and the session ask and act. These classes keep everything in
this process's memory, so a restart forgets the day's spending (the README says so); with RELAY_REDIS_URL the same
limits are counted in Redis instead (relay.shared_state), with the same refusals.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from relay import protocol
from relay.access import Denial

#: How long a client refused for concurrency should wait: sessions usually end within minutes.
SESSION_RETRY_AFTER_SECONDS = 30
#: Every `Denial.reason` these limits give (metric label values).
LIMIT_REASONS = ("capacity", "identity_sessions", "token_budget", "shared_state_unavailable")


def _duration(seconds: float) -> str:
    """`5 h 3 min`, `5 min`, `1 min 30 s`: for people, to the second below an hour."""
    hours, rest = divmod(max(0, math.ceil(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    if minutes:
        parts.append(f"{minutes} min")
    if secs and not hours:
        parts.append(f"{secs} s")
    return " ".join(parts) or "0 s"


def capacity_denial(max_sessions: int) -> Denial:
    """The refusal of a session beyond RELAY_MAX_SESSIONS."""
    return Denial(
        503,
        protocol.LIMIT_EXCEEDED,
        f"The relay is at its limit of {max_sessions} sessions (RELAY_MAX_SESSIONS); try again in a minute.",
        "capacity",
        {"Retry-After": str(SESSION_RETRY_AFTER_SECONDS)},
    )


def identity_sessions_denial(max_per_identity: int) -> Denial:
    """The refusal of a session beyond RELAY_MAX_SESSIONS_PER_IDENTITY."""
    return Denial(
        429,
        protocol.LIMIT_EXCEEDED,
        f"You already have {max_per_identity} sessions open, the most this relay allows per user "
        "(RELAY_MAX_SESSIONS_PER_IDENTITY). Close one (another tab or device) and connect again.",
        "identity_sessions",
        {"Retry-After": str(SESSION_RETRY_AFTER_SECONDS)},
    )


def utc_day(now: float) -> dt.date:
    """The UTC date at `now` (a Unix time): budgets renew when it changes."""
    return dt.datetime.fromtimestamp(now, dt.UTC).date()


def seconds_until_utc_midnight(now: float) -> int:
    """Whole seconds from `now` until the next midnight UTC (at least 1)."""
    midnight = dt.datetime.combine(utc_day(now) + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp()
    return max(1, math.ceil(midnight - now))


def budget_denial(daily_tokens: int, wait: int) -> Denial:
    """The refusal of a new session while the identity's daily token budget is spent (429 until midnight UTC)."""
    return Denial(
        429,
        protocol.LIMIT_EXCEEDED,
        f"Your daily budget of {daily_tokens} tokens is spent (RELAY_DAILY_TOKEN_BUDGET). It renews at "
        f"00:00 UTC, in {_duration(wait)}; connect again then, or ask the operator to raise it.",
        "token_budget",
        {"Retry-After": str(wait)},
    )


def budget_spent_message(daily_tokens: int, wait: int) -> str:
    """Why an open session ends when its identity's daily token budget runs out."""
    return (
        f"Your daily budget of {daily_tokens} tokens is spent (RELAY_DAILY_TOKEN_BUDGET), so this "
        f"session ends. It renews at 00:00 UTC, in {_duration(wait)}."
    )


class SessionSlots:
    """Counts open sessions, in all and per identity, and refuses one more beyond either limit."""

    def __init__(self, max_sessions: int, max_per_identity: int) -> None:
        self.max_sessions = max_sessions
        self.max_per_identity = max_per_identity
        self._open: dict[str, int] = {}
        self.total = 0

    def acquire(self, identity: str) -> Denial | None:
        """Take a slot for `identity`, or say why not. Every successful acquire needs one `release`."""
        if self.total >= self.max_sessions:
            return capacity_denial(self.max_sessions)
        if self._open.get(identity, 0) >= self.max_per_identity:
            return identity_sessions_denial(self.max_per_identity)
        self._open[identity] = self._open.get(identity, 0) + 1
        self.total += 1
        return None

    def release(self, identity: str) -> None:
        """Give back a slot taken by `acquire`."""
        count = self._open.get(identity, 0)
        if count <= 0:
            return
        self.total -= 1
        if count == 1:
            del self._open[identity]
        else:
            self._open[identity] = count - 1

    def count(self, identity: str) -> int:
        """Sessions `identity` has open."""
        return self._open.get(identity, 0)


class TokenBudget:
    """Tokens each identity may use per UTC day, estimated from audio as it flows and settled by `response.done`
    usage and transcription usage. 0 means unlimited.

    Only the current day is kept; the first use after midnight UTC starts a new day for everyone.
    """

    def __init__(self, daily_tokens: int, clock: Callable[[], float] = time.time) -> None:
        self.daily_tokens = daily_tokens
        self._clock = clock
        self._day: dt.date | None = None
        self._spent: dict[str, int] = {}

    def _today(self) -> dt.date:
        day = utc_day(self._clock())
        if day != self._day:
            self._day = day
            self._spent.clear()
        return day

    def spent(self, identity: str) -> int:
        """Tokens `identity` used today."""
        self._today()
        return self._spent.get(identity, 0)

    def seconds_until_reset(self) -> int:
        """Whole seconds until the next midnight UTC (at least 1)."""
        self._today()
        return seconds_until_utc_midnight(self._clock())

    def exhausted(self, identity: str) -> bool:
        """True when `identity` has no tokens left today."""
        return self.daily_tokens > 0 and self.spent(identity) >= self.daily_tokens

    def denial(self, identity: str) -> Denial | None:
        """Refuse a new session while `identity`'s budget is spent (429 until midnight UTC)."""
        if not self.exhausted(identity):
            return None
        return budget_denial(self.daily_tokens, self.seconds_until_reset())

    def spend(self, identity: str, tokens: int) -> str | None:
        """Count `tokens` used by `identity` (negative: refund); return why its session must end if it is spent."""
        self._today()
        if tokens:  # negative: an estimate charged earlier is given back once the real usage is known
            self._spent[identity] = max(0, self._spent.get(identity, 0) + tokens)
        if not self.exhausted(identity):
            return None
        return budget_spent_message(self.daily_tokens, self.seconds_until_reset())


@dataclass(frozen=True)
class Expiry:
    """A session timer ran out: which setting, and what to tell the client."""

    setting: str
    message: str


class SessionTimers:
    """The two clocks of a session: its total length, and time since the client last sent anything."""

    def __init__(self, max_session_seconds: float, idle_timeout_seconds: float, started: float) -> None:
        self.max_session_seconds = max_session_seconds
        self.idle_timeout_seconds = idle_timeout_seconds
        self.started = started

    def check(self, now: float, last_activity: float) -> Expiry | None:
        """The timer that has run out at `now`, if any (the session length wins a tie)."""
        if now - self.started >= self.max_session_seconds:
            return Expiry(
                "RELAY_MAX_SESSION_SECONDS",
                f"This session reached the longest length this relay allows, {_duration(self.max_session_seconds)} "
                "(RELAY_MAX_SESSION_SECONDS). Connect again to go on.",
            )
        if now - last_activity >= self.idle_timeout_seconds:
            return Expiry(
                "RELAY_IDLE_TIMEOUT_SECONDS",
                f"This session was idle for {_duration(self.idle_timeout_seconds)} without any client event "
                "(RELAY_IDLE_TIMEOUT_SECONDS). Connect again when you want to talk.",
            )
        return None

    def seconds_to_next_check(self, now: float, last_activity: float) -> float:
        """How long nothing can run out, given no client event arrives meanwhile."""
        until_end = self.started + self.max_session_seconds - now
        until_idle = last_activity + self.idle_timeout_seconds - now
        return max(0.0, min(until_end, until_idle))
