"""Limits: concurrent sessions in all and per identity, the daily token budget, session length and idle timers,
and the message size limit. The bookkeeping is tested directly, then each limit is reached over real sockets.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from relay.fake.server import FakeRealtimeServer
from relay.limits import SessionSlots, SessionTimers, TokenBudget
from tests.conftest import ProxiedRelay
from tests.test_access import OTHER_TOKEN, TOKEN, next_event, opened, refused, rejections

# -- bookkeeping, without sockets -----------------------------------------------------------------------------


def test_slots_count_in_all_and_per_identity() -> None:
    slots = SessionSlots(max_sessions=3, max_per_identity=2)
    assert slots.acquire("a") is None and slots.acquire("a") is None
    per_identity = slots.acquire("a")
    assert per_identity is not None and per_identity.status == 429
    assert per_identity.reason == "identity_sessions" and per_identity.headers["Retry-After"] == "30"
    assert "RELAY_MAX_SESSIONS_PER_IDENTITY" in per_identity.message and "Close one" in per_identity.message
    assert slots.acquire("b") is None
    full = slots.acquire("c")
    assert full is not None and full.status == 503 and full.reason == "capacity"
    assert "RELAY_MAX_SESSIONS" in full.message and "try again" in full.message
    slots.release("a")
    assert slots.total == 2 and slots.count("a") == 1
    assert slots.acquire("c") is None
    slots.release("nobody")  # a release without an acquire changes nothing
    assert slots.total == 3


def test_budget_is_per_identity_per_utc_day() -> None:
    start = dt.datetime(2026, 3, 1, 22, 30, tzinfo=dt.UTC).timestamp()
    now = [start]
    budget = TokenBudget(1000, clock=lambda: now[0])
    assert budget.spend("a", 600) is None
    assert budget.denial("a") is None
    ended = budget.spend("a", 500)
    assert ended is not None and "RELAY_DAILY_TOKEN_BUDGET" in ended and "00:00 UTC" in ended
    assert budget.spent("a") == 1100 and budget.spent("b") == 0
    denial = budget.denial("a")
    assert denial is not None and denial.status == 429 and denial.reason == "token_budget"
    assert denial.headers["Retry-After"] == str(90 * 60)
    assert "in 1 h 30 min" in denial.message and "connect again then" in denial.message
    assert budget.denial("b") is None
    now[0] = start + 90 * 60  # midnight UTC: a new day for everyone
    assert budget.denial("a") is None and budget.spent("a") == 0
    assert budget.seconds_until_reset() == 86400


def test_zero_budget_means_unlimited() -> None:
    budget = TokenBudget(0)
    assert budget.spend("a", 10**9) is None and budget.denial("a") is None


def test_timers_decide_length_and_idleness() -> None:
    timers = SessionTimers(max_session_seconds=60, idle_timeout_seconds=10, started=100.0)
    assert timers.check(105.0, last_activity=100.0) is None
    assert timers.seconds_to_next_check(105.0, last_activity=100.0) == 5.0
    idle = timers.check(110.0, last_activity=100.0)
    assert idle is not None and idle.setting == "RELAY_IDLE_TIMEOUT_SECONDS" and "10 s" in idle.message
    assert timers.check(155.0, last_activity=150.0) is None
    assert timers.seconds_to_next_check(155.0, last_activity=150.0) == 5.0  # the length ends first
    ended = timers.check(160.0, last_activity=159.0)
    assert ended is not None and ended.setting == "RELAY_MAX_SESSION_SECONDS" and "1 min" in ended.message
    assert timers.seconds_to_next_check(170.0, last_activity=100.0) == 0.0


# -- each limit over real sockets -----------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def until_closed(ws: ClientConnection, timeout: float = 10) -> tuple[list[dict[str, Any]], int]:
    """Every event until the relay closes the socket, and the close code."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                events.append(json.loads(await ws.recv()))
    assert ws.close_code is not None
    return events, ws.close_code


def limit_error(events: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert errors, [e["type"] for e in events]
    assert errors[-1]["code"] == "relay_limit_exceeded"
    return dict(errors[-1])


async def test_session_limits_at_the_door(relay_factory: Any) -> None:
    relay: ProxiedRelay = await relay_factory(
        access_tokens=f"{TOKEN},{OTHER_TOKEN}", max_sessions="2", max_sessions_per_identity="1"
    )
    async with opened(relay.ws_url, additional_headers=bearer(TOKEN)) as first:
        await next_event(first)
        same = await refused(relay.ws_url, additional_headers=bearer(TOKEN))
        same.says(429, "relay_limit_exceeded", "RELAY_MAX_SESSIONS_PER_IDENTITY", "Close one")
        assert same.headers["Retry-After"] == "30"
        async with opened(relay.ws_url, additional_headers=bearer(OTHER_TOKEN)) as second:
            await next_event(second)
            full = await refused(relay.ws_url, additional_headers=bearer(TOKEN))
            full.says(503, "relay_limit_exceeded", "RELAY_MAX_SESSIONS", "try again")
            assert full.headers["Retry-After"] == "30"
    # Slots come back when sessions end.
    for _ in range(50):
        if relay.inner.runtime.sessions == set():
            break
        await asyncio.sleep(0.02)
    async with opened(relay.ws_url, additional_headers=bearer(TOKEN)) as again:
        assert (await next_event(again))["type"] == "session.created"
    assert rejections(relay, "identity_sessions") == 1
    assert rejections(relay, "capacity") == 1


async def test_an_unauthenticated_client_learns_nothing_about_capacity(relay_factory: Any) -> None:
    relay: ProxiedRelay = await relay_factory(access_tokens=TOKEN, max_sessions="1")
    async with opened(relay.ws_url, additional_headers=bearer(TOKEN)) as ws:
        await next_event(ws)
        (await refused(relay.ws_url)).says(401, "missing_token")


async def test_idle_session_is_closed(relay_factory: Any) -> None:
    relay: ProxiedRelay = await relay_factory(idle_timeout_seconds="1")
    async with opened(relay.ws_url) as ws:
        started = time.monotonic()
        # Client events keep the session alive past the idle limit...
        while time.monotonic() - started < 1.6:
            await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            await asyncio.sleep(0.3)
        assert ws.close_code is None
        quiet_from = time.monotonic()
        events, code = await until_closed(ws)
        waited = time.monotonic() - quiet_from
    # ...and silence ends it.
    error = limit_error(events)
    assert "RELAY_IDLE_TIMEOUT_SECONDS" in error["message"] and "Connect again" in error["message"]
    assert code == 1008
    assert 0.6 < waited < 3


async def test_session_length_is_capped_even_when_active(relay_factory: Any) -> None:
    relay: ProxiedRelay = await relay_factory(max_session_seconds="1", idle_timeout_seconds="60")
    async with opened(relay.ws_url) as ws:

        async def keep_talking() -> None:
            while True:
                await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
                await asyncio.sleep(0.2)

        talker = asyncio.create_task(keep_talking())
        try:
            events, code = await until_closed(ws)
        finally:
            talker.cancel()
    error = limit_error(events)
    assert "RELAY_MAX_SESSION_SECONDS" in error["message"] and "Connect again" in error["message"]
    assert code == 1008


async def ask_for_a_text_reply(ws: ClientConnection) -> None:
    await ws.send(
        json.dumps(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Hello"}],
                },
            }
        )
    )
    await ws.send(json.dumps({"type": "response.create", "response": {"output_modalities": ["text"]}}))


async def test_daily_token_budget_ends_the_session_then_refuses_at_the_door(
    relay_factory: Any, fake_upstream: FakeRealtimeServer
) -> None:
    relay: ProxiedRelay = await relay_factory(access_tokens=f"{TOKEN},{OTHER_TOKEN}", daily_token_budget="1")
    async with opened(relay.ws_url, additional_headers=bearer(TOKEN)) as ws:
        await next_event(ws)
        await ask_for_a_text_reply(ws)
        events, code = await until_closed(ws)
    types = [e["type"] for e in events]
    # The reply that spent the budget is delivered whole, then the session ends.
    assert "response.done" in types and types.index("response.done") < types.index("error")
    usage = next(e for e in events if e["type"] == "response.done")["response"]["usage"]
    assert usage["total_tokens"] >= 1
    error = limit_error(events)
    assert "RELAY_DAILY_TOKEN_BUDGET" in error["message"] and "00:00 UTC" in error["message"]
    assert code == 1008

    spent = await refused(relay.ws_url, additional_headers=bearer(TOKEN))
    spent.says(429, "relay_limit_exceeded", "RELAY_DAILY_TOKEN_BUDGET", "connect again then")
    now = dt.datetime.now(dt.UTC)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    assert abs(int(spent.headers["Retry-After"]) - (midnight - now).total_seconds()) < 5
    # Another identity has its own budget.
    async with opened(relay.ws_url, additional_headers=bearer(OTHER_TOKEN)) as other:
        assert (await next_event(other))["type"] == "session.created"
    assert rejections(relay, "token_budget") == 1


@pytest.mark.invalid_client_events
async def test_oversized_messages_are_refused_and_not_forwarded(
    relay_factory: Any, fake_upstream: FakeRealtimeServer
) -> None:
    relay: ProxiedRelay = await relay_factory(max_message_bytes="1024")
    async with opened(relay.ws_url) as ws:
        await next_event(ws)
        record = fake_upstream.connections[-1]
        big_text = json.dumps({"type": "conversation.item.create", "event_id": "evt_big", "pad": "x" * 2000})
        await ws.send(big_text)
        error = (await next_event(ws))["error"]
        assert error["code"] == "relay_limit_exceeded"
        assert "RELAY_MAX_MESSAGE_BYTES" in error["message"] and "smaller" in error["message"]
        await ws.send(b"\0" * 2048)
        error = (await next_event(ws))["error"]
        assert error["code"] == "relay_limit_exceeded" and "20-100 ms" in error["message"]
        # The session goes on: the next, small event reaches the model.
        await ws.send(json.dumps({"type": "input_audio_buffer.clear", "event_id": "evt_small"}))
        await record.wait_for_received("input_audio_buffer.clear")
    assert "evt_big" not in json.dumps(record.received)
    assert len(record.input_audio) == 0
