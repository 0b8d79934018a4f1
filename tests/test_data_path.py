"""The data path at its edges, over real sockets: the resampler's held-back audio, the frames held while the
upstream connects, the close codes the upstream chooses, and the order of the door's limits.

Unit-level companions (the resampler reset on `input_audio_buffer.clear`, the filter's DC gain) are here too, as
they decide what audio reaches the model.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import cast

import numpy as np
import pytest
import websockets
from starlette.websockets import WebSocket
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import InvalidMessage, InvalidStatus
from websockets.http11 import Response

from relay.audio import make_resampler, measure
from relay.audio.fir import filter_bank, kaiser_beta, low_latency_spec
from relay.bounds import SessionBounds
from relay.client_outbox import ClientOutbox
from relay.fake.server import FakeRealtimeServer
from relay.metrics import RelayMetrics
from relay.session import RelaySession
from relay.upstream import classify_failure, describe_endpoint, lost_connection
from relay.wire.frames import OP_TEXT
from relay.wire.link import FrameLink
from tests.conftest import TEST_API_KEY, ProxiedRelay
from tests.test_access import OTHER_TOKEN, TOKEN, next_event, opened, refused
from tests.test_boundaries import exported
from tests.test_limits import ask_for_a_text_reply, bearer, until_closed
from tests.test_session_state import make_state, pcm, sent

RelayFactory = Callable[..., Awaitable[ProxiedRelay]]

# -- the input resampler: cleared with the buffer, flushed at the end -------------------------------------------


def test_clear_drops_the_audio_the_resampler_holds() -> None:
    state = make_state(input_rate=48000)
    state.from_client_bytes(pcm(960, 48000))
    clear = state.from_client_text('{"type":"input_audio_buffer.clear"}')
    assert clear.to_upstream == ['{"type":"input_audio_buffer.clear"}']
    # Nothing spoken before the clear may reach the model afterwards, neither at a commit nor at the end.
    commit = state.from_client_text('{"type":"input_audio_buffer.commit"}')
    assert [e["type"] for e in sent(commit.to_upstream)] == ["input_audio_buffer.commit"]
    assert state.finish() == []


def test_without_a_clear_the_held_audio_goes_up_before_the_commit() -> None:
    """The counterpart of the test above: there is audio held back to lose."""
    state = make_state(input_rate=48000)
    state.from_client_bytes(pcm(960, 48000))
    commit = state.from_client_text('{"type":"input_audio_buffer.commit"}')
    assert [e["type"] for e in sent(commit.to_upstream)] == [
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
    ]


async def test_a_client_that_leaves_still_delivers_its_last_audio(
    relay: ProxiedRelay, fake_upstream: FakeRealtimeServer
) -> None:
    frames, samples = 10, 960  # 200 ms at 48 kHz
    async with opened(f"{relay.ws_url}?input_rate=48000") as ws:
        assert (await next_event(ws))["type"] == "session.created"
        record = fake_upstream.connections[-1]
        for n in range(frames):
            await ws.send(pcm(samples, 48000, freq=300.0 + n))
    await record.wait_closed()
    # Everything sent, resampled to 24 kHz, including what the resampler held when the client left.
    assert abs(len(record.input_audio) // 2 - frames * samples // 2) <= 1


# -- the low-pass filter: unity gain at DC on every phase -------------------------------------------------------


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(44100, 24000), (16000, 24000), (24000, 44100), (11025, 24000)]
)
def test_a_constant_signal_keeps_its_level_at_every_output_phase(in_rate: int, out_rate: int) -> None:
    filter_bank.cache_clear()  # design the filter here, not in whichever test ran first
    resampler = make_resampler(in_rate, out_rate)
    level = 30000
    out = np.frombuffer(resampler.process(np.full(in_rate // 5, level, "<i2").tobytes()), "<i2")
    bank = getattr(resampler, "bank")  # noqa: B009 - the low-latency resampler publishes its filter bank
    settled = out[int(np.ceil(2 * bank.taps * out_rate / in_rate)) + 2 :]
    assert len(settled) > 1000
    assert settled.min() == settled.max() == level
    # Each phase of the filter sums to one, so no phase-dependent ripple is added to any signal.
    np.testing.assert_allclose(bank.rows.astype(np.float64).sum(axis=1), 1.0, atol=2e-6)


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(44099, 24000), (24000, 47999), (11025, 24000), (32000, 24000)]
)
def test_rarer_rate_pairs_are_as_clean_as_the_common_ones(in_rate: int, out_rate: int) -> None:
    """Pairs with long phase cycles take the gathered (and, past 4096 phases, quantised) path of the filter."""
    filter_bank.cache_clear()
    make = partial(make_resampler, in_rate, out_rate, "low-latency")
    assert measure.tone_snr_db(make, 1000.0) >= 80
    assert measure.flatness_db(make) <= 0.5
    assert measure.alias_rejection_db(make) >= 60
    # Every sample arrives, on the input's time axis.
    samples = in_rate // 3
    resampler = make()
    out = resampler.process(measure.tone(440, in_rate, samples / in_rate).tobytes()) + resampler.flush()
    assert abs(len(out) // 2 - round(samples * out_rate / in_rate)) <= 1


@pytest.mark.parametrize(
    ("attenuation", "beta"),
    [
        (80.0, 0.1102 * 71.3),
        (51.0, 0.1102 * 42.3),
        (50.0, 0.5842 * 29**0.4 + 0.07886 * 29),
        (21.5, 0.5842 * 0.5**0.4 + 0.07886 * 0.5),
        (21.0, 0.0),
        (20.0, 0.0),
    ],
)
def test_the_kaiser_window_follows_kaisers_formula(attenuation: float, beta: float) -> None:
    assert kaiser_beta(attenuation) == pytest.approx(beta, rel=1e-12)


def test_the_low_pass_band_edges_follow_the_rate_pair() -> None:
    down = low_latency_spec(48000, 24000)
    assert (down.passband_hz, down.stopband_hz, down.attenuation_db) == (9000.0, 12000.0, 80.0)
    up = low_latency_spec(16000, 24000)
    assert (up.passband_hz, up.stopband_hz) == (6400.0, 9600.0)
    assert low_latency_spec(24000, 48000).stopband_hz == 14400.0
    assert low_latency_spec(22050, 24000).stopband_hz == 12000.0
    assert down.cutoff_hz == 10500.0


# -- frames held while the upstream connects --------------------------------------------------------------------


@pytest.mark.parametrize("held", [3, 4])
async def test_events_held_while_connecting_all_arrive_after_session_created(
    relay_factory: RelayFactory, fake_upstream: FakeRealtimeServer, held: int
) -> None:
    """With RELAY_PENDING_EVENTS_LIMIT=3, at the limit and one past it nothing is lost and session.created comes
    first; the relay's answer to a bad frame sent meanwhile waits for it."""
    fake_upstream.options.handshake_delay = 1.5
    relay = await relay_factory(pending_events_limit="3")
    async with opened(relay.ws_url) as ws:
        record = await fake_upstream.wait_for_connection()
        for _ in range(held):
            await ws.send('{"type":"input_audio_buffer.clear"}')
        await ws.send("{not json")
        assert (await next_event(ws))["type"] == "session.created"
        while (event := await next_event(ws))["type"] != "error":
            pass
        assert event["error"]["code"] == "relay_bad_event"
        await record.wait_for_received("input_audio_buffer.clear", count=held)


# -- close codes chosen by the upstream -------------------------------------------------------------------------


@asynccontextmanager
async def closing_upstream(code: int | None) -> AsyncIterator[str]:
    """A Realtime-like upstream that opens a session, then closes with `code` (None: a close frame without one)."""

    async def handler(ws: ServerConnection) -> None:
        session = {"id": "sess_1", "type": "realtime", "object": "realtime.session"}
        await ws.send(json.dumps({"type": "session.created", "event_id": "event_1", "session": session}))
        async for message in ws:  # the relay applies its session defaults first
            if json.loads(message)["type"] == "session.update":
                await ws.send(
                    json.dumps({"type": "session.updated", "event_id": "event_2", "session": session})
                )
                break
        if code is None:
            async with ws.send_context():
                ws.protocol.send_close()
        else:
            await ws.close(code, "upstream says so")

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/realtime"


@pytest.mark.parametrize(
    ("upstream_code", "client_code"),
    [
        (1000, 1000),
        (1001, 1001),
        (3000, 3000),  # the first registered application code
        (4000, 4000),  # private use: an upstream's own reasons
        (4999, 4999),  # the last code a server may send
        (None, 1000),  # 1005 "no status" may never be sent on the wire
    ],
)
async def test_the_upstreams_close_code_reaches_the_client(
    relay_factory: RelayFactory, upstream_code: int | None, client_code: int
) -> None:
    async with closing_upstream(upstream_code) as url:
        relay = await relay_factory(upstream_url=url)
        async with opened(relay.ws_url) as ws:
            events, code = await until_closed(ws)
    assert [e["type"] for e in events] == ["session.created"]
    assert code == client_code
    if upstream_code is not None:
        assert ws.close_reason == "upstream says so"


@pytest.mark.parametrize("upstream_code", [1002, 1011, 1014])
async def test_an_upstream_failing_with_a_protocol_code_is_reported_as_unavailable(
    relay_factory: RelayFactory, upstream_code: int
) -> None:
    """Codes about the upstream's own failure (1002, 1011, 1014) say nothing a client can act on: 4502 says retry.

    (With roll-over on, the relay first tries new upstreams: tests/test_rollover.py.)"""
    async with closing_upstream(upstream_code) as url:
        relay = await relay_factory(upstream_url=url, rollover_retries="0")
        async with opened(relay.ws_url) as ws:
            events, code = await until_closed(ws)
    assert [e["type"] for e in events] == ["session.created", "error"]
    assert events[-1]["error"]["code"] == "relay_upstream_unavailable"
    assert code == 4502


async def test_an_upstream_close_reason_never_carries_the_key_and_the_end_is_counted(
    relay_factory: RelayFactory,
) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(
            json.dumps({"type": "session.created", "event_id": "event_1", "session": {"type": "realtime"}})
        )
        await ws.close(4000, f"bad key {TEST_API_KEY}")

    async with serve(handler, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/realtime"
        relay = await relay_factory(upstream_url=url, instructions="", voice="")
        async with opened(relay.ws_url) as ws:
            _, code = await until_closed(ws)
    assert (code, ws.close_reason) == (4000, "bad key [redacted]")
    samples = relay.inner.metrics.registry
    assert samples.get_sample_value("relay_sessions_total", {"outcome": "upstream_closed"}) == 1


async def test_errors_of_the_upstream_are_server_errors_and_the_relays_own_are_not(
    relay: ProxiedRelay, fake_upstream: FakeRealtimeServer
) -> None:
    async with opened(relay.ws_url) as ws:
        assert (await next_event(ws))["type"] == "session.created"
        [session] = relay.inner.runtime.sessions
        session.terminate("relay_shutting_down", "Connect again in a few seconds.", 1001, "server_shutdown")
        events, code = await until_closed(ws)
    assert code == 1001
    assert [e["error"]["type"] for e in events if e["type"] == "error"] == ["invalid_request_error"]
    fake_upstream.options.refuse_status = 503
    async with opened(relay.ws_url) as ws:
        events, code = await until_closed(ws)
    assert code == 4502
    assert [(e["error"]["code"], e["error"]["type"]) for e in events] == [
        ("relay_upstream_unavailable", "server_error")
    ]


# -- what the client is told about the upstream -----------------------------------------------------------------


def test_the_upstream_is_named_without_credentials_or_query() -> None:
    assert describe_endpoint("wss://user:secret@api.example:8443/v1/realtime?model=m&key=k") == (
        "wss://api.example:8443/v1/realtime"
    )
    assert describe_endpoint("wss://api.example/v1/realtime") == "wss://api.example/v1/realtime"
    assert describe_endpoint("wss:///v1/realtime") == "wss://?/v1/realtime"


@pytest.mark.parametrize(
    ("exc", "code", "close_code", "reason", "says"),
    [
        (TimeoutError(), "relay_upstream_timeout", 4504, "timeout", "within 2.5 s"),
        (
            ConnectionRefusedError(111, "Connection refused"),
            "relay_upstream_unavailable",
            4502,
            "unreachable",
            ": Connection refused.",
        ),
        (OSError(), "relay_upstream_unavailable", 4502, "unreachable", ": OSError."),
        (
            InvalidMessage("bad"),
            "relay_upstream_unavailable",
            4502,
            "handshake",
            "handshake (InvalidMessage)",
        ),
        (RuntimeError("odd"), "relay_upstream_unavailable", 4502, "error", "failed (RuntimeError)"),
    ],
)
def test_each_way_the_upstream_fails_is_told_apart(
    exc: BaseException, code: str, close_code: int, reason: str, says: str
) -> None:
    failure = classify_failure(exc, "wss://api.example/v1/realtime?model=m", 2.5)
    assert (failure.code, failure.close_code, failure.reason) == (code, close_code, reason)
    assert "(wss://api.example/v1/realtime)" in failure.message and says in failure.message
    assert str(failure) == failure.message


#: What each refusal status becomes: the client's error code and close code, and the bounded reason label.
REFUSALS = {
    401: ("relay_upstream_auth_failed", 4401, "http_401"),
    403: ("relay_upstream_auth_failed", 4401, "http_403"),
    429: ("relay_upstream_rate_limited", 4429, "http_429"),
    404: ("relay_upstream_unavailable", 4502, "http_4xx"),
    500: ("relay_upstream_unavailable", 4502, "http_5xx"),
    599: ("relay_upstream_unavailable", 4502, "http_5xx"),
}


def test_each_refusal_status_is_told_apart() -> None:
    for status, expected in REFUSALS.items():
        failure = classify_failure(
            InvalidStatus(Response(status, "refused", Headers(), b"")), "wss://h/v1", 5
        )
        assert (failure.code, failure.close_code, failure.reason) == expected, status
        assert f"HTTP {status}" in failure.message


def test_a_lost_connection_is_told_as_dropped() -> None:
    lost = lost_connection("wss://api.example/v1/realtime?model=m")
    assert (lost.code, lost.close_code, lost.reason) == ("relay_upstream_unavailable", 4502, "dropped")
    assert "(wss://api.example/v1/realtime) was lost mid-session" in lost.message


# -- the door's limits: the budget is asked before a slot is taken ------------------------------------------------


async def test_a_client_refused_for_its_budget_holds_no_session_slot(relay_factory: RelayFactory) -> None:
    relay = await relay_factory(
        access_tokens=f"{TOKEN},{OTHER_TOKEN}", daily_token_budget="1", max_sessions="1"
    )
    async with opened(relay.ws_url, additional_headers=bearer(TOKEN)) as ws:
        await next_event(ws)
        await ask_for_a_text_reply(ws)
        _, code = await until_closed(ws)
    assert code == 1008
    for _ in range(3):
        spent = await refused(relay.ws_url, additional_headers=bearer(TOKEN))
        spent.says(429, "relay_limit_exceeded", "RELAY_DAILY_TOKEN_BUDGET")
    # The only slot is still free for someone else.
    async with opened(relay.ws_url, additional_headers=bearer(OTHER_TOKEN)) as other:
        assert (await next_event(other))["type"] == "session.created"
    # And while it is taken, the full relay says so to the next identity with a budget.
    async with opened(relay.ws_url, additional_headers=bearer(OTHER_TOKEN)) as other:
        await next_event(other)
        full = await refused(relay.ws_url, additional_headers=bearer(OTHER_TOKEN))
        assert full.status == 503 and full.body["error"]["code"] == "relay_limit_exceeded"


async def test_websockets_reports_a_codeless_close_as_1005() -> None:
    async with closing_upstream(None) as url, websockets.connect(url) as ws:
        await ws.recv()
        await ws.send('{"type": "session.update", "session": {"type": "realtime"}}')
        await ws.recv()
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 1005


# -- first audio that never reached the client ------------------------------------------------------------------


class _GoneTransport:
    """The transport of a client connection that is already gone."""

    def write(self, data: bytes | memoryview) -> None:
        raise AssertionError("nothing may be written to a closed connection")

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return True

    def abort(self) -> None:
        pass


async def test_a_first_audio_the_client_never_got_is_not_timed() -> None:
    metrics = RelayMetrics()
    state = make_state(metrics=metrics)
    session = RelaySession(
        cast(WebSocket, None),
        state,
        session_id="rs_test",
        identity="anonymous",
        upstream_url="ws://127.0.0.1:9/v1/realtime",
        api_key=TEST_API_KEY,
        connect_timeout=5,
        bounds=SessionBounds(),
        metrics=metrics,
    )
    link = FrameLink(
        cast(asyncio.Transport, _GoneTransport()),
        session,
        masking=False,
        max_message=1 << 20,
        hard_limit=1 << 24,
        heartbeat=0,
        close_grace=1,
    )
    link.connection_lost(None)
    session._client, session._outbox = link, ClientOutbox(link, SessionBounds(), on_overflow=lambda why: None)
    upstream_events = [
        {"type": "session.created", "event_id": "e1", "session": {"type": "realtime", "id": "sess_1"}},
        {
            "type": "response.created",
            "event_id": "e2",
            "response": {"id": "resp_1", "object": "realtime.response"},
        },
        {
            "type": "response.output_audio.delta",
            "event_id": "e3",
            "response_id": "resp_1",
            "item_id": "item_1",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(bytes(4800)).decode(),
        },
    ]
    state.from_client_text(json.dumps({"type": "response.create"}))
    session._client_left = True  # upstream events are still read for their usage
    for event in upstream_events:
        session._from_upstream(OP_TEXT, json.dumps(event).encode(), None)
    assert state.turns == 1  # the turn was answered with audio ...
    # ... which the client never received, so no wait for it is on record.
    assert exported(metrics, "relay_response_first_audio_seconds_count", trigger="response_create") == 0
