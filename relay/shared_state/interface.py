"""What every worker and replica must count in one place, as one interface with two implementations.

`LocalState` (relay.shared_state.local) keeps it in this process, exactly as a single relay always has; `RedisState`
(relay.shared_state.redis_state) keeps it in Redis with atomic scripts and expiry, so that any number of workers
and replicas enforce one limit.

The door's decisions stay synchronous and free of I/O: before a decision the app awaits `consulted(request)`, which
fetches the facts the door will read (this client's failed sign-ins, whether its cookie was signed out) into the
`limiter` and `revoked` views; failures the door records are written back when the block ends.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from relay import protocol
from relay.access import Denial, DoorRequest
from relay.auth import AttemptCounter

#: The unit of RELAY_DAILY_TOKEN_BUDGET in `charge` and `spent`; other units (a currency) are the caller's to name.
TOKENS = "tokens"
#: How long a client refused while the shared store is away should wait before trying again.
UNAVAILABLE_RETRY_AFTER_SECONDS = 5


class SharedStateUnavailable(Exception):
    """The shared store did not answer in time; new sessions and sign-ins are refused until it does."""


@dataclass(frozen=True)
class Lease:
    """One open session's slot; give it back with `close_session`."""

    identity: str
    lease_id: str


def unavailable_denial() -> Denial:
    """The refusal of a new session or sign-in while the shared store cannot be reached (fail closed)."""
    return Denial(
        503,
        protocol.STATE_UNAVAILABLE,
        "The relay cannot reach the store it shares its limits in (RELAY_REDIS_URL), so it opens no new sessions "
        f"and takes no sign-ins for now; open sessions go on. Try again in {UNAVAILABLE_RETRY_AFTER_SECONDS} s.",
        "shared_state_unavailable",
        {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
    )


class SharedState(Protocol):
    """Session slots, daily budgets, failed sign-ins and signed-out logins, shared by whoever uses one store."""

    @property
    def limiter(self) -> AttemptCounter:
        """Where the door counts failed sign-ins; read and written between `consulted`'s enter and exit."""

    @property
    def revoked(self) -> Callable[[str], bool]:
        """True for a login cookie that was signed out; given to relay.auth.LoginCookies."""

    async def start(self) -> None:
        """Connect and start background work (lease renewal, spending write-back)."""

    async def aclose(self) -> None:
        """Write back what is pending, stop background work and disconnect."""

    def consulted(self, request: DoorRequest, *, required: bool = True) -> AbstractAsyncContextManager[None]:
        """Fetch what the door needs for `request` on enter, write back what it recorded on exit.

        When the store does not answer, raises `SharedStateUnavailable` on enter if `required`, else lets the door
        decide on what this process last heard.
        """

    async def open_session(self, identity: str) -> Lease | Denial:
        """Take a session slot for `identity` if its budget and both session limits allow, or say why not."""

    async def close_session(self, lease: Lease) -> None:
        """Give back a slot taken by `open_session` (never raises)."""

    def spend(self, identity: str, tokens: int) -> str | None:
        """Count `tokens` against `identity`'s daily token budget (negative: refund); why its session must end,
        if the budget is now spent. Synchronous, for the session's decision logic; shared stores write it back
        in the background."""

    async def charge(self, unit: str, identity: str, amount: float) -> float:
        """Add `amount` (negative: refund) to `identity`'s spending today in `unit` (e.g. `usd`); today's total.

        The hook for budgets in a second unit: the caller decides what the total means. Raises
        `SharedStateUnavailable` when the store does not answer.
        """

    async def spent(self, unit: str, identity: str) -> float:
        """`identity`'s spending today in `unit`. Raises `SharedStateUnavailable` when the store does not answer."""

    async def revoke_login(self, cookie: str, ttl_seconds: float) -> None:
        """Sign out a login cookie everywhere for the rest of its life. Raises `SharedStateUnavailable`."""
