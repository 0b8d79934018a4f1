"""The HTTP door against hostile clients, over real sockets to the relay running as a process: bad query values,
credentials that disagree, slow and idle connections, oversized heads, the connection cap, what strangers may see,
and the security headers on every response.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from relay.fake.server import FakeRealtimeServer
from tests.conftest import ProxiedRelay

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
