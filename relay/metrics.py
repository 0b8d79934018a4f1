"""Every Prometheus metric of the relay, in one place.

Labels are small and bounded: event types outside the GA protocol are counted as `other`, and there are no
per-session labels. Metrics are served only on the metrics listener (`RELAY_METRICS_HOST`/`RELAY_METRICS_PORT`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from relay.protocol import CLIENT_EVENT_TYPES, SERVER_EVENT_TYPES

TO_UPSTREAM = "to_upstream"
TO_CLIENT = "to_client"

# Relay overhead is tens of microseconds; these buckets resolve 10 µs to 100 ms.
_OVERHEAD_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1)
# What a user waits for the first audio: 50 ms to 10 s.
_WAIT_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_CONNECT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)


class RelayMetrics:
    """The relay's metric objects, registered in their own registry (so tests can create several apps)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.sessions_active = Gauge("relay_sessions_active", "Relay sessions now open.", registry=r)
        self.sessions_total = Counter(
            "relay_sessions_total", "Relay sessions ended, by outcome.", ["outcome"], registry=r
        )
        self.session_duration = Histogram(
            "relay_session_duration_seconds",
            "Length of relay sessions.",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.upstream_connect = Histogram(
            "relay_upstream_connect_seconds",
            "Time to open the upstream WebSocket (TCP, TLS and handshake).",
            buckets=_CONNECT_BUCKETS,
            registry=r,
        )
        self.forward_latency = Histogram(
            "relay_forward_latency_seconds",
            "Relay's own time per forwarded event, frame received to frame handed to the other socket.",
            ["direction"],
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.resample = Histogram(
            "relay_resample_seconds",
            "Time spent resampling one frame of audio.",
            ["direction"],
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.first_audio = Histogram(
            "relay_response_first_audio_seconds",
            "End of the user's turn to the first response audio forwarded to the client.",
            ["trigger"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.events = Counter(
            "relay_events_total",
            "Events forwarded, by direction and type.",
            ["direction", "type"],
            registry=r,
        )
        self.audio_seconds = Counter(
            "relay_audio_seconds_total",
            "Seconds of audio forwarded, by direction.",
            ["direction"],
            registry=r,
        )
        self.bytes = Counter(
            "relay_bytes_total", "WebSocket payload bytes received, by direction.", ["direction"], registry=r
        )
        self.errors = Counter(
            "relay_errors_total", "Error events sent to clients, by code.", ["code"], registry=r
        )
        self.rejected = Counter(
            "relay_rejected_connections_total",
            "Connections refused before the WebSocket upgrade, by reason.",
            ["reason"],
            registry=r,
        )
        self.tokens = Counter(
            "relay_tokens_total", "Tokens reported by response.done usage, by kind.", ["kind"], registry=r
        )
        self.rate_limit_remaining = Gauge(
            "relay_upstream_rate_limit_remaining",
            "Latest remaining value reported by rate_limits.updated.",
            ["name"],
            registry=r,
        )

    def count_event(self, direction: str, event_type: str) -> None:
        """Count one forwarded event; types outside the GA protocol are counted as `other`."""
        known = CLIENT_EVENT_TYPES if direction == TO_UPSTREAM else SERVER_EVENT_TYPES
        self.events.labels(direction, event_type if event_type in known else "other").inc()
