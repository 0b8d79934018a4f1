"""Metrics are complete, bounded and right: what the exposition says matches what crossed the sockets.

Also /healthz and /readyz. The relay runs in this process (its registry is read through the text exposition) or as
the real command; the upstream is the simulated model.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from relay import app as relay_app
from relay import protocol
from relay.bounds import SessionBounds
from relay.fake.server import FakeRealtimeServer
from relay.metrics import (
    FIRST_AUDIO_TRIGGERS,
    REJECT_REASONS,
    RELAY_ERROR_CODES,
    SESSION_OUTCOMES,
    TOKEN_KINDS,
    UPSTREAM_ERROR_CODES,
    RelayMetrics,
)
from relay.policy import SessionPolicy
from relay.protocol import CLIENT_EVENT_TYPES, SERVER_EVENT_TYPES
from relay.session_state import Actions, SessionState
from tests.conftest import ProxiedRelay
from tests.test_relay_sdk import voiced_turn

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
RelayFactory = Callable[..., Awaitable[ProxiedRelay]]

FRAME_MS = 20


# -- reading the exposition ------------------------------------------------------------------------------------


def parse_exposition(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by (sample name, label set)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(relay: Any) -> Samples:
    """The in-process relay's exposition, as the metrics listener would serve it."""
    return parse_exposition(generate_latest(relay.metrics.registry).decode())


def value(samples: Samples, name: str, /, **labels: str) -> float:
    """One sample's value; a missing sample fails the test (a metric that should exist does not)."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} is not in the exposition"
    return samples[key]


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    """The label sets of every sample called `name`."""
    return [dict(labels) for sample_name, labels in samples if sample_name == name]


# -- a client that timestamps what it receives ------------------------------------------------------------------


class RealtimeClient:
    """A raw WebSocket client of the relay that records every event with the time it arrived."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.bytes_sent = 0
        self.frames_sent = 0
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str) -> RealtimeClient:
        """Connect and wait for session.created (so the upstream is open and later frames are forwarded directly)."""
        # Its own logger, so that the websockets library's lines about this client are told apart from the relay's.
        client = cls(
            await connect(url, max_size=None, compression=None, logger=logging.getLogger("tests.client"))
        )
        await client.wait_for("session.created")
        return client

    async def _read(self) -> None:
        async for message in self.ws:
            self.events.append((time.perf_counter(), json.loads(message)))
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_for(
        self, event_type: str, count: int = 1, timeout: float = 15
    ) -> tuple[float, dict[str, Any]]:
        """The `count`-th event of `event_type` and when it arrived."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                found = [e for e in self.events if e[1]["type"] == event_type]
                if len(found) >= count:
                    return found[count - 1]
                if self._reader.done():
                    raise AssertionError(f"connection ended before {event_type}: {self.types()}")
                await changed.wait()

    def types(self) -> list[str]:
        return [e["type"] for _, e in self.events]

    async def send_event(self, event: dict[str, Any]) -> float:
        """Send one event; return when it was handed to the socket."""
        text = json.dumps(event)
        await self.ws.send(text)
        self.bytes_sent += len(text.encode())
        self.frames_sent += 1
        return time.perf_counter()

    async def send_audio(self, pcm: bytes, rate: int, *, binary: bool = False, paced: bool = False) -> None:
        """Send PCM16 in 20 ms frames, as appends or binary frames, optionally at real-time pace."""
        step = rate * 2 * FRAME_MS // 1000
        started = time.perf_counter()
        for n, start in enumerate(range(0, len(pcm), step)):
            chunk = pcm[start : start + step]
            if binary:
                await self.ws.send(chunk)
                self.bytes_sent += len(chunk)
                self.frames_sent += 1
            else:
                await self.send_event(
                    {"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}
                )
            if paced:
                await asyncio.sleep(max(0.0, started + (n + 1) * FRAME_MS / 1000 - time.perf_counter()))

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def wait_for_value(
    relay: Any, name: str, expected: float, /, timeout: float = 5, **labels: str
) -> Samples:
    """Scrape until `name{labels}` equals `expected` (the relay updates session counters as it closes)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(relay)
        if samples.get((name, frozenset(labels.items()))) == expected or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.02)


# -- the metric objects ----------------------------------------------------------------------------------------


def test_every_counter_is_in_the_exposition_at_zero_from_the_start() -> None:
    samples = parse_exposition(generate_latest(RelayMetrics().registry).decode())
    for event_type in [*CLIENT_EVENT_TYPES, "other"]:
        assert value(samples, "relay_events_total", direction="to_upstream", type=event_type) == 0
    for event_type in [*SERVER_EVENT_TYPES, "other"]:
        assert value(samples, "relay_events_total", direction="to_client", type=event_type) == 0
    for direction in ("to_upstream", "to_client"):
        assert value(samples, "relay_bytes_total", direction=direction) == 0
        assert value(samples, "relay_audio_seconds_total", direction=direction) == 0
        assert value(samples, "relay_forward_latency_seconds_count", direction=direction) == 0
        assert value(samples, "relay_resample_seconds_count", direction=direction) == 0
    for trigger in FIRST_AUDIO_TRIGGERS:
        assert value(samples, "relay_response_first_audio_seconds_count", trigger=trigger) == 0
        assert value(samples, "relay_response_first_audio_seconds_bucket", trigger=trigger, le="+Inf") == 0
    for outcome in SESSION_OUTCOMES:
        assert value(samples, "relay_sessions_total", outcome=outcome) == 0
    for code in [*RELAY_ERROR_CODES, *UPSTREAM_ERROR_CODES, "other"]:
        assert value(samples, "relay_errors_total", code=code) == 0
    for kind in TOKEN_KINDS:
        assert value(samples, "relay_tokens_total", kind=kind) == 0
    for reason in REJECT_REASONS:
        assert value(samples, "relay_rejected_connections_total", reason=reason) == 0
    assert value(samples, "relay_sessions_active") == 0
    assert value(samples, "relay_session_duration_seconds_count") == 0
    assert value(samples, "relay_upstream_connect_seconds_count") == 0
    # Every relay_* code constant of the protocol module is pre-created, including the shutdown code.
    assert protocol.SERVER_SHUTTING_DOWN in RELAY_ERROR_CODES
    # No gauge value that was never reported, and no per-identity series unless asked for.
    assert not series(samples, "relay_upstream_rate_limit_remaining")
    assert not [name for name, _ in samples if name.startswith("relay_identity_")]


def test_sub_millisecond_buckets_resolve_relay_overhead() -> None:
    samples = parse_exposition(generate_latest(RelayMetrics().registry).decode())
    bounds = sorted(
        float(labels["le"])
        for labels in series(samples, "relay_forward_latency_seconds_bucket")
        if labels["direction"] == "to_client" and labels["le"] != "+Inf"
    )
    assert bounds[0] <= 10e-6
    assert len([b for b in bounds if b < 1e-3]) >= 8


def test_labels_stay_bounded_whatever_the_peers_send() -> None:
    metrics = RelayMetrics()
    before = len(parse_exposition(generate_latest(metrics.registry).decode()))
    for n in range(500):
        metrics.count_client_event(f"made.up.{n}")
        metrics.count_upstream_event(f"response.audio.delta{n}")
        metrics.count_upstream_error(f"weird_code_{n}")
        metrics.count_tokens(f"kind_{n}", 5)
    metrics.count_upstream_error(None)
    metrics.count_upstream_error({"not": "a string"})
    metrics.set_rate_limit("tokens", 900)
    metrics.set_rate_limit("something_else", 3)
    samples = parse_exposition(generate_latest(metrics.registry).decode())
    # Only the two rate-limit gauges are new.
    assert len(samples) == before + 2
    assert value(samples, "relay_events_total", direction="to_upstream", type="other") == 500
    assert value(samples, "relay_events_total", direction="to_client", type="other") == 500
    assert value(samples, "relay_errors_total", code="other") == 500
    # An error event without a usable code.
    assert value(samples, "relay_errors_total", code="upstream_error") == 2
    assert value(samples, "relay_upstream_rate_limit_remaining", name="tokens") == 900
    assert value(samples, "relay_upstream_rate_limit_remaining", name="other") == 3


def test_identity_label_is_capped() -> None:
    metrics = RelayMetrics(identity_label=True, identity_cap=3)
    for n in range(6):
        for _ in range(n + 1):
            metrics.for_identity(f"user{n}@example.com").session_opened()
    metrics.for_identity("user0@example.com").add_tokens(120)
    metrics.for_identity("user5@example.com").add_tokens(7)
    samples = parse_exposition(generate_latest(metrics.registry).decode())
    identities = {labels["identity"] for labels in series(samples, "relay_identity_sessions_total")}
    assert identities == {"user0@example.com", "user1@example.com", "user2@example.com", "other"}
    assert value(samples, "relay_identity_sessions_total", identity="user1@example.com") == 2
    assert value(samples, "relay_identity_sessions_total", identity="other") == 4 + 5 + 6
    assert value(samples, "relay_identity_tokens_total", identity="user0@example.com") == 120
    assert value(samples, "relay_identity_tokens_total", identity="other") == 7


# -- which turn a first audio answers (decisions only, with a test clock) --------------------------------------


class Turns:
    """A SessionState fed upstream events at chosen times; reads the first-audio histogram from the exposition."""

    def __init__(self) -> None:
        self.now = 100.0
        self.metrics = RelayMetrics()
        self.state = SessionState(
            metrics=self.metrics,
            policy=SessionPolicy(),
            resampler_quality="low-latency",
            bounds=SessionBounds(max_message_bytes=1 << 20),
            clock=lambda: self.now,
        )

    def upstream(self, at: float, event_type: str, **fields: Any) -> Actions:
        self.now = 100.0 + at
        actions = self.state.from_upstream_text(json.dumps({"type": event_type, **fields}))
        if actions.first_audio:
            self.state.first_audio_forwarded()
        return actions

    def client(self, at: float, event_type: str) -> None:
        self.now = 100.0 + at
        self.state.from_client_text(json.dumps({"type": event_type}))

    def waits(self, trigger: str) -> tuple[Any, Any]:
        samples = parse_exposition(generate_latest(self.metrics.registry).decode())
        return (
            value(samples, "relay_response_first_audio_seconds_count", trigger=trigger),
            value(samples, "relay_response_first_audio_seconds_sum", trigger=trigger),
        )


def test_first_audio_is_recorded_when_handed_to_the_client() -> None:
    turns = Turns()
    turns.upstream(0.0, "input_audio_buffer.speech_stopped")
    turns.upstream(0.01, "response.created", response={"id": "r1"})
    turns.now = 100.5
    actions = turns.state.from_upstream_text(
        json.dumps({"type": "response.output_audio.delta", "response_id": "r1", "delta": "AAAA"})
    )
    assert actions.first_audio
    assert turns.waits("speech_stopped") == (0, 0)  # decided, not yet on the client socket
    turns.now = 100.502
    turns.state.first_audio_forwarded()
    assert turns.waits("speech_stopped") == (1, pytest.approx(0.502))
    assert turns.state.first_audio_waits == [pytest.approx(0.502)]


def test_first_audio_belongs_to_the_response_that_answers_the_turn() -> None:
    turns = Turns()
    turns.upstream(0.0, "input_audio_buffer.speech_stopped")
    turns.upstream(0.01, "response.created", response={"id": "r1"})
    turns.upstream(0.3, "response.output_audio.delta", response_id="r1", delta="AAAA")
    # The user speaks again while r1 still plays (no interruption): r1's later audio answers nothing new.
    turns.upstream(0.5, "input_audio_buffer.speech_started")
    turns.upstream(1.0, "input_audio_buffer.speech_stopped")
    turns.upstream(1.1, "response.output_audio.delta", response_id="r1", delta="AAAA")
    turns.upstream(1.2, "response.done", response={"id": "r1"})
    turns.upstream(1.25, "response.created", response={"id": "r2"})
    turns.upstream(1.7, "response.output_audio.delta", response_id="r2", delta="AAAA")
    assert turns.state.first_audio_waits == [pytest.approx(0.3), pytest.approx(0.7)]
    assert turns.waits("speech_stopped") == (2, pytest.approx(1.0))


def test_speaking_again_before_a_response_restarts_the_clock() -> None:
    turns = Turns()
    turns.upstream(0.0, "input_audio_buffer.speech_stopped")
    turns.upstream(0.2, "input_audio_buffer.speech_started")
    turns.upstream(1.0, "input_audio_buffer.speech_stopped")
    turns.upstream(1.01, "response.created", response={"id": "r1"})
    turns.upstream(1.4, "response.output_audio.delta", response_id="r1", delta="AAAA")
    assert turns.state.first_audio_waits == [pytest.approx(0.4)]


def test_a_response_without_audio_does_not_leave_its_turn_behind() -> None:
    turns = Turns()
    turns.client(0.0, "input_audio_buffer.commit")
    turns.upstream(0.01, "response.created", response={"id": "r1"})
    turns.upstream(0.5, "response.done", response={"id": "r1"})  # a text-only answer
    turns.client(5.0, "response.create")
    turns.upstream(5.01, "response.created", response={"id": "r2"})
    turns.upstream(5.3, "response.output_audio.delta", response_id="r2", delta="AAAA")
    assert turns.waits("commit") == (0, 0)
    assert turns.waits("response_create") == (1, pytest.approx(0.3))


def test_audio_after_g711_is_counted_at_8_khz() -> None:
    turns = Turns()
    g711 = {"type": "audio/pcmu"}
    turns.upstream(
        0.0, "session.updated", session={"audio": {"input": {"format": g711}, "output": {"format": g711}}}
    )
    turns.upstream(
        0.1, "response.output_audio.delta", response_id="r1", delta=base64.b64encode(b"\xff" * 8000).decode()
    )
    samples = parse_exposition(generate_latest(turns.metrics.registry).decode())
    assert value(samples, "relay_audio_seconds_total", direction="to_client") == pytest.approx(1.0)


# -- a session over real sockets -------------------------------------------------------------------------------


async def test_voice_turn_metrics_match_what_crossed_the_sockets(
    relay: ProxiedRelay, fake_upstream: FakeRealtimeServer
) -> None:
    client = await RealtimeClient.open(relay.ws_url)
    record = fake_upstream.connections[-1]
    audio = voiced_turn()
    await client.send_audio(audio, 24000)
    await client.wait_for("response.done")
    # rate_limits.updated follows response.done; wait until the client has everything the upstream sent.
    async with asyncio.timeout(5):
        while len(client.events) < len(record.sent) - 1:  # the relay holds one session.created back
            await asyncio.sleep(0.01)
    await client.close()
    samples = await wait_for_value(relay, "relay_sessions_total", 1, outcome="client_closed")

    assert value(samples, "relay_sessions_total", outcome="client_closed") == 1
    assert value(samples, "relay_sessions_active") == 0
    assert value(samples, "relay_session_duration_seconds_count") == 1
    assert value(samples, "relay_upstream_connect_seconds_count") == 1
    assert 0 < value(samples, "relay_upstream_connect_seconds_sum") < 2

    # Events: every type the upstream sent is counted under its own name, as the upstream named it.
    for event_type, count in Counter(record.sent_types()).items():
        assert value(samples, "relay_events_total", direction="to_client", type=event_type) == count
    appends = client.frames_sent
    assert (
        value(samples, "relay_events_total", direction="to_upstream", type="input_audio_buffer.append")
        == appends
    )
    assert value(samples, "relay_forward_latency_seconds_count", direction="to_upstream") == appends
    # One observation per upstream frame that reached the client (the held session.created reached it later).
    assert value(samples, "relay_forward_latency_seconds_count", direction="to_client") == len(client.events)

    # Bytes: exactly the payloads each side put on the wire.
    assert value(samples, "relay_bytes_total", direction="to_upstream") == client.bytes_sent
    upstream_bytes = sum(len(protocol.dumps(e).encode()) for e in record.sent)
    assert value(samples, "relay_bytes_total", direction="to_client") == upstream_bytes

    # Audio: the seconds the upstream received, and the seconds the client received.
    assert value(samples, "relay_audio_seconds_total", direction="to_upstream") == pytest.approx(
        len(record.input_audio) / 48000, abs=1e-9
    )
    heard = sum(
        len(base64.b64decode(e["delta"]))
        for _, e in client.events
        if e["type"] == "response.output_audio.delta"
    )
    assert heard > 0
    assert value(samples, "relay_audio_seconds_total", direction="to_client") == pytest.approx(
        heard / 48000, abs=1e-9
    )

    # Tokens: the usage details of response.done, by kind.
    _, done = await client.wait_for("response.done")
    usage = done["response"]["usage"]
    for side in ("input", "output"):
        details = usage[f"{side}_token_details"]
        for kind in ("text", "audio"):
            assert value(samples, "relay_tokens_total", kind=f"{side}_{kind}") == details[f"{kind}_tokens"]
    assert (
        sum(value(samples, "relay_tokens_total", kind=k) for k in TOKEN_KINDS if k != "input_cached")
        == usage["total_tokens"]
    )

    # Rate limits: the last values the upstream reported.
    limits = [e for _, e in client.events if e["type"] == "rate_limits.updated"]
    assert limits, "the simulated model reports rate limits after a response"
    for limit in limits[-1]["rate_limits"]:
        assert value(samples, "relay_upstream_rate_limit_remaining", name=limit["name"]) == limit["remaining"]

    assert value(samples, "relay_response_first_audio_seconds_count", trigger="speech_stopped") == 1
    assert value(samples, "relay_response_first_audio_seconds_count", trigger="commit") == 0
    assert not [e for _, e in client.events if e["type"] == "error"]


async def test_binary_frames_are_timed_with_their_resampling(
    relay: ProxiedRelay, fake_upstream: FakeRealtimeServer
) -> None:
    client = await RealtimeClient.open(relay.ws_url + "?input_rate=48000")
    record = fake_upstream.connections[-1]
    audio = voiced_turn(48000)
    await client.send_audio(audio, 48000, binary=True)
    await client.wait_for("response.done")
    await client.close()
    samples = await wait_for_value(relay, "relay_sessions_total", 1, outcome="client_closed")

    frames = client.frames_sent
    assert value(samples, "relay_resample_seconds_count", direction="to_upstream") == frames
    assert value(samples, "relay_forward_latency_seconds_count", direction="to_upstream") == frames
    assert (
        value(samples, "relay_events_total", direction="to_upstream", type="input_audio_buffer.append")
        == frames
    )
    assert value(samples, "relay_bytes_total", direction="to_upstream") == len(audio)
    resampling = value(samples, "relay_resample_seconds_sum", direction="to_upstream")
    forwarding = value(samples, "relay_forward_latency_seconds_sum", direction="to_upstream")
    # Each forward observation spans its frame's resampling, so the sums are ordered.
    assert 0 < resampling < forwarding
    # After the flush at close, the upstream has all the audio, and the counter says how much.
    await record.wait_closed()
    assert value(samples, "relay_audio_seconds_total", direction="to_upstream") == pytest.approx(
        len(record.input_audio) / 48000, abs=1e-9
    )
    assert len(record.input_audio) / 48000 == pytest.approx(len(audio) / 96000, abs=0.002)
    print(
        f"\nrelay overhead per frame, 48 kHz binary in: forward mean "
        f"{forwarding / frames * 1e6:.1f} µs, of which resampling {resampling / frames * 1e6:.1f} µs; "
        f"to_client mean {value(samples, 'relay_forward_latency_seconds_sum', direction='to_client') / value(samples, 'relay_forward_latency_seconds_count', direction='to_client') * 1e6:.1f} µs"
    )


# -- first audio -------------------------------------------------------------------------------------------------


class TurnClock:
    """The relay's clock in the first-audio tests, moved by what has happened rather than by time passing.

    It reads 100 until `turn_end()` says the model has received the end of the turn, 100.5 from then, and 1 s more
    once the client has the `response.created`. The relay reads it when the turn ends (just before it forwards the
    end of the turn), at the first audio delta (which the simulated model holds back `first_audio_delay` after
    response.created) and when that delta was handed to the client. So the right figure is exactly 1.5 s for a
    turn the client ends, and 1.0 s for server VAD (whose end the relay learns only from the model), however
    loaded the machine; a wait measured from a later event than the turn's end reads 1.0 s or less.
    """

    def __init__(self) -> None:
        self.turn_end: Callable[[], bool] = lambda: False
        self.client: RealtimeClient | None = None
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        created = self.client is not None and "response.created" in self.client.types()
        return 100.0 + (0.5 if self.turn_end() else 0.0) + (1.0 if created else 0.0)


async def _first_audio_turn(
    relay: ProxiedRelay,
    fake_upstream: FakeRealtimeServer,
    monkeypatch: pytest.MonkeyPatch,
    trigger: str,
    delay: float,
    output_rate: int,
) -> float:
    """Run one turn ended by `trigger`; return the relay's first-audio figure, read with a `TurnClock`."""
    clock = TurnClock()
    # Every session the app opens from now on gets this clock.
    monkeypatch.setattr(relay_app, "SessionState", functools.partial(SessionState, clock=clock))
    fake_upstream.options.first_audio_delay = delay
    client = await RealtimeClient.open(f"{relay.ws_url}?output_rate={output_rate}")
    clock.client = client
    record = fake_upstream.connections[-1]
    if trigger == "speech_stopped":
        await client.send_audio(voiced_turn(), 24000, paced=True)
    elif trigger == "commit":
        await client.send_event(
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
            }
        )
        await client.wait_for("session.updated")
        await client.send_audio(voiced_turn()[: 24000 * 2], 24000)
        clock.turn_end = lambda: "input_audio_buffer.commit" in record.received_types()
        await client.send_event({"type": "input_audio_buffer.commit"})
        # The turn ended at the commit: a response.create after it does not restart the wait.
        await record.wait_for_received("input_audio_buffer.commit")
        await client.send_event({"type": "response.create"})
    else:
        await client.send_event(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Hello there."}],
                },
            }
        )
        await client.wait_for("conversation.item.done")
        clock.turn_end = lambda: "response.create" in record.received_types()
        await client.send_event({"type": "response.create"})
    await client.wait_for("response.output_audio.delta")
    await client.wait_for("response.done")
    await client.close()
    samples = scrape(relay)
    assert value(samples, "relay_response_first_audio_seconds_count", trigger=trigger) == 1
    assert clock.reads >= 3, "the relay did not read the clock the test gave it"
    observed = value(samples, "relay_response_first_audio_seconds_sum", trigger=trigger)
    others = [t for t in FIRST_AUDIO_TRIGGERS if t != trigger]
    assert all(value(samples, "relay_response_first_audio_seconds_count", trigger=t) == 0 for t in others)
    return observed


@pytest.mark.parametrize(
    ("trigger", "output_rate", "expected"),
    [
        ("speech_stopped", 24000, 1.0),
        ("commit", 24000, 1.5),
        ("commit", 44100, 1.5),  # the first delta is resampled before it reaches the client
        ("response_create", 24000, 1.5),
    ],
)
async def test_first_audio_wait_is_accurate(
    relay: ProxiedRelay,
    fake_upstream: FakeRealtimeServer,
    monkeypatch: pytest.MonkeyPatch,
    trigger: str,
    output_rate: int,
    expected: float,
) -> None:
    """The wait runs from the end of the user's turn to the hand-off of the first audio, under its own trigger."""
    observed = await _first_audio_turn(relay, fake_upstream, monkeypatch, trigger, 0.3, output_rate)
    assert observed == pytest.approx(expected, abs=1e-9)


# -- errors and rejections ---------------------------------------------------------------------------------------


@pytest.mark.invalid_client_events
async def test_errors_and_rejections_are_counted_by_bounded_code(relay: ProxiedRelay) -> None:
    client = await RealtimeClient.open(relay.ws_url)
    await client.ws.send("{not json")
    await client.send_event({"type": "session.made_up"})
    await client.send_event({"type": "input_audio_buffer.commit"})  # nothing appended: the upstream refuses
    await client.wait_for("error", count=3)
    await client.close()
    with pytest.raises(InvalidStatus) as refused_model:
        await connect(relay.ws_url + "?model=not-a-model")
    with pytest.raises(InvalidStatus) as refused_rate:
        await connect(relay.ws_url + "?input_rate=7")
    assert refused_model.value.response.status_code == 403
    assert refused_rate.value.response.status_code == 400

    samples = scrape(relay)
    codes = sorted(e["error"]["code"] for _, e in client.events if e["type"] == "error")
    assert codes == ["input_audio_buffer_commit_empty", "invalid_value", "relay_bad_event"]
    for code in codes:
        assert value(samples, "relay_errors_total", code=code) == 1
    assert value(samples, "relay_rejected_connections_total", reason="model") == 1
    assert value(samples, "relay_rejected_connections_total", reason="bad_rate") == 1
    # Refused events were not forwarded, so they are not counted as events.
    assert value(samples, "relay_events_total", direction="to_upstream", type="other") == 0
    assert (
        value(samples, "relay_events_total", direction="to_upstream", type="input_audio_buffer.commit") == 1
    )


async def test_identity_series_when_the_label_is_on(relay_factory: RelayFactory) -> None:
    relay = await relay_factory(metrics_identity_label="true")
    for _ in range(2):
        client = await RealtimeClient.open(relay.ws_url)
        await client.close()
    samples = await wait_for_value(relay, "relay_sessions_total", 2, outcome="client_closed")
    [labels] = series(samples, "relay_identity_sessions_total")
    assert value(samples, "relay_identity_sessions_total", **labels) == 2
    assert series(samples, "relay_identity_tokens_total") == [labels]


# -- health ------------------------------------------------------------------------------------------------------


async def test_healthz_and_readyz(relay: ProxiedRelay) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as http:
        alive = await http.get("/healthz")
        ready = await http.get("/readyz")
        client = await RealtimeClient.open(relay.ws_url)
        busy = await http.get("/readyz")
        await client.close()
    assert alive.status_code == 200 and alive.json() == {"status": "alive"}
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["simulated"] is False
    assert busy.json()["sessions"] == 1


async def test_readyz_says_simulated_in_demo_mode(start_relay: RelayFactory) -> None:
    relay = await start_relay("--demo", api_key=None)
    async with httpx.AsyncClient() as http:
        body = (await http.get(f"{relay.base_url}/readyz")).json()
    assert body["simulated"] is True
    assert "SIMULATED" in body["note"]


async def test_readyz_is_503_while_draining(
    start_relay: RelayFactory, fake_upstream: FakeRealtimeServer
) -> None:
    relay = await start_relay(upstream_url=fake_upstream.url, drain_seconds="10")
    client = await RealtimeClient.open(relay.ws_url)
    relay.inner.process.send_signal(signal.SIGTERM)
    async with httpx.AsyncClient() as http:
        async with asyncio.timeout(5):
            while (ready := await http.get(f"{relay.base_url}/readyz")).status_code == 200:
                await asyncio.sleep(0.02)
        alive = await http.get(f"{relay.base_url}/healthz")
        with pytest.raises(InvalidStatus) as refused:
            await connect(relay.ws_url)
        exposition = (await http.get(relay.metrics_url)).text
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    assert alive.status_code == 200  # still alive: it is finishing sessions, not dead
    assert refused.value.response.status_code == 503
    samples = parse_exposition(exposition)
    assert value(samples, "relay_rejected_connections_total", reason="draining") == 1
    assert value(samples, "relay_sessions_active") == 1
    # The open session finishes on its own; then the process exits.
    await client.close()
    assert await asyncio.to_thread(relay.inner.process.wait, 10) == 0
