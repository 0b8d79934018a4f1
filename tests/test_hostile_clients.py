"""Broken and hostile clients against the relay as a process: none may outlive its limits, stall shutdown, or
spend past its budget. Every bound asserted here is the documented one plus a margin for a loaded machine."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import pytest
import websockets

from relay.bounds import END_GRACE_SECONDS, USAGE_GRACE_SECONDS
from relay.fake.server import ConnectionRecord, FakeRealtimeServer
from tests.stuck_client import StuckClient
from tests.test_access import next_event, opened
from tests.test_limits import ask_for_a_text_reply, bearer, until_closed

pytestmark = pytest.mark.slow

#: What a loaded 2-core machine may add to a bound (process scheduling, log writing).
MARGIN = 1.5
TOKEN = "hostile-test-token-0123456789"

SPOKEN_REPLY = [
    {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Tell me a story"}],
        },
    },
    {"type": "response.create"},
]


def closed_sessions(relay: Any) -> list[dict[str, Any]]:
    return [line for line in relay.inner.log_lines() if line.get("event") == "session_closed"]


async def session_summary(relay: Any, timeout: float = END_GRACE_SECONDS + 3) -> dict[str, Any]:
    """The one `session_closed` line, once the relay has finished closing both sides."""
    deadline = time.monotonic() + timeout
    while not (closed := closed_sessions(relay)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    [summary] = closed
    return summary


async def stuck_asking_for_audio(
    relay: Any, fake_upstream: FakeRealtimeServer, replies: int = 6
) -> tuple[StuckClient, Any]:
    """A client that asks for spoken replies at 48 kHz, then never reads; and its upstream connection record."""
    before = len(fake_upstream.connections)
    # Straight to the relay: the key-scanning proxy in front of it would buffer what the client does not read.
    stuck = StuckClient(relay.inner.ws_url + "?output_rate=48000")
    await stuck.connect()
    for _ in range(50):
        if len(fake_upstream.connections) > before:
            break
        await asyncio.sleep(0.05)
    record = fake_upstream.connections[-1]
    for count in range(1, replies + 1):  # one response at a time, as the API allows
        for event in SPOKEN_REPLY:
            stuck.send_text(json.dumps(event))
        await stuck.drain()
        done = asyncio.ensure_future(record.wait_for_sent("response.done", timeout=10, count=count))
        closed = asyncio.ensure_future(record.closed.wait())
        await asyncio.wait({done, closed}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (done, closed):
            waiter.cancel()
        if record.closed.is_set():  # the relay already ended it (a short stall bound)
            break
    # The upstream answered with far more audio than the client's socket takes without reading.
    audio = sum(len(e.get("delta", "")) for e in record.sent if e["type"] == "response.output_audio.delta")
    assert audio > 100_000, audio
    return stuck, record


async def test_idle_timer_ends_a_client_that_stopped_reading(
    start_relay: Any, fake_upstream: FakeRealtimeServer
) -> None:
    relay = await start_relay(
        upstream_url=fake_upstream.url,
        idle_timeout_seconds="2",
        client_stall_seconds="60",
        heartbeat_seconds="60",
    )
    stuck, record = await stuck_asking_for_audio(relay, fake_upstream)
    quiet_from = time.monotonic()
    await record.wait_closed(timeout=2 + END_GRACE_SECONDS + 5)
    waited = time.monotonic() - quiet_from
    stuck.close()
    assert waited < 2 + END_GRACE_SECONDS + MARGIN, waited
    assert (await session_summary(relay))["outcome"] == "limit"


async def test_session_length_ends_a_client_that_keeps_sending_but_never_reads(
    start_relay: Any, fake_upstream: FakeRealtimeServer
) -> None:
    relay = await start_relay(
        upstream_url=fake_upstream.url,
        max_session_seconds="3",
        client_stall_seconds="60",
        heartbeat_seconds="60",
    )
    started = time.monotonic()
    stuck, record = await stuck_asking_for_audio(relay, fake_upstream)
    frame = json.dumps({"type": "input_audio_buffer.append", "audio": "AAAA" * 320})

    async def keep_sending() -> None:
        while True:
            stuck.send_text(frame)
            await asyncio.sleep(0.02)

    sender = asyncio.create_task(keep_sending())
    try:
        await record.wait_closed(timeout=3 + END_GRACE_SECONDS + 5)
        ended = time.monotonic() - started
        audio_at_close = len(record.input_audio)
        await asyncio.sleep(1)
    finally:
        sender.cancel()
        stuck.close()
    assert ended < 3 + END_GRACE_SECONDS + MARGIN, ended
    # Nothing more reached the paid upstream once the session was over.
    assert len(record.input_audio) == audio_at_close
    assert (await session_summary(relay))["outcome"] == "limit"


async def test_a_client_that_does_not_read_is_closed_1013_within_the_stall_bound(
    start_relay: Any, fake_upstream: FakeRealtimeServer
) -> None:
    relay = await start_relay(
        upstream_url=fake_upstream.url, client_stall_seconds="1", heartbeat_seconds="60"
    )
    stuck, record = await stuck_asking_for_audio(relay, fake_upstream)
    await record.wait_closed(timeout=1 + END_GRACE_SECONDS + 5)
    stuck.close()
    closed = await session_summary(relay)
    assert closed["close_code"] == 1013 and closed["outcome"] == "client_slow"
    slow = [line for line in relay.inner.log_lines() if line.get("event") == "client_too_slow"]
    assert len(slow) == 1 and "RELAY_CLIENT_STALL_SECONDS" in slow[0]["problem"]
    # A good client is unaffected: it gets its whole reply.
    async with opened(relay.ws_url) as ws:
        await next_event(ws)
        await ask_for_a_text_reply(ws)
        while (await next_event(ws, timeout=10))["type"] != "response.done":
            pass


async def test_sigterm_drains_live_sessions_and_a_client_that_never_reads(
    start_relay: Any, fake_upstream: FakeRealtimeServer
) -> None:
    drain = 1.0
    relay = await start_relay(
        upstream_url=fake_upstream.url,
        drain_seconds=str(drain),
        client_stall_seconds="60",
        heartbeat_seconds="60",
        max_sessions="30",
        max_sessions_per_identity="30",
    )
    clients = [await websockets.connect(relay.ws_url) for _ in range(20)]
    try:
        for ws in clients:
            assert (await next_event(ws))["type"] == "session.created"
        stuck, _ = await stuck_asking_for_audio(relay, fake_upstream)
        signalled = time.monotonic()
        relay.inner.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(relay.inner.process.wait, drain + 10)
        took = time.monotonic() - signalled
        assert code == 0
        assert took <= drain + 2 + 0.5, took  # the promise is drain + 2 s; 0.5 s for this test's own polling
        for ws in clients:
            events, close_code = await until_closed(ws, timeout=2)
            assert close_code == 1001
            assert events[-1]["error"]["code"] == "relay_shutting_down"
        stuck.close()
    finally:
        for ws in clients:
            await ws.close()
    assert len(closed_sessions(relay)) == 21


async def test_hanging_up_before_response_done_still_spends_the_budget(
    start_relay: Any, fake_upstream: FakeRealtimeServer
) -> None:
    budget = 600
    relay = await start_relay(
        upstream_url=fake_upstream.url, access_tokens=TOKEN, daily_token_budget=str(budget)
    )
    billed: list[int] = []
    refusal = None
    for _ in range(30):
        try:
            ws = await websockets.connect(relay.ws_url, additional_headers=bearer(TOKEN))
        except websockets.InvalidStatus as exc:
            refusal = exc.response
            break
        record: ConnectionRecord = await fake_upstream.wait_for_connection()
        await next_event(ws)
        for event in SPOKEN_REPLY:
            await ws.send(json.dumps(event))
        while (await next_event(ws, timeout=10))["type"] != "response.output_audio.done":
            pass
        await ws.close()  # before response.done: the answer was heard, the bill not yet seen
        done = await record.wait_for_sent("response.done", timeout=USAGE_GRACE_SECONDS + 5)
        billed.append(done["response"]["usage"]["total_tokens"])
        await record.wait_closed(timeout=USAGE_GRACE_SECONDS + 5)
    assert refusal is not None and refusal.status_code == 429, billed
    assert "RELAY_DAILY_TOKEN_BUDGET" in refusal.body.decode()
    # Admitted only while what the upstream billed was under the budget: the session that crossed it was the last.
    crossed = next(i for i in range(len(billed)) if sum(billed[: i + 1]) >= budget)
    assert len(billed) == crossed + 1, billed


async def test_pending_events_are_bounded_in_bytes_while_the_upstream_connects(
    start_relay: Any, fake_upstream: FakeRealtimeServer
) -> None:
    fake_upstream.options.handshake_delay = 3
    relay = await start_relay(
        upstream_url=fake_upstream.url, pending_bytes_limit=str(1024 * 1024), audio_ahead_seconds="600"
    )
    frame_audio = "AAAA" * (700_000 // 4)  # 525 kB of PCM per frame, 11 s at 24 kHz
    rss_before = _rss_bytes(relay.inner.process.pid)
    async with opened(relay.ws_url, max_size=None) as ws:
        senders = asyncio.gather(
            *(
                ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": frame_audio}))
                for _ in range(12)
            )
        )
        await asyncio.sleep(2)  # the upstream handshake is still stalled
        held = _rss_bytes(relay.inner.process.pid) - rss_before
        await senders
        record = await fake_upstream.wait_for_connection(timeout=10)
        await record.wait_for_received("input_audio_buffer.append", count=12, timeout=15)
    # 8.4 MB were sent; the relay held at most its 1 MiB bound plus one message being read and parsing slack.
    assert held < 5 * 1024 * 1024, held
    assert len(record.input_audio) == 12 * 525_000


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_a_client_that_does_not_answer_pings_is_ended(
    start_relay: Any, fake_upstream: FakeRealtimeServer
) -> None:
    relay = await start_relay(
        upstream_url=fake_upstream.url, heartbeat_seconds="1", client_stall_seconds="60"
    )
    stuck = StuckClient(relay.inner.ws_url)
    await stuck.connect()
    record = await fake_upstream.wait_for_connection()
    started = time.monotonic()
    await record.wait_closed(timeout=10)
    waited = time.monotonic() - started
    stuck.close()
    # A ping after 1 s, unanswered for 1 s more, then both sides closed.
    assert waited < 2 + END_GRACE_SECONDS + MARGIN, waited


@pytest.mark.invalid_client_events
async def test_refused_messages_are_counted_in_utf8_bytes(
    start_relay: Any, fake_upstream: FakeRealtimeServer
) -> None:
    relay = await start_relay(upstream_url=fake_upstream.url, max_message_bytes="1024")
    async with opened(relay.ws_url) as ws:
        await next_event(ws)
        # 350 characters, 1,050 bytes: over a 1,024-byte limit that a character count would pass.
        await ws.send(json.dumps({"type": "conversation.item.create", "pad": "語" * 350}, ensure_ascii=False))
        error = (await next_event(ws))["error"]
        assert error["code"] == "relay_limit_exceeded" and "UTF-8" in error["message"]
        await ws.send(json.dumps({"type": "conversation.item.create", "pad": "語" * 300}, ensure_ascii=False))
        record = fake_upstream.connections[-1]
        await record.wait_for_received("conversation.item.create")


async def test_audio_sent_much_faster_than_real_time_is_read_at_real_time(
    start_relay: Any, fake_upstream: FakeRealtimeServer
) -> None:
    relay = await start_relay(upstream_url=fake_upstream.url, audio_ahead_seconds="1")
    frame = json.dumps({"type": "input_audio_buffer.append", "audio": "AAAA" * 320})  # 20 ms at 24 kHz
    async with opened(relay.ws_url) as ws:
        await next_event(ws)
        record = fake_upstream.connections[-1]
        started = time.monotonic()
        for _ in range(200):  # 4 s of audio, sent as fast as the socket takes it
            await ws.send(frame)
        sent_in = time.monotonic() - started
        await record.wait_for_received("input_audio_buffer.append", count=200, timeout=15)
        arrived_in = time.monotonic() - started
    # One second may run ahead; the other three arrive at real-time speed, not at the client's.
    assert sent_in < 1.5, sent_in
    assert 3 - 0.3 < arrived_in < 3 + MARGIN + 1, arrived_in
