"""Every way the upstream can fail reaches the client as an error event and a close code, in bounded time."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from relay.fake.server import FakeRealtimeServer
from tests.conftest import ProxiedRelay
from tests.harness import free_port
from tests.test_relay_sdk import voiced_turn


async def error_then_close(ws: ClientConnection, timeout: float = 5) -> tuple[dict[str, Any], int, float]:
    """Read until the relay closes; return the last error event, the close code and the seconds it took."""
    started = time.monotonic()
    errors: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                event = json.loads(await ws.recv())
                if event["type"] == "error":
                    errors.append(event)
    assert errors, "no error event before the close"
    assert ws.close_code is not None
    return errors[-1], ws.close_code, time.monotonic() - started


@pytest.mark.parametrize(
    ("status", "code", "close_code", "advice"),
    [
        (401, "relay_upstream_auth_failed", 4401, "OPENAI_API_KEY"),
        (403, "relay_upstream_auth_failed", 4401, "OPENAI_API_KEY"),
        (429, "relay_upstream_rate_limited", 4429, "Wait"),
        (500, "relay_upstream_unavailable", 4502, "Try again"),
    ],
)
async def test_upstream_refusal(
    relay: ProxiedRelay,
    fake_upstream: FakeRealtimeServer,
    status: int,
    code: str,
    close_code: int,
    advice: str,
) -> None:
    fake_upstream.options.refuse_status = status
    async with websockets.connect(relay.ws_url) as ws:
        error, closed_with, seconds = await error_then_close(ws)
    assert error["error"]["code"] == code
    assert str(status) in error["error"]["message"]
    assert advice in error["error"]["message"]
    assert closed_with == close_code
    assert seconds < 2


async def test_wrong_relay_key_is_reported_as_operator_problem(relay_factory: Any) -> None:
    relay = await relay_factory(api_key="not-the-right-key")
    async with websockets.connect(relay.ws_url) as ws:
        error, closed_with, _ = await error_then_close(ws)
    assert error["error"]["code"] == "relay_upstream_auth_failed"
    assert "not-the-right-key" not in json.dumps(error)
    assert closed_with == 4401


async def test_upstream_unreachable(relay_factory: Any) -> None:
    relay = await relay_factory(upstream_url=f"ws://127.0.0.1:{free_port()}/v1/realtime")
    async with websockets.connect(relay.ws_url) as ws:
        error, closed_with, seconds = await error_then_close(ws)
    assert error["error"]["code"] == "relay_upstream_unavailable"
    assert "could not reach" in error["error"]["message"]
    assert closed_with == 4502
    assert seconds < 2


async def test_upstream_stalling_on_connect_times_out(
    relay_factory: Any, fake_upstream: FakeRealtimeServer
) -> None:
    fake_upstream.options.handshake_delay = 30
    relay = await relay_factory(upstream_connect_timeout="0.5")
    async with websockets.connect(relay.ws_url) as ws:
        error, closed_with, seconds = await error_then_close(ws)
    assert error["error"]["code"] == "relay_upstream_timeout"
    assert "0.5 s" in error["error"]["message"]
    assert closed_with == 4504
    assert 0.4 < seconds < 2


async def test_upstream_dropping_mid_session(relay_factory: Any, fake_upstream: FakeRealtimeServer) -> None:
    # Without roll-over (tests/test_rollover.py covers it) a drop ends the session at once.
    relay = await relay_factory(rollover_retries="0")
    fake_upstream.options.drop_after_events = 2  # session.created, then the reply to the defaults
    async with websockets.connect(relay.ws_url) as ws:
        error, closed_with, seconds = await error_then_close(ws)
    assert error["error"]["code"] == "relay_upstream_unavailable"
    assert "lost mid-session" in error["error"]["message"]
    assert closed_with == 4502
    assert seconds < 2


async def test_malformed_upstream_frame_is_reported_and_session_continues(
    relay: ProxiedRelay, fake_upstream: FakeRealtimeServer
) -> None:
    fake_upstream.options.garbage_after_events = 1
    async with websockets.connect(relay.ws_url) as ws:
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(5):
            while not any(e["type"] == "error" for e in seen):
                seen.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            while seen[-1]["type"] != "input_audio_buffer.cleared":
                seen.append(json.loads(await ws.recv()))
    error = next(e for e in seen if e["type"] == "error")
    assert error["error"]["code"] == "relay_upstream_protocol_error"


async def test_client_leaving_mid_turn_closes_upstream_mid_response(
    relay: ProxiedRelay, fake_upstream: FakeRealtimeServer
) -> None:
    """A client that leaves does not keep a paid response running: it is cancelled and the upstream closed."""
    fake_upstream.options.pace_audio = True
    audio = voiced_turn()
    async with websockets.connect(relay.ws_url) as ws:
        for start in range(0, len(audio), 960):
            await ws.send(
                json.dumps(
                    {
                        "type": "input_audio_buffer.append",
                        "audio": base64.b64encode(audio[start : start + 960]).decode(),
                    }
                )
            )
        async with asyncio.timeout(10):
            while json.loads(await ws.recv())["type"] != "response.output_audio.delta":
                pass
        record = fake_upstream.connections[-1]
        assert not record.closed.is_set()
    # Leaving the `async with` closed the client socket mid-response; the model paces seconds of audio.
    await asyncio.wait_for(record.closed.wait(), 5)
    assert "response.output_audio.delta" in record.sent_types()
    # The relay cancelled the response, so the model stopped mid-reply (and reported the usage so far).
    assert "response.cancel" in record.received_types()
    [done] = [e for e in record.sent if e["type"] == "response.done"]
    assert done["response"]["status"] == "cancelled"
