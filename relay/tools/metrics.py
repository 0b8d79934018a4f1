"""Prometheus metrics of server tool calls, labelled only by configured tool names (a bounded set)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

#: How a call ended.
OUTCOMES = ("ok", "error", "timeout", "cancelled")


class ToolMetrics:
    """Calls, their outcomes and their latency, by tool; every series exists at 0 from the start."""

    def __init__(self, registry: CollectorRegistry, names: Iterable[str]) -> None:
        self.calls = Counter(
            "relay_tool_calls_total",
            "Server tool calls, by tool and outcome (ok, error, timeout, cancelled).",
            ["tool", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "relay_tool_call_seconds",
            "Time from a server call's complete arguments to its output, by tool.",
            ["tool"],
            registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
        )
        for name in names:
            self.latency.labels(name)
            for outcome in OUTCOMES:
                self.calls.labels(name, outcome)

    def observe(self, tool: str, outcome: str, seconds: float) -> None:
        """Count one call's end."""
        self.calls.labels(tool, outcome).inc()
        self.latency.labels(tool).observe(seconds)
