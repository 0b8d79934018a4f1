"""Limits every worker and replica must count together: one interface, kept in memory or in Redis."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from relay.config import Config
from relay.shared_state.interface import (
    TOKENS,
    Lease,
    SharedState,
    SharedStateUnavailable,
    unavailable_denial,
)
from relay.shared_state.local import LocalState

__all__ = [
    "TOKENS",
    "Lease",
    "SharedState",
    "SharedStateUnavailable",
    "open_shared_state",
    "unavailable_denial",
]


def open_shared_state(config: Config, registry: CollectorRegistry) -> SharedState:
    """Redis when RELAY_REDIS_URL is set (its metrics go to `registry`), else this process's memory."""
    if not config.redis_url:
        return LocalState(config)
    from relay.shared_state.metrics import SharedStateMetrics
    from relay.shared_state.redis_state import RedisState

    return RedisState(config, SharedStateMetrics(registry))
