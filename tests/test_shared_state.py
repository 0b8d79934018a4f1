"""Limits shared through a real Redis: two relay processes (the real command) enforce one count.

A real `redis-server` runs on a free loopback port with its data in the test's temporary directory. The relays are
separate processes, so nothing but Redis connects their counts: the per-identity session limit, the daily token
budget, failed sign-ins and signed-out cookies hold across them; a relay killed with SIGKILL frees its slots within
the lease time; while Redis is away new sessions and sign-ins are refused (503) and open sessions carry on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.access import Denial, DoorRequest
from relay.config import load_config
from relay.shared_state import TOKENS, Lease, SharedState, SharedStateUnavailable
from relay.shared_state.local import LocalState
from relay.shared_state.metrics import SharedStateMetrics
from relay.shared_state.redis_state import RedisState
from relay.shared_state.revocations import RevokedLogins
from tests.conftest import ProxiedRelay
from tests.harness import RelayProcess
from tests.redis_server import RedisServer, redis_server_fixture  # noqa: F401
from tests.test_access import OTHER_TOKEN, TOKEN, next_event, opened, refused
from tests.test_limits import ask_for_a_text_reply, bearer, until_closed
from tests.test_metrics import parse_exposition, value

pytestmark = pytest.mark.slow
RelayFactory = Callable[..., Awaitable[ProxiedRelay[RelayProcess]]]
LEASE_SECONDS = 2.0
COOKIE_KEY = "shared-cookie-key-for-both-relays"


async def two_relays(
    start_relay: RelayFactory, redis: RedisServer, upstream: str, **settings: str
) -> list[Any]:
    # Replicas share the cookie key, as deployed: a login made on one is valid on the other.
    env = {"redis_url": redis.url, "access_tokens": f"{TOKEN},{OTHER_TOKEN}", "cookie_secret": COOKIE_KEY}
    env.update(settings)
    return [await start_relay(upstream_url=upstream, **env) for _ in range(2)]


async def metric(relay: Any, name: str, **labels: str) -> float:
    async with httpx.AsyncClient() as http:
        exposition = (await http.get(relay.inner.metrics_url, timeout=5)).text
    return value(parse_exposition(exposition), name, **labels)


async def test_the_identity_limit_holds_across_two_relays(
    start_relay: RelayFactory, redis_server: RedisServer, fake_upstream: Any
) -> None:
    a, b = await two_relays(start_relay, redis_server, fake_upstream.url, max_sessions_per_identity="2")
    async with opened(a.ws_url, additional_headers=bearer(TOKEN)) as first:
        await next_event(first)
        async with opened(b.ws_url, additional_headers=bearer(TOKEN)) as second:
            await next_event(second)
            # Two open, one on each relay: a third is refused by either.
            for relay in (a, b):
                third = await refused(relay.ws_url, additional_headers=bearer(TOKEN))
                third.says(429, "relay_limit_exceeded", "RELAY_MAX_SESSIONS_PER_IDENTITY")
            # Another identity has its own count.
            async with opened(a.ws_url, additional_headers=bearer(OTHER_TOKEN)) as other:
                assert (await next_event(other))["type"] == "session.created"
        # The session on b ended and gave its slot back: a takes it.
        await eventually(lambda: accepted(a.ws_url, TOKEN))
    async with redis_server.client() as client:

        async def all_released() -> bool:
            return await client.zcard("relay:slots") == 0

        await eventually(all_released, timeout=5)


async def _until_closed_on(relay: Any, timeout: float = 5) -> None:
    """Wait until `relay` has logged the end of a session (its slot and spending are then written back)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not any(line.get("event") == "session_closed" for line in relay.inner.log_lines()):
        assert asyncio.get_running_loop().time() < deadline, "the session did not close"
        await asyncio.sleep(0.05)


async def test_the_daily_money_budget_holds_across_two_relays(
    start_relay: RelayFactory, redis_server: RedisServer, fake_upstream: Any
) -> None:
    a, b = await two_relays(
        start_relay, redis_server, fake_upstream.url, daily_cost_budget="0.0000001", daily_token_budget="0"
    )
    async with opened(a.ws_url, additional_headers=bearer(TOKEN)) as ws:
        await next_event(ws)
        await ask_for_a_text_reply(ws)
        _, code = await until_closed(ws, timeout=15)
    assert code == 1008  # the reply that spent the money ended the session on a
    await _until_closed_on(a)
    # b never saw a cent of it, and refuses all the same: the dollars are counted in Redis.
    spent = await refused(b.ws_url, additional_headers=bearer(TOKEN))
    spent.says(429, "relay_limit_exceeded", "RELAY_DAILY_COST_BUDGET")
    async with redis_server.client() as client:
        [key] = await client.keys("relay:spent:usd:*")
        assert 0 < float(await client.get(key) or 0) < 1
    async with opened(b.ws_url, additional_headers=bearer(OTHER_TOKEN)) as other:
        assert (await next_event(other))["type"] == "session.created"


async def test_the_daily_budget_holds_across_two_relays(
    start_relay: RelayFactory, redis_server: RedisServer, fake_upstream: Any
) -> None:
    a, b = await two_relays(start_relay, redis_server, fake_upstream.url, daily_token_budget="1")
    async with opened(a.ws_url, additional_headers=bearer(TOKEN)) as ws:
        await next_event(ws)
        await ask_for_a_text_reply(ws)
        events, code = await until_closed(ws, timeout=15)
    assert code == 1008  # the reply that spent the budget ended the session
    usage = next(e for e in events if e["type"] == "response.done")["response"]["usage"]
    assert usage["total_tokens"] >= 1
    # Spent on a (written back by the time a has closed the session); b refuses at the door, though it never saw
    # a token of it.
    await _until_closed_on(a)
    spent = await refused(b.ws_url, additional_headers=bearer(TOKEN))
    spent.says(429, "relay_limit_exceeded", "RELAY_DAILY_TOKEN_BUDGET", "00:00 UTC")
    async with opened(b.ws_url, additional_headers=bearer(OTHER_TOKEN)) as other:
        assert (await next_event(other))["type"] == "session.created"
    # What Redis holds is the reply's settled usage: estimates charged as audio flowed were settled by response.done.
    async with redis_server.client() as client:
        keys = await client.keys(f"relay:spent:{TOKENS}:*")
        assert len(keys) == 1
        assert float(await client.get(keys[0]) or 0) == usage["total_tokens"]
        assert 0 < await client.ttl(keys[0]) <= 25 * 3600


async def test_a_killed_relay_frees_its_slots_within_the_lease(
    start_relay: RelayFactory, redis_server: RedisServer, fake_upstream: Any
) -> None:
    a, b = await two_relays(
        start_relay,
        redis_server,
        fake_upstream.url,
        max_sessions_per_identity="1",
        session_lease_seconds=str(LEASE_SECONDS),
    )
    async with opened(a.ws_url, additional_headers=bearer(TOKEN)) as held:
        await next_event(held)
        # Held past two lease times: a renews its lease, so b keeps refusing.
        await asyncio.sleep(2 * LEASE_SECONDS)
        (await refused(b.ws_url, additional_headers=bearer(TOKEN))).says(
            429, "relay_limit_exceeded", "RELAY_MAX_SESSIONS_PER_IDENTITY"
        )
        a.inner.process.kill()
        a.inner.process.wait(5)
        a.inner.stopped = True
        killed = time.monotonic()
        freed = await eventually(lambda: accepted(b.ws_url, TOKEN), timeout=LEASE_SECONDS + 5)
    waited = freed - killed
    print(f"slot freed {waited:.2f} s after SIGKILL (lease {LEASE_SECONDS} s)")
    assert waited <= LEASE_SECONDS + 1.5


async def test_without_redis_new_sessions_are_refused_and_open_ones_carry_on(
    start_relay: RelayFactory, redis_server: RedisServer, fake_upstream: Any
) -> None:
    (a,) = [
        await start_relay(upstream_url=fake_upstream.url, redis_url=redis_server.url, access_tokens=TOKEN)
    ]
    async with opened(a.ws_url, additional_headers=bearer(TOKEN)) as ws:
        await next_event(ws)
        redis_server.stop()
        started = time.monotonic()
        away = await refused(a.ws_url, additional_headers=bearer(TOKEN))
        assert time.monotonic() - started < 5
        assert away.status == 503 and away.body["error"]["code"] == "relay_state_unavailable"
        assert "RELAY_REDIS_URL" in away.body["error"]["message"]
        assert "open sessions go on" in away.body["error"]["message"]
        assert away.headers["Retry-After"] == "5"
        async with httpx.AsyncClient() as http:
            login = await http.post(f"{a.base_url}/auth/login", json={"token": TOKEN}, timeout=5)
            assert login.status_code == 503 and login.json()["error"]["code"] == "relay_state_unavailable"
            page = await http.get(f"{a.base_url}/api/config", timeout=5)
            assert page.status_code == 200
        # The open session is untouched: a whole reply still comes through.
        await ask_for_a_text_reply(ws)
        async with asyncio.timeout(15):
            while (await next_event(ws))["type"] != "response.done":
                pass
        assert await metric(a, "relay_shared_state_up") == 0
        assert await metric(a, "relay_shared_state_errors_total", operation="login") >= 1
        assert await metric(a, "relay_shared_state_errors_total", operation="spend") >= 1
        assert await metric(a, "relay_rejected_connections_total", reason="shared_state_unavailable") == 1

        await redis_server.start()  # same port: the relay reconnects by itself
        await eventually(lambda: accepted(a.ws_url, TOKEN))
        # The tokens the open session spent while Redis was away were kept and written back.
        async with redis_server.client() as client:

            async def written_back() -> bool:
                keys = await client.keys(f"relay:spent:{TOKENS}:*")
                return bool(keys) and float(await client.get(keys[0]) or 0) >= 1

            await eventually(written_back, timeout=5)
    events = [line["event"] for line in a.inner.log_lines()]
    assert events.count("shared_state_unavailable") == 1, "logged once per outage"
    assert "shared_state_restored" in events
    assert await metric(a, "relay_shared_state_up") == 1


async def test_failed_sign_ins_and_sign_outs_count_across_relays(
    start_relay: RelayFactory, redis_server: RedisServer, fake_upstream: Any
) -> None:
    a, b = await two_relays(start_relay, redis_server, fake_upstream.url)
    async with httpx.AsyncClient() as http:
        for _ in range(5):
            wrong = await http.post(f"{a.base_url}/auth/login", json={"token": "wrong"}, timeout=5)
            assert wrong.status_code == 401
        # The sixth guess goes to the other relay, which knows of the five.
        sixth = await http.post(f"{b.base_url}/auth/login", json={"token": "wrong"}, timeout=5)
        assert sixth.status_code == 429 and sixth.json()["error"]["code"] == "too_many_attempts"
        assert 1 <= int(sixth.headers["Retry-After"]) <= 60

    async with httpx.AsyncClient() as http:
        await redis_server_flush_logins(redis_server)
        signed_in = await http.post(f"{a.base_url}/auth/login", json={"token": TOKEN}, timeout=5)
        assert signed_in.status_code == 204
        cookie = signed_in.cookies["relay_login"]
        seen = await http.get(
            f"{b.base_url}/api/config", headers={"Cookie": f"relay_login={cookie}"}, timeout=5
        )
        assert seen.json()["auth"]["authenticated"] is True
        out = await http.post(
            f"{a.base_url}/auth/logout", headers={"Cookie": f"relay_login={cookie}"}, timeout=5
        )
        assert out.status_code == 204
        # A copy of the cookie no longer works on the other relay either.
        after = await http.get(
            f"{b.base_url}/api/config", headers={"Cookie": f"relay_login={cookie}"}, timeout=5
        )
        assert after.json()["auth"]["authenticated"] is False
        headers = {"Origin": b.base_url, "Cookie": f"relay_login={cookie}"}
        (await refused(b.ws_url, additional_headers=headers)).says(401, "login_expired")


async def redis_server_flush_logins(redis: RedisServer) -> None:
    async with redis.client() as client:
        for key in await client.keys("relay:login:*"):
            await client.delete(key)


async def accepted(url: str, token: str) -> bool:
    """True when a session opens (and is closed again at once)."""
    try:
        async with opened(url, additional_headers=bearer(token)) as ws:
            return (await next_event(ws))["type"] == "session.created"
    except Exception:
        return False


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> float:
    """Poll `check` until it is true; when that happened (monotonic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return time.monotonic()
        await asyncio.sleep(0.1)
    raise AssertionError(f"not true within {timeout} s")


# -- the interface, the same for both stores ---------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    settings = {
        "RELAY_MAX_SESSIONS": "3",
        "RELAY_MAX_SESSIONS_PER_IDENTITY": "2",
        "RELAY_DAILY_TOKEN_BUDGET": "100",
    }
    if request.param == "memory":
        state: SharedState = LocalState(load_config(env=settings))
        server = None
    else:
        server = RedisServer(tmp_path)
        await server.start()
        from prometheus_client import CollectorRegistry

        settings["RELAY_REDIS_URL"] = server.url
        state = RedisState(load_config(env=settings), SharedStateMetrics(CollectorRegistry()))
    await state.start()
    yield state
    await state.aclose()
    if server is not None:
        server.stop()


async def test_slots_budgets_and_a_second_unit_behave_alike_in_both_stores(store: SharedState) -> None:
    leases = [await store.open_session("alice"), await store.open_session("alice")]
    assert reason(await store.open_session("alice")) == "identity_sessions"
    leases.append(await store.open_session("bob"))
    assert all(isinstance(lease, Lease) for lease in leases)
    assert reason(await store.open_session("carol")) == "capacity"
    for lease in leases:
        assert isinstance(lease, Lease)
        await store.close_session(lease)
    assert isinstance(await store.open_session("carol"), Lease)
    # Tokens: the synchronous spend the session uses, read back through the async interface.
    assert store.spend("alice", 60) is None
    assert "RELAY_DAILY_TOKEN_BUDGET" in (store.spend("alice", 40) or "")
    await eventually(lambda: spent_equals(store, TOKENS, "alice", 100))
    assert reason(await store.open_session("alice")) == "token_budget"
    # A second unit (money) through the charge hook: totals per identity per day, never below zero.
    assert await store.charge("usd", "alice", 0.25) == 0.25
    assert await store.charge("usd", "alice", 0.5) == 0.75
    assert await store.charge("usd", "alice", -2) == 0
    assert await store.spent("usd", "bob") == 0


def reason(verdict: Lease | Denial) -> str | None:
    return verdict.reason if isinstance(verdict, Denial) else None


async def spent_equals(store: SharedState, unit: str, identity: str, amount: float) -> bool:
    return await store.spent(unit, identity) == amount


async def test_a_store_that_never_answers_fails_closed_in_bounded_time() -> None:
    from prometheus_client import CollectorRegistry

    # A server that accepts connections and never says a word: only the relay's own timeout ends the wait.
    silent: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = load_config(env={"RELAY_REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    state = RedisState(config, SharedStateMetrics(CollectorRegistry()))
    try:
        started = time.monotonic()
        assert reason(await state.open_session("alice")) == "shared_state_unavailable"
        with pytest.raises(SharedStateUnavailable):
            async with state.consulted(DoorRequest(peer="127.0.0.1", client="127.0.0.1", scheme="http")):
                pass
        took = time.monotonic() - started
        assert 1.5 <= took < 4, took  # two requests, each given up after its 1 s timeout
        assert silent, "the relay did connect"
        assert state.spend("alice", 5) is None  # counted here, for writing back later
    finally:
        await state.aclose()
        server.close()
        for writer in silent:
            writer.close()


def test_signed_out_cookies_are_remembered_until_they_expire() -> None:
    now = [0.0]
    revoked = RevokedLogins(clock=lambda: now[0])
    revoked.add("cookie-a", 10)
    assert revoked("cookie-a") and not revoked("cookie-b")
    now[0] = 11
    assert not revoked("cookie-a")


async def test_without_redis_a_signed_out_cookie_stops_working_in_this_process(relay_factory: Any) -> None:
    relay = await relay_factory(access_tokens=TOKEN)
    async with httpx.AsyncClient() as http:
        signed_in = await http.post(f"{relay.base_url}/auth/login", json={"token": TOKEN}, timeout=5)
        cookie = {"Cookie": f"relay_login={signed_in.cookies['relay_login']}"}
        assert (await http.get(f"{relay.base_url}/api/config", headers=cookie)).json()["auth"][
            "authenticated"
        ]
        assert (await http.post(f"{relay.base_url}/auth/logout", headers=cookie)).status_code == 204
        # The browser drops the cookie; a copy kept elsewhere is refused too.
        after = (await http.get(f"{relay.base_url}/api/config", headers=cookie)).json()["auth"]
        assert after["authenticated"] is False and "expired" in after["message"]
