"""The HTTP door against hostile clients, over real sockets to the relay running as a process: bad query values,
credentials that disagree, slow and idle connections, oversized heads, the connection cap, what strangers may see,
and the security headers on every response.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from relay.access import Denial, Door, DoorRequest
from relay.auth import AttemptLimiter, LoginCookies, TokenSet
from relay.config import Config
from relay.connection_guard import (
    HEADERS_TOO_LARGE,
    MAX_HEAD_BYTES,
    MAX_HEADER_FIELDS,
    MAX_LINE_BYTES,
    URI_TOO_LONG,
    HeadMeter,
    connection_limit,
    connection_problem,
    file_budget,
)
from relay.fake.server import FakeRealtimeServer
from relay.security_headers import page_policy
from relay.session_query import SessionQuery, parse_session_query
from tests.conftest import TEST_API_KEY, ProxiedRelay
from tests.harness import REPO, RelayProcess, start_process

TOKEN = "tok-" + "door0123456789abcdef"
OTHER_TOKEN = "tok-" + "door-other-0123456789"


@dataclass
class RawResponse:
    """What the relay answered on a raw connection: status, headers (lower-case names), body, and when."""

    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def error(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)["error"]
        return parsed


def handshake(path: str, *extra: str, host: str = "127.0.0.1") -> bytes:
    """A WebSocket upgrade request for `path` with `extra` header lines."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def get(path: str, *extra: str, host: str = "127.0.0.1") -> bytes:
    """A plain GET for `path` that asks the server to close afterwards."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def parse_response(data: bytes, seconds: float) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    if length is not None:
        body = body[: int(length)]
    return RawResponse(int(status_line.split()[1]), headers, body, seconds)


async def read_response(reader: asyncio.StreamReader, started: float, timeout: float) -> RawResponse:
    """Read one response (to the end of the connection, or up to its Content-Length)."""
    data = b""
    async with asyncio.timeout(timeout):
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
            _, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                probe = parse_response(data, 0)
                length = probe.headers.get("content-length")
                # A 101 goes on as a WebSocket: its head is the whole answer.
                if probe.status == 101 or (length is not None and len(body) >= int(length)):
                    break
    assert data, "the connection closed without an HTTP answer"
    return parse_response(data, time.monotonic() - started)


async def exchange(port: int, request: bytes, timeout: float = 10) -> RawResponse:
    """Send `request` on a fresh connection to 127.0.0.1:`port` and read the answer."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await read_response(reader, started, timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def assert_openai_error(response: RawResponse, status: int, code: str, *phrases: str) -> dict[str, Any]:
    assert response.status == status, (response.status, response.body[:300])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.error()
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code, error
    for phrase in phrases:
        assert phrase in error["message"], (phrase, error["message"])
    return error


@contextlib.asynccontextmanager
async def relay_process(start_relay: Any, fake: FakeRealtimeServer, **settings: str) -> AsyncIterator[Any]:
    relay: ProxiedRelay[Any] = await start_relay(upstream_url=fake.url, **settings)
    yield relay.inner


def no_traceback(relay: Any) -> None:
    text = relay.log_text()
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-3000:]


# -- the deciding parts, without sockets -------------------------------------------------------------------


def test_query_is_judged_as_text() -> None:
    config = Config(allowed_models=("gpt-realtime", "gpt-realtime-mini"))
    ok = parse_session_query([("model", "gpt-realtime-mini"), ("input_rate", "16000"), ("x", "1")], config)
    assert ok == SessionQuery("gpt-realtime-mini", {"input_rate": 16000})
    assert parse_session_query([("model", "")], config) == SessionQuery("gpt-realtime", {})
    for raw in ("²", "１６０００", "٨٠٠٠", "0016000", "16000 ", "+16000", "1e4", "9" * 5000):
        verdict = parse_session_query([("output_rate", raw)], config)
        assert isinstance(verdict, Denial) and verdict.status == 400 and verdict.code == "relay_bad_audio", (
            raw
        )
        assert len(verdict.message) < 300, raw
    repeated = parse_session_query([("model", "gpt-realtime"), ("model", "gpt-realtime")], config)
    assert isinstance(repeated, Denial) and (repeated.status, repeated.code) == (400, "invalid_request")


def test_head_meter_limits_are_exact() -> None:
    meter = HeadMeter()
    name = b"x-f"
    at_limit = b"v" * (MAX_LINE_BYTES - len(name) - 4)
    assert meter.field(name, at_limit) is None
    assert HeadMeter().field(name, at_limit + b"v") is HEADERS_TOO_LARGE
    fields = HeadMeter()
    assert all(fields.field(b"a", b"b") is None for _ in range(MAX_HEADER_FIELDS))
    assert fields.field(b"a", b"b") is HEADERS_TOO_LARGE
    url = HeadMeter()
    assert url.url(MAX_LINE_BYTES - len("GET  HTTP/1.1\r\n")) is None
    assert url.url(1) is URI_TOO_LONG
    data = HeadMeter()
    assert data.data(MAX_HEAD_BYTES) is None
    assert data.data(1) is HEADERS_TOO_LARGE


def test_connection_cap_follows_the_file_limit() -> None:
    config = Config(max_sessions=50)
    assert connection_limit(config, 1024) == file_budget(config, 1024)
    # Each session's upstream socket is set aside, twice in demo mode (the simulated model's end is ours too).
    assert file_budget(config, 1024) - file_budget(Config(max_sessions=51), 1024) == 1
    assert file_budget(config, 1024) - file_budget(Config(max_sessions=50, demo=True), 1024) == 50
    assert connection_limit(Config(max_connections=300), 1024) == 300
    assert connection_problem(config, 1024) is None
    assert connection_problem(config, None) is None
    too_low = connection_problem(config, 128) or ""
    assert "ulimit -n" in too_low and "128" in too_low and "RELAY_MAX_SESSIONS=50" in too_low
    over = connection_problem(Config(max_connections=2000), 1024) or ""
    assert "RELAY_MAX_CONNECTIONS=2000" in over
    assert "at least" in (connection_problem(Config(max_connections=20), None) or "")


def test_page_policy_names_only_a_well_formed_origin() -> None:
    assert "connect-src 'self' wss://relay.example.ts.net" in page_policy("https://relay.example.ts.net")
    assert "connect-src 'self' ws://127.0.0.1:8080" in page_policy("http://127.0.0.1:8080")
    assert "connect-src 'self' ws://[::1]:8080" in page_policy("http://[::1]:8080")
    for hostile in ("http://a; script-src *", "http://a b", "http://a\r\nx: y", None):
        assert page_policy(hostile).endswith("connect-src 'self'"), hostile


def test_only_this_machine_is_local() -> None:
    door = Door(Config(), TokenSet([]), LoginCookies("s" * 32, 60), AttemptLimiter())

    def request(*headers: tuple[str, str], peer: str = "127.0.0.1", client: str | None = None) -> DoorRequest:
        return DoorRequest(peer=peer, client=client or peer, scheme="http", headers=headers)

    assert door.is_local(request())
    assert door.is_local(request(("x-forwarded-for", "127.0.0.1"), client="127.0.0.1"))
    assert not door.is_local(request(("x-forwarded-for", "203.0.113.9"), client="203.0.113.9"))
    assert not door.is_local(request(("tailscale-funnel-request", "?1")))
    assert not door.is_local(request(("via", "1.1 proxy")))  # forwarded, for a client it does not name
    assert not door.is_local(request(peer="192.0.2.7"))


# -- bad query values ----------------------------------------------------------------------------------------

BAD_RATES = {
    "superscript two": "%C2%B2",
    "arabic-indic digits": "%D9%A1%D9%A6%D9%A0%D9%A0%D9%A0",
    "fullwidth digits": "%EF%BC%91%EF%BC%96%EF%BC%90%EF%BC%90%EF%BC%90",
    "5,000 digits": "9" * 5000,
    "negative": "-16000",
    "decimal": "16000.0",
    "empty": "",
    "too high": "384000",
}


async def test_bad_query_values_answer_400_never_500(
    start_relay: Any, fake_upstream: FakeRealtimeServer
) -> None:
    async with relay_process(start_relay, fake_upstream) as relay:
        for name in ("input_rate", "output_rate"):
            for label, raw in BAD_RATES.items():
                response = await exchange(relay.port, handshake(f"/v1/realtime?{name}={raw}"))
                error = assert_openai_error(response, 400, "relay_bad_audio", name, "8000")
                assert len(error["message"]) < 400, (label, len(error["message"]))
        duplicated = [
            "model=gpt-realtime&model=gpt-realtime",
            "model=gpt-realtime&model=other",
            "input_rate=16000&input_rate=16000",
            "output_rate=16000&output_rate=48000",
        ]
        for query in duplicated:
            response = await exchange(relay.port, handshake(f"/v1/realtime?{query}"))
            assert_openai_error(response, 400, "invalid_request", "once")
        long_model = "m" * 5000
        response = await exchange(relay.port, handshake(f"/v1/realtime?model={long_model}"))
        error = assert_openai_error(response, 403, "relay_policy_violation", "gpt-realtime")
        assert len(error["message"]) < 400
        # The good values still open a session.
        good = await exchange(relay.port, handshake("/v1/realtime?input_rate=16000&output_rate=48000"), 5)
        assert good.status == 101
        no_traceback(relay)


# -- credentials that disagree -------------------------------------------------------------------------------


async def test_credentials_that_disagree_are_refused(
    start_relay: Any, fake_upstream: FakeRealtimeServer
) -> None:
    async with relay_process(start_relay, fake_upstream, access_tokens=f"{TOKEN},{OTHER_TOKEN}") as relay:
        cases = {
            "good bearer, wrong subprotocol": (TOKEN, "tok-wrong-0000"),
            "good bearer, another good token as subprotocol": (TOKEN, OTHER_TOKEN),
            "wrong bearer, good subprotocol": ("tok-wrong-0000", TOKEN),
        }
        for label, (in_header, in_subprotocol) in cases.items():
            request = handshake(
                "/v1/realtime",
                f"Authorization: Bearer {in_header}",
                f"Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.{in_subprotocol}",
            )
            response = await exchange(relay.port, request)
            error = assert_openai_error(
                response, 401, "conflicting_credentials", "Authorization", "subprotocol"
            )
            assert TOKEN not in error["message"] and OTHER_TOKEN not in error["message"], label
        two_headers = handshake(
            "/v1/realtime", f"Authorization: Bearer {TOKEN}", f"Authorization: Bearer {OTHER_TOKEN}"
        )
        assert_openai_error(await exchange(relay.port, two_headers), 401, "conflicting_credentials")
        # The same token in both places is one credential, and is admitted.
        same = handshake(
            "/v1/realtime",
            f"Authorization: Bearer {TOKEN}",
            f"Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.{TOKEN}",
        )
        assert (await exchange(relay.port, same, 5)).status == 101
        no_traceback(relay)


# -- slow and idle connections -------------------------------------------------------------------------------


@dataclass
class Held:
    """How a connection that never finished its request ended: after how long, and what the relay sent."""

    seconds: float
    received: bytes

    def response(self) -> RawResponse:
        return parse_response(self.received, self.seconds)


async def hold(
    port: int, first: bytes, trickle: bytes = b"", interval: float = 0.3, limit: float = 30
) -> Held:
    """Send `first`, then `trickle` every `interval` seconds until the relay closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()

    async def dribble() -> None:
        with contextlib.suppress(OSError):
            writer.write(first)
            await writer.drain()
            while trickle:
                await asyncio.sleep(interval)
                writer.write(trickle)
                await writer.drain()

    sender = asyncio.create_task(dribble())
    try:
        return await until_closed(reader, started, limit)
    finally:
        sender.cancel()
        writer.close()


async def until_closed(reader: asyncio.StreamReader, started: float, limit: float = 30) -> Held:
    """Everything the relay sends until it closes the connection, and when that was."""
    received = b""
    async with asyncio.timeout(limit):
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                received += chunk
    return Held(time.monotonic() - started, received)


async def keep_alive_then(port: int, then: bytes) -> Held:
    """Complete one keep-alive request, then send `then` and stall; time from `then` until the relay closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = await read_response(reader, time.monotonic(), 5)
        assert first.status == 200
        writer.write(then)
        return await until_closed(reader, time.monotonic())
    finally:
        writer.close()


async def test_slow_and_idle_connections_are_closed(
    start_relay: Any, fake_upstream: FakeRealtimeServer
) -> None:
    timeout = 2.0
    async with relay_process(start_relay, fake_upstream, request_timeout_seconds=str(timeout)) as relay:
        port = relay.port
        attempts = {
            "empty": hold(port, b""),
            "half a request line": hold(port, b"GET /heal"),
            "headers trickling": hold(
                port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"X-Slow: 1\r\n"
            ),
            "handshake trickling": hold(port, handshake("/v1/realtime")[:-4] + b"\r\n", b"X-Slow: 1\r\n"),
            "body trickling": hold(
                port,
                b"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 200\r\n\r\n{",
                b" ",
            ),
            "keep-alive, then half a request": keep_alive_then(port, b"GET /hea"),
        }
        tasks = {name: asyncio.create_task(attempt) for name, attempt in attempts.items()}
        # While they are held, a real request is answered at once.
        await asyncio.sleep(0.5)
        healthy = await exchange(port, get("/healthz"), 5)
        assert healthy.status == 200 and healthy.seconds < 1.0, healthy
        results = {name: await task for name, task in tasks.items()}
        for name, held in results.items():
            # Not before the deadline, and not much after it, even on a loaded machine.
            assert timeout * 0.9 <= held.seconds <= timeout + 3, (name, held.seconds)
            if name == "empty":
                assert held.received == b"", name
                continue
            assert_openai_error(held.response(), 408, "request_timeout", "RELAY_REQUEST_TIMEOUT_SECONDS")
        # A connection that went quiet after its response is closed by uvicorn's keep-alive timer, not held.
        idle = await keep_alive_then(port, b"")
        assert idle.received == b"" and idle.seconds <= 5 + 3
        no_traceback(relay)


async def test_oversized_request_heads_are_answered(
    start_relay: Any, fake_upstream: FakeRealtimeServer
) -> None:
    async with relay_process(start_relay, fake_upstream) as relay:
        port = relay.port
        big_cookie = "Cookie: c=" + "x" * 9000
        cases = {
            "one 9 KB header on a GET": get("/healthz", big_cookie),
            "one 9 KB header on a handshake": handshake("/v1/realtime", big_cookie),
            "129 header fields on a handshake": handshake(
                "/v1/realtime", *[f"X-F{i}: v" for i in range(129)]
            ),
            "72 KB of headers in 4 KB lines": get("/healthz", *[f"X-L{i}: {'y' * 4000}" for i in range(18)]),
        }
        for name, request in cases.items():
            response = await exchange(port, request, 5)
            assert response.seconds < 2, name
            assert_openai_error(response, 431, "request_header_fields_too_large", "8192", "cookies")
        raw_utf8 = get("/v1/realtime?model=PLACE").replace(b"PLACE", "é".encode())
        assert_openai_error(await exchange(port, raw_utf8, 5), 400, "invalid_http_request", "percent-encoded")
        too_long = await exchange(port, handshake("/v1/realtime?model=" + "m" * 9000), 5)
        assert_openai_error(too_long, 414, "uri_too_long", "Shorten the URL")
        # Just under the limits, a request is served as before.
        near = await exchange(port, get("/healthz", "Cookie: c=" + "x" * 8000), 5)
        assert near.status == 200
        many = await exchange(port, handshake("/v1/realtime", *[f"X-F{i}: v" for i in range(100)]), 5)
        assert many.status == 101
        no_traceback(relay)


# -- the connection cap --------------------------------------------------------------------------------------


def open_files_at_most(count: int) -> Callable[[], None]:
    """A `preexec_fn` that lowers the child's RLIMIT_NOFILE (soft and hard) to `count`."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))

    return apply


def logged(relay: RelayProcess, event: str) -> dict[str, Any]:
    lines = [line for line in relay.log_lines() if line.get("event") == event]
    assert lines, f"no {event} line in the log"
    return lines[0]


async def still_open(connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> int:
    """How many of `connections` the relay has not closed (a closed one reads EOF at once)."""
    await asyncio.sleep(0.5)
    alive = 0
    for reader, _ in connections:
        if not reader.at_eof() and not reader.exception():
            try:
                await asyncio.wait_for(reader.read(1), 0.001)
            except TimeoutError:
                alive += 1
            except OSError:
                pass
    return alive


async def test_idle_connections_cannot_exhaust_the_file_limit(
    tmp_path: Path, fake_upstream: FakeRealtimeServer
) -> None:
    file_limit, max_sessions = 256, 4
    env = {
        "RELAY_UPSTREAM_URL": fake_upstream.url,
        "OPENAI_API_KEY": TEST_API_KEY,
        "RELAY_MAX_SESSIONS": str(max_sessions),
        # Long enough that the cap, not the request deadline, is what frees the connections here.
        "RELAY_REQUEST_TIMEOUT_SECONDS": "60",
    }
    relay = await start_process(tmp_path, env=env, preexec_fn=open_files_at_most(file_limit))
    attackers: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        # More idle connections than the whole file limit, held open; half of them have sent part of a request.
        for i in range(file_limit + 50):
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            if i % 2:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            attackers.append((reader, writer))
        # While the attacker holds them: health, metrics and a new session all work, promptly.
        started = time.monotonic()
        healthz = await exchange(relay.port, get("/healthz"), 5)
        assert healthz.status == 200 and healthz.seconds < 2, healthz
        async with httpx.AsyncClient() as client:
            metrics = await client.get(relay.metrics_url, timeout=5)
        assert metrics.status_code == 200 and "relay_" in metrics.text
        async with websockets.connect(relay.ws_url, open_timeout=5) as ws:
            event = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert event["type"] == "session.created"
        assert time.monotonic() - started < 6
        # The relay closed what it had to, keeping at most its cap, which leaves room under the file limit for
        # every session's upstream socket and for /metrics.
        limits = logged(relay, "connection_limits")
        cap = limits["max_connections"]
        assert limits["open_file_limit"] == file_limit
        assert max_sessions < cap < file_limit - max_sessions, limits
        held = await still_open(attackers)
        assert held <= cap, (held, cap)
        print(
            f"file limit {file_limit}, cap {cap}: opened {len(attackers)} idle connections, {held} still held"
        )
        # And once the attacker leaves, everything is as before.
        for _, writer in attackers:
            writer.close()
        await asyncio.sleep(0.5)
        assert (await exchange(relay.port, get("/healthz"), 5)).status == 200
        log = relay.log_text()
        assert "Too many open files" not in log and "EMFILE" not in log and "Traceback" not in log, log[
            -2000:
        ]
    finally:
        for _, writer in attackers:
            writer.close()
        assert relay.stop() == 0


async def test_a_relay_full_of_requests_in_progress_answers_503(
    start_relay: Any, fake_upstream: FakeRealtimeServer
) -> None:
    cap = 20
    async with relay_process(
        start_relay, fake_upstream, max_sessions="4", max_connections=str(cap), request_timeout_seconds="30"
    ) as relay:
        # Requests whose body is still arriving are in progress: they are never evicted for a newcomer.
        busy = []
        for _ in range(cap):
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(b"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
            busy.append((reader, writer))
        await asyncio.sleep(0.5)
        try:
            full = await exchange(relay.port, get("/healthz"), 5)
            assert_openai_error(full, 503, "relay_limit_exceeded", "RELAY_MAX_CONNECTIONS")
            assert full.headers["retry-after"].isdigit()
            assert await still_open(busy) == cap
        finally:
            for _, writer in busy:
                writer.close()
        await asyncio.sleep(0.5)
        assert (await exchange(relay.port, get("/healthz"), 5)).status == 200


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"RELAY_MAX_SESSIONS": "200"}, "RELAY_MAX_SESSIONS=200"),
        ({"RELAY_MAX_CONNECTIONS": "5000"}, "RELAY_MAX_CONNECTIONS=5000"),
        ({"RELAY_MAX_CONNECTIONS": "10"}, "at least"),
    ],
)
def test_connection_settings_are_checked_against_the_file_limit(settings: dict[str, str], says: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update({"OPENAI_API_KEY": TEST_API_KEY, "RELAY_PORT": "0", **settings})
    result = subprocess.run(
        [sys.executable, "-m", "relay"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=open_files_at_most(256),
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert "ulimit -n" in lines[0] or "at least" in lines[0]


# -- nothing for strangers -----------------------------------------------------------------------------------

INSTRUCTIONS = "Speak only about the weather in Lisbon; internal note 7f3a"


async def test_strangers_learn_only_what_the_sign_in_page_needs(
    start_relay: Any, fake_upstream: FakeRealtimeServer
) -> None:
    relay: ProxiedRelay[Any] = await start_relay(
        upstream_url=fake_upstream.url,
        access_tokens=TOKEN,
        instructions=INSTRUCTIONS,
        locked_fields="instructions",
        allowed_models="gpt-realtime,gpt-realtime-mini",
    )
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        stranger = await client.get("/api/config")
        assert stranger.status_code == 200
        body = stranger.json()
        assert set(body) == {"simulated", "auth"}, body
        assert body["auth"]["required"] is True and body["auth"]["authenticated"] is False
        assert body["auth"]["methods"] == ["token"]
        for secret in ("Lisbon", "instructions", "gpt-realtime-mini", "locked"):
            assert secret not in stranger.text, secret
        signed_in = await client.get("/api/config", headers={"Authorization": f"Bearer {TOKEN}"})
        full = signed_in.json()
        assert full["auth"]["authenticated"] is True
        assert full["session"]["instructions"] == INSTRUCTIONS
        assert full["session"]["locked_fields"] == ["instructions"]
        assert (await client.post("/auth/login", json={"token": TOKEN})).status_code == 204
        assert (await client.get("/api/config")).json()["session"]["instructions"] == INSTRUCTIONS


async def test_readiness_counts_only_for_this_machine(
    start_relay: Any, fake_upstream: FakeRealtimeServer
) -> None:
    relay: ProxiedRelay[Any] = await start_relay(upstream_url=fake_upstream.url, access_tokens=TOKEN)
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        local = (await client.get("/readyz")).json()
        assert local["status"] == "ready" and local["sessions"] == 0, local
        # Forwarded by the local proxy (a loopback peer) for someone else: status only.
        for headers in (
            {"X-Forwarded-For": "203.0.113.9"},
            {"X-Forwarded-For": "203.0.113.9", "Tailscale-Funnel-Request": "?1"},
            {"Tailscale-Funnel-Request": "?1"},
            {"Via": "1.1 some-proxy"},
        ):
            answer = await client.get("/readyz", headers=headers)
            assert answer.status_code == 200
            assert answer.json() == {"status": "ready", "simulated": False}, (headers, answer.text)


CSP_DIRECTIVES = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "frame-ancestors": "'none'",
}


def assert_security_headers(response: httpx.Response, what: str) -> dict[str, str]:
    headers = response.headers
    assert headers.get("x-content-type-options") == "nosniff", what
    assert headers.get("referrer-policy") == "no-referrer", what
    assert headers.get("x-frame-options") == "DENY", what
    assert headers.get("cross-origin-opener-policy") == "same-origin", what
    policy = headers.get("content-security-policy", "")
    directives = dict([*part.strip().split(" ", 1), ""][:2] for part in policy.split(";") if part.strip())
    return directives


async def test_security_headers_on_every_response(
    start_relay: Any, fake_upstream: FakeRealtimeServer
) -> None:
    relay: ProxiedRelay[Any] = await start_relay(upstream_url=fake_upstream.url, access_tokens=TOKEN)
    host = f"127.0.0.1:{relay.port}"
    paths = [
        "/",
        "/index.html",
        "/app.js",
        "/styles.css",
        "/worklets/capture.js",
        "/api/config",
        "/healthz",
        "/readyz",
        "/no-such-file.js",
    ]
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        for path in paths:
            response = await client.get(path)
            directives = assert_security_headers(response, path)
            for name, value in CSP_DIRECTIVES.items():
                assert directives.get(name) == value, (path, name, directives)
            connect = directives["connect-src"].split()
            assert connect[0] == "'self'" and f"ws://{host}" in connect, (path, connect)
            assert "wss:" not in connect and "*" not in directives["connect-src"], connect
            assert "unsafe-inline" not in directives.get("script-src", ""), path
        # Through a trusted proxy that says https, the WebSocket the page opens is wss:// on the public name.
        proxied = await client.get(
            "/", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "relay.example.ts.net"}
        )
        assert "wss://relay.example.ts.net" in assert_security_headers(proxied, "proxied")["connect-src"]
        # A Host header cannot write its own policy.
        sneaky = await client.get("/", headers={"Host": "evil.example; script-src *"})
        policy = sneaky.headers["content-security-policy"]
        assert "evil" not in policy and "script-src 'self'" in policy
        refused_login = await client.post("/auth/login", json={"token": "wrong"})
        assert refused_login.status_code == 401
        assert_security_headers(refused_login, "/auth/login")
    # The handshake's own refusals carry them too.
    refused = await exchange(relay.inner.port, handshake("/v1/realtime"))
    assert refused.status == 401
    assert refused.headers.get("x-content-type-options") == "nosniff"
    assert "frame-ancestors 'none'" in refused.headers.get("content-security-policy", "")


async def test_refusal_page_is_styled_under_its_own_policy(
    start_relay: Any, fake_upstream: FakeRealtimeServer
) -> None:
    relay: ProxiedRelay[Any] = await start_relay(upstream_url=fake_upstream.url)
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        page = await client.get("/", headers={"X-Forwarded-For": "203.0.113.9"})
    assert page.status_code == 403 and "Access refused" in page.text
    directives = assert_security_headers(page, "refusal page")
    assert directives["default-src"] == "'none'"
    digest = directives["style-src"].strip("'").removeprefix("sha256-")
    style = page.text.split("<style>", 1)[1].split("</style>", 1)[0]
    assert base64.b64encode(hashlib.sha256(style.encode()).digest()).decode() == digest
    assert "style=" not in page.text
