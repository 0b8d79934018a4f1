"""How the shared store is doing, as Prometheus metrics in the relay's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

#: What the relay asks the store (label values of relay_shared_state_errors_total).
OPERATIONS = ("connect", "admit", "renew", "release", "spend", "login", "revoke")


class SharedStateMetrics:
    """`relay_shared_state_up` and `relay_shared_state_errors_total{operation}`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge(
            "relay_shared_state_up",
            "1 while the last request to the shared store (RELAY_REDIS_URL) succeeded; 0 while it fails.",
            registry=registry,
        )
        self.errors = Counter(
            "relay_shared_state_errors_total",
            "Requests to the shared store that failed or timed out, by operation.",
            ["operation"],
            registry=registry,
        )
        for operation in OPERATIONS:
            self.errors.labels(operation)

    def failed(self, operation: str) -> None:
        """Count one failed request."""
        self.errors.labels(operation).inc()
        self.up.set(0)

    def succeeded(self) -> None:
        """Note that the store answered."""
        self.up.set(1)
