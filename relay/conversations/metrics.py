"""The history's and the cost's Prometheus metrics, registered beside the relay's own."""

from __future__ import annotations

from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from relay.metrics import IDENTITY_LABEL_CAP, OTHER

WRITE_OUTCOMES = ("written", "failed", "dropped")
ROLLOVER_REASONS = ("age", "expired", "dropped")


class HistoryMetrics:
    """Costs by model (and identity when that label is on), history writes, upstream roll-overs."""

    def __init__(self, registry: CollectorRegistry, models: tuple[str, ...], *, identity_label: bool) -> None:
        self._models = set(models)
        self.cost = Counter(
            "relay_cost_dollars_total",
            "Money spent upstream (response.done and transcription usage priced by RELAY_PRICES), by model.",
            ["model"],
            registry=registry,
        )
        for model in (*models, OTHER):
            self.cost.labels(model)
        self.identity_cost: Counter | None = None
        self._identities: set[str] = set()
        if identity_label:
            self.identity_cost = Counter(
                "relay_identity_cost_dollars_total",
                f"Money spent upstream, by identity (the first {IDENTITY_LABEL_CAP} identities).",
                ["identity"],
                registry=registry,
            )
        self.writes = Counter(
            "relay_history_writes_total", "History rows written, failed or dropped (queue full).", ["outcome"],
            registry=registry,
        )  # fmt: skip
        for outcome in WRITE_OUTCOMES:
            self.writes.labels(outcome)
        self.queue_depth = Gauge(
            "relay_history_queue", "History writes waiting for the database.", registry=registry
        )
        self.write_seconds = Histogram(
            "relay_history_write_seconds", "Time to apply one batch of history writes.", registry=registry
        )
        self.rollovers = Counter(
            "relay_upstream_rollovers_total", "Upstream sockets replaced inside a running session, by reason.",
            ["reason"], registry=registry,
        )  # fmt: skip
        for reason in ROLLOVER_REASONS:
            self.rollovers.labels(reason)

    def spend(self, model: str | None, identity: str, dollars: Decimal) -> None:
        """Count money spent by a session of `identity` on `model`."""
        if dollars <= 0:
            return
        self.cost.labels(model if model in self._models else OTHER).inc(float(dollars))
        if self.identity_cost is not None:
            if identity not in self._identities and len(self._identities) < IDENTITY_LABEL_CAP:
                self._identities.add(identity)
            self.identity_cost.labels(identity if identity in self._identities else OTHER).inc(float(dollars))
