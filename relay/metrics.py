"""Every Prometheus metric of the relay, in one place.

Labels are small and bounded: event types outside the GA protocol are counted as `other`, upstream error codes
outside a known list as `other`, and there are no per-session labels. The only per-user label is `identity` on the
`relay_identity_*` counters, which exist only when RELAY_METRICS_IDENTITY_LABEL is on and are capped at
`IDENTITY_LABEL_CAP` distinct identities (later ones share the value `other`).

The metrics that every frame touches (events, bytes, audio seconds, forwarding and resampling time) are plain
numbers exported at scrape time (`relay.plain_metrics`), so counting costs the data path no lock and no bucket scan.
Label children are created once, here, so that the per-frame hot path touches no label dictionaries and so that
every counter shows up in the exposition at 0 from the start (a `rate()` over a series that appears only with its
first increment misses that increment). Metrics are served only on the metrics listener
(`RELAY_METRICS_HOST`/`RELAY_METRICS_PORT`).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from relay import protocol
from relay.access import DENIAL_REASONS
from relay.limits import LIMIT_REASONS
from relay.plain_metrics import PlainCollector, PlainCounter, PlainCounterFamily
from relay.protocol import CLIENT_EVENT_TYPES, SERVER_EVENT_TYPES

TO_UPSTREAM = "to_upstream"
TO_CLIENT = "to_client"
DIRECTIONS = (TO_UPSTREAM, TO_CLIENT)
OTHER = "other"

#: How sessions end (`SessionEnd.outcome`); any other outcome still gets its own series when first used.
SESSION_OUTCOMES = (
    "client_closed",
    "upstream_closed",
    "upstream_failed",
    "upstream_lost",
    "policy",
    "limit",
    "server_shutdown",
    "error",
)
#: What ended the user's turn, for relay_response_first_audio_seconds.
TRIGGER_SPEECH_STOPPED = "speech_stopped"
TRIGGER_COMMIT = "commit"
TRIGGER_RESPONSE_CREATE = "response_create"
FIRST_AUDIO_TRIGGERS = (TRIGGER_SPEECH_STOPPED, TRIGGER_COMMIT, TRIGGER_RESPONSE_CREATE)
#: Kinds of tokens from response.done usage. `input_cached` is a subset of input_text + input_audio.
TOKEN_KINDS = ("input_text", "input_audio", "input_image", "input_cached", "output_text", "output_audio")
#: Why connections were refused before the upgrade: the door's own reasons (relay.app), its access decisions
#: (relay.access) and its limits (relay.limits). A reason not listed here still gets its series when first used.
#: Every reason `Door.login` refuses with.
LOGIN_FAILURE_REASONS = ("invalid_token", "too_many_attempts", "origin", "login_not_configured")
REJECT_REASONS = ("draining", "model", "bad_rate", *LIMIT_REASONS, *DENIAL_REASONS)
#: Names in rate_limits.updated.
RATE_LIMIT_NAMES = ("tokens", "requests")
#: The relay's own error codes (every `relay_*` constant of relay.protocol).
RELAY_ERROR_CODES = tuple(
    sorted(
        value
        for name, value in vars(protocol).items()
        if name.isupper() and isinstance(value, str) and value.startswith("relay_")
    )
)
#: Error codes the Realtime API is known to send; anything else an upstream sends is counted as `other`.
UPSTREAM_ERROR_CODES = (
    "missing_required_parameter",
    "unknown_parameter",
    "invalid_value",
    "invalid_type",
    "input_audio_buffer_commit_empty",
    "conversation_already_has_active_response",
    "response_cancel_not_active",
    "session_expired",
    "beta_api_shape_disabled",
    "rate_limit_exceeded",
    "server_error",
    "upstream_error",  # an error event without a code
)
#: Distinct identities that get their own `identity` label value; later ones are counted as `other`.
IDENTITY_LABEL_CAP = 100
_IDENTITY_MAX_LENGTH = 128

# Relay overhead is a few to a few hundred microseconds per frame: resolve 5 µs to 100 ms.
OVERHEAD_BUCKETS = (
    5e-6,
    1e-5,
    2e-5,
    3e-5,
    5e-5,
    7.5e-5,
    1e-4,
    1.5e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    1e-2,
    2.5e-2,
    0.1,
)
# Resampling one 10-100 ms frame costs 5-50 µs; a slow one should still land in a bucket, not in +Inf.
RESAMPLE_BUCKETS = (2e-6, 5e-6, 1e-5, 1.5e-5, 2e-5, 3e-5, 5e-5, 7.5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2)
# What a user waits for the first audio: 50 ms steps where voice agents usually are (0.2-1 s), coarser above.
WAIT_BUCKETS = (
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.35,
    0.4,
    0.45,
    0.5,
    0.6,
    0.7,
    0.8,
    0.9,
    1.0,
    1.25,
    1.5,
    2.0,
    2.5,
    3.0,
    4.0,
    5.0,
    7.5,
    10.0,
)
CONNECT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


class IdentityMetrics:
    """Per-identity counters for one session's identity; a no-op when the identity label is off."""

    __slots__ = ("_sessions", "_tokens")

    def __init__(self, sessions: Counter | None = None, tokens: Counter | None = None) -> None:
        self._sessions = sessions
        self._tokens = tokens

    def session_opened(self) -> None:
        """Count one session opened by this identity."""
        if self._sessions is not None:
            self._sessions.inc()

    def add_tokens(self, count: int) -> None:
        """Count tokens (response.done `total_tokens`) used by this identity."""
        if self._tokens is not None and count > 0:
            self._tokens.inc(count)


#: Shared by every session when the identity label is off.
NO_IDENTITY_METRICS = IdentityMetrics()


class RelayMetrics:
    """The relay's metric objects, registered in their own registry (so tests can create several apps)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        identity_label: bool = False,
        identity_cap: int = IDENTITY_LABEL_CAP,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # process_cpu_seconds_total and process_resident_memory_bytes: CPU and memory per session for capacity.
        ProcessCollector(registry=r)
        self.sessions_active = Gauge("relay_sessions_active", "Relay sessions now open.", registry=r)
        self.sessions_total = Counter(
            "relay_sessions_total", "Relay sessions ended, by outcome.", ["outcome"], registry=r
        )
        self.session_duration = Histogram(
            "relay_session_duration_seconds",
            "Length of relay sessions, from the accepted handshake to both sockets closed.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.upstream_connect = Histogram(
            "relay_upstream_connect_seconds",
            "Time to open the upstream WebSocket (DNS, TCP, TLS and handshake); successful connects only.",
            buckets=CONNECT_BUCKETS,
            registry=r,
        )
        # The metrics every frame touches are plain numbers, exported at scrape time (relay.plain_metrics).
        plain = PlainCollector(r)
        self.forward_latency = plain.histogram(
            "relay_forward_latency_seconds",
            "Relay's own time per forwarded frame, frame received to frame handed to the other socket "
            "(parsing, policy, resampling and re-encoding included).",
            ["direction"],
            OVERHEAD_BUCKETS,
        )
        self.resample = plain.histogram(
            "relay_resample_seconds",
            "Time spent resampling one frame of audio, by direction.",
            ["direction"],
            RESAMPLE_BUCKETS,
        )
        self.first_audio = Histogram(
            "relay_response_first_audio_seconds",
            "End of the user's turn (speech_stopped, commit or response.create) to the first response audio "
            "handed to the client socket.",
            ["trigger"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.events = plain.counter(
            "relay_events",
            "Events forwarded, by direction and type (types outside the GA protocol are `other`).",
            ["direction", "type"],
        )
        self.audio_seconds = plain.counter(
            "relay_audio_seconds", "Seconds of audio forwarded, by direction.", ["direction"]
        )
        self.bytes = plain.counter(
            "relay_bytes",
            "WebSocket payload bytes received, by direction (from clients: to_upstream).",
            ["direction"],
        )
        self.errors = Counter(
            "relay_errors_total",
            "Error events sent to clients, by code (the relay's own and the upstream's).",
            ["code"],
            registry=r,
        )
        self.rejected = Counter(
            "relay_rejected_connections_total",
            "Connections refused before the WebSocket upgrade, by reason.",
            ["reason"],
            registry=r,
        )
        self.login_failures = Counter(
            "relay_login_failures_total",
            "Web sign-ins refused, by reason (a rising invalid_token rate means someone is guessing).",
            ["reason"],
            registry=r,
        )
        self.tokens = Counter(
            "relay_tokens_total", "Tokens reported by response.done usage, by kind.", ["kind"], registry=r
        )
        # A gauge is not pre-created: a 0 that was never reported would read as "no tokens left".
        self.rate_limit_remaining = Gauge(
            "relay_upstream_rate_limit_remaining",
            "Latest remaining value reported by rate_limits.updated, by limit name.",
            ["name"],
            registry=r,
        )

        # Children for the hot path, created once.
        self.bytes_to_upstream = self.bytes.labels(TO_UPSTREAM)
        self.bytes_to_client = self.bytes.labels(TO_CLIENT)
        self.audio_to_upstream = self.audio_seconds.labels(TO_UPSTREAM)
        self.audio_to_client = self.audio_seconds.labels(TO_CLIENT)
        self.forward_to_upstream = self.forward_latency.labels(TO_UPSTREAM)
        self.forward_to_client = self.forward_latency.labels(TO_CLIENT)
        self.resample_to_upstream = self.resample.labels(TO_UPSTREAM)
        self.resample_to_client = self.resample.labels(TO_CLIENT)
        self._client_events = self._children(self.events, CLIENT_EVENT_TYPES, TO_UPSTREAM)
        self._server_events = self._children(self.events, SERVER_EVENT_TYPES, TO_CLIENT)
        self._first_audio = {t: self.first_audio.labels(t) for t in FIRST_AUDIO_TRIGGERS}
        self._relay_errors = {c: self.errors.labels(c) for c in RELAY_ERROR_CODES}
        self._upstream_errors = {c: self.errors.labels(c) for c in (*UPSTREAM_ERROR_CODES, OTHER)}
        self._tokens = {k: self.tokens.labels(k) for k in TOKEN_KINDS}
        for outcome in SESSION_OUTCOMES:
            self.sessions_total.labels(outcome)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        for reason in LOGIN_FAILURE_REASONS:
            self.login_failures.labels(reason)

        self._identity_cap = identity_cap
        self._identities: dict[str, IdentityMetrics] = {}
        self.identity_sessions: Counter | None = None
        self.identity_tokens: Counter | None = None
        if identity_label:
            self.identity_sessions = Counter(
                "relay_identity_sessions_total",
                f"Sessions opened, by identity (the first {identity_cap} identities; later ones are `other`).",
                ["identity"],
                registry=r,
            )
            self.identity_tokens = Counter(
                "relay_identity_tokens_total",
                f"Tokens used (response.done total_tokens), by identity (the first {identity_cap} identities).",
                ["identity"],
                registry=r,
            )

    @staticmethod
    def _children(
        events: PlainCounterFamily, types: Iterable[str], direction: str
    ) -> dict[str, PlainCounter]:
        children = {t: events.labels(direction, t) for t in types}
        children[OTHER] = events.labels(direction, OTHER)
        return children

    # -- hot path ------------------------------------------------------------------------------------------------

    def count_client_event(self, event_type: str) -> None:
        """Count one event forwarded from a client; types outside the GA protocol are counted as `other`."""
        children = self._client_events
        (children.get(event_type) or children[OTHER]).inc()

    def count_upstream_event(self, event_type: str) -> None:
        """Count one event forwarded from the upstream; types outside the GA protocol are counted as `other`."""
        children = self._server_events
        (children.get(event_type) or children[OTHER]).inc()

    def count_event(self, direction: str, event_type: str) -> None:
        """Count one forwarded event in `direction` (TO_UPSTREAM or TO_CLIENT)."""
        if direction == TO_UPSTREAM:
            self.count_client_event(event_type)
        else:
            self.count_upstream_event(event_type)

    def observe_first_audio(self, trigger: str, seconds: float) -> None:
        """Record one wait from the end of a user's turn to the first response audio handed to the client."""
        child = self._first_audio.get(trigger)
        if child is None:
            child = self._first_audio[trigger] = self.first_audio.labels(trigger)
        child.observe(seconds)

    # -- less frequent -------------------------------------------------------------------------------------------

    def count_error(self, code: str) -> None:
        """Count one error event the relay itself sent (`code` is one of the relay's own constants)."""
        child = self._relay_errors.get(code)
        if child is None:
            child = self._relay_errors[code] = self.errors.labels(code)
        child.inc()

    def count_upstream_error(self, code: object) -> None:
        """Count one error event from the upstream; unknown codes are counted as `other` (they are not ours)."""
        key = code if isinstance(code, str) and code else "upstream_error"
        (self._upstream_errors.get(key) or self._upstream_errors[OTHER]).inc()

    def count_tokens(self, kind: str, count: int) -> None:
        """Count tokens of one kind from response.done usage (kinds outside TOKEN_KINDS are ignored)."""
        child = self._tokens.get(kind)
        if child is not None and count > 0:
            child.inc(count)

    def set_rate_limit(self, name: object, remaining: float) -> None:
        """Record the latest `remaining` of a rate limit; names other than tokens/requests share `other`."""
        self.rate_limit_remaining.labels(name if name in RATE_LIMIT_NAMES else OTHER).set(remaining)

    def for_identity(self, identity: str) -> IdentityMetrics:
        """The per-identity counters for `identity` (no-op unless the identity label is on; capped)."""
        if self.identity_sessions is None or self.identity_tokens is None:
            return NO_IDENTITY_METRICS
        known = self._identities.get(identity)
        if known is not None:
            return known
        label = identity[:_IDENTITY_MAX_LENGTH] if len(self._identities) < self._identity_cap else OTHER
        metrics = IdentityMetrics(self.identity_sessions.labels(label), self.identity_tokens.labels(label))
        if label != OTHER:
            self._identities[identity] = metrics
        return metrics
