"""Metrics by provider, so that an operator can compare upstreams on one dashboard.

The `provider` label is the profile name: the operator's configuration bounds it, never a client. Children are
created for every profile at start-up, so each series exists (at zero) before the first session.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from relay.metrics import CONNECT_BUCKETS, DURATION_BUCKETS, SESSION_OUTCOMES, WAIT_BUCKETS

#: Session outcomes as `relay.session.SessionEnd.outcome` names them.
OUTCOMES = (*SESSION_OUTCOMES, "client_slow")
RESUME_REASONS = ("go_away", "setup_changed")


class ProviderMetrics:
    """The per-provider series, registered on the relay's registry."""

    def __init__(self, registry: CollectorRegistry, providers: Iterable[str]) -> None:
        self.sessions = Counter(
            "relay_provider_sessions_total",
            "Relay sessions ended, by provider and outcome.",
            ["provider", "outcome"],
            registry=registry,
        )
        self.session_duration = Histogram(
            "relay_provider_session_duration_seconds",
            "Length of relay sessions, by provider.",
            ["provider"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.first_audio = Histogram(
            "relay_provider_first_audio_seconds",
            "End of the user's turn to the first response audio handed to the client socket, by provider.",
            ["provider"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.upstream_connect = Histogram(
            "relay_provider_upstream_connect_seconds",
            "Time to open a session's upstream (for Gemini: its first socket), by provider; successful opens only.",
            ["provider"],
            buckets=CONNECT_BUCKETS,
            registry=registry,
        )
        self.resumptions = Counter(
            "relay_provider_resumptions_total",
            "Upstream connections replaced mid-session by session resumption (Gemini goAway or a setup change).",
            ["provider", "why"],
            registry=registry,
        )
        self.resume_gap = Histogram(
            "relay_provider_resume_gap_seconds",
            "How long client audio was held while a resumed connection was set up.",
            ["provider"],
            buckets=CONNECT_BUCKETS,
            registry=registry,
        )
        self.refused = Counter(
            "relay_provider_refused_events_total",
            "Client events a translated provider cannot honour, refused with relay_provider_unsupported.",
            ["provider"],
            registry=registry,
        )
        for name in providers:
            for outcome in OUTCOMES:
                self.sessions.labels(name, outcome)
            for why in RESUME_REASONS:
                self.resumptions.labels(name, why)
            self.session_duration.labels(name)
            self.first_audio.labels(name)
            self.upstream_connect.labels(name)
            self.resume_gap.labels(name)
            self.refused.labels(name)

    def for_provider(self, name: str) -> OneProvider:
        """The children of one provider, for one session to use."""
        return OneProvider(self, name)


class OneProvider:
    """One provider's series."""

    def __init__(self, metrics: ProviderMetrics, name: str) -> None:
        self.name = name
        self._first_audio = metrics.first_audio.labels(name)
        self._connect = metrics.upstream_connect.labels(name)
        self._duration = metrics.session_duration.labels(name)
        self._gap = metrics.resume_gap.labels(name)
        self._refused = metrics.refused.labels(name)
        self._metrics = metrics

    def first_audio(self, seconds: float) -> None:
        """A turn's wait for first audio."""
        self._first_audio.observe(seconds)

    def connected(self, seconds: float) -> None:
        """A session's upstream opened."""
        self._connect.observe(seconds)

    def session_ended(self, outcome: str, seconds: float) -> None:
        """A session ended with `outcome` after `seconds`."""
        self._metrics.sessions.labels(self.name, outcome if outcome in OUTCOMES else "error").inc()
        self._duration.observe(seconds)

    def resumed(self, why: str, gap_seconds: float) -> None:
        """A connection was replaced by resumption, holding client audio for `gap_seconds`."""
        self._metrics.resumptions.labels(self.name, why).inc()
        self._gap.observe(gap_seconds)

    def refused(self, count: int = 1) -> None:
        """Client events refused as not translatable."""
        self._refused.inc(count)
