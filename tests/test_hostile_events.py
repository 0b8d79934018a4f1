"""Frames built to walk around the policy, and upstreams that misbehave: each gets a truthful answer, and the
session carries on where it can."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve

from relay.bounds import SessionBounds
from relay.metrics import RelayMetrics
from relay.policy import SessionPolicy
from relay.session_state import SessionState
from tests.conftest import TEST_API_KEY
from tests.test_access import next_event, opened, refused_in_session

Script = Callable[[ServerConnection], Awaitable[None]]


@pytest.fixture
async def scripted_upstream() -> AsyncIterator[Callable[[Script], Awaitable[str]]]:
    """Start an upstream that plays `script` to each connection; returns its URL."""
    servers: list[Any] = []

    async def start(script: Script) -> str:
        async def handler(ws: ServerConnection) -> None:
            await ws.send(json.dumps(SESSION_CREATED))
            await script(ws)

        server = await serve(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/v1/realtime"

    yield start
    for server in servers:
        server.close()


SESSION_CREATED = {
    "type": "session.created",
    "event_id": "event_1",
    "session": {
        "type": "realtime",
        "object": "realtime.session",
        "id": "sess_1",
        "model": "gpt-realtime",
        "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}}},
    },
}
NO_DEFAULTS = {"instructions": "", "voice": ""}


async def test_locks_cover_everything_under_them_in_session_update_and_response_create(
    relay_factory: Any,
) -> None:
    relay = await relay_factory(locked_fields="audio.output,instructions")
    async with opened(relay.ws_url) as ws:
        await next_event(ws)
        voice = {"audio": {"output": {"voice": "ash"}}}
        for event, param in (
            ({"type": "response.create", "response": voice}, "response.audio.output"),
            ({"type": "session.update", "session": {"type": "realtime", **voice}}, "session.audio.output"),
            (
                {"type": "session.update", "session": {"type": "realtime", "audio": None}},
                "session.audio.output",
            ),
            ({"type": "response.create", "response": {"instructions": "be rude"}}, "response.instructions"),
        ):
            error = (await refused_in_session(ws, event))["error"]
            assert error["code"] == "relay_policy_violation" and error["param"] == param, event
        # What the lock does not cover still passes.
        await ws.send(
            json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {}}}})
        )
        assert (await next_event(ws))["type"] == "session.updated"


@pytest.mark.invalid_client_events
async def test_a_frame_with_duplicate_keys_is_refused(relay_factory: Any, fake_upstream: Any) -> None:
    relay = await relay_factory(locked_fields="instructions")
    async with opened(relay.ws_url) as ws:
        await next_event(ws)
        record = fake_upstream.connections[-1]
        sneaky = (
            '{"type":"session.update","session":{"type":"realtime","instructions":"be rude"},'
            '"type":"input_audio_buffer.clear","event_id":"evt_dup"}'
        )
        await ws.send(sneaky)
        error = (await next_event(ws))["error"]
        assert error["code"] == "relay_bad_event" and "'type'" in error["message"]
        assert error["event_id"] == "evt_dup"
        nested = '{"type":"session.update","session":{"type":"realtime","voice":"ash","voice":"echo"}}'
        await ws.send(nested)
        assert "'voice'" in (await next_event(ws))["error"]["message"]
        # An escaped quote is not a duplicate: it passes the exact check.
        await ws.send('{"type":"input_audio_buffer.clear","event_id":"evt_\\"quoted\\""}')
        await record.wait_for_received("input_audio_buffer.clear")
    assert not any(e.get("event_id") == "evt_dup" for e in record.received)
    assert all(e["type"] != "session.update" or "be rude" not in json.dumps(e) for e in record.received)


async def test_session_model_is_checked_against_the_allowed_models(relay_factory: Any) -> None:
    relay = await relay_factory(allowed_models="gpt-realtime,gpt-realtime-mini")
    async with opened(relay.ws_url) as ws:
        await next_event(ws)
        event = {"type": "session.update", "session": {"type": "realtime", "model": "gpt-realtime-expensive"}}
        error = (await refused_in_session(ws, event))["error"]
        assert error["code"] == "relay_policy_violation" and error["param"] == "session.model"
        assert "gpt-realtime-mini" in error["message"]


@pytest.mark.invalid_upstream_events
@pytest.mark.parametrize(
    ("malformed", "kind"),
    [
        ({"type": "session.updated", "session": None}, "session.updated"),
        ({"type": "session.updated", "session": "x"}, "session.updated"),
        ({"type": "rate_limits.updated", "rate_limits": 5}, "rate_limits.updated"),
        (
            {"type": "response.output_audio.delta", "response_id": "r", "delta": "@@@"},
            "response.output_audio.delta",
        ),
        ("[1, 2", "unparsable"),
    ],
)
async def test_a_malformed_upstream_event_is_reported_and_the_session_goes_on(
    start_relay: Any, scripted_upstream: Any, malformed: Any, kind: str
) -> None:
    # The relay runs as a process here, so that only what its client receives is checked against the SDK types.
    async def script(ws: ServerConnection) -> None:
        text = malformed if isinstance(malformed, str) else json.dumps(malformed)
        await ws.send(text)
        await ws.send(text)
        await ws.send(
            json.dumps({"type": "conversation.item.deleted", "event_id": "event_2", "item_id": "item_1"})
        )
        await ws.wait_closed()

    relay = await start_relay(upstream_url=await scripted_upstream(script), **NO_DEFAULTS)
    async with opened(relay.ws_url + "?output_rate=48000") as ws:
        assert (await next_event(ws))["type"] == "session.created"
        for _ in range(2):
            error = await next_event(ws)
            assert error["type"] == "error", error
            assert error["error"]["code"] == "relay_upstream_protocol_error"
            assert error["error"]["type"] == "server_error" and kind in error["error"]["message"]
        assert (await next_event(ws))["type"] == "conversation.item.deleted"
        assert ws.close_code is None
    logged = [line for line in relay.inner.log_lines() if line.get("event") == "upstream_event_malformed"]
    assert len(logged) == 1 and logged[0]["event_type"] == kind  # twice malformed, logged once


@pytest.mark.invalid_upstream_events
async def test_a_session_event_with_null_audio_parts_is_forwarded_not_fatal(
    relay_factory: Any, scripted_upstream: Any
) -> None:
    updated = {
        "type": "session.updated",
        "event_id": "event_3",
        "session": {"type": "realtime", "audio": {"input": None, "output": None}},
    }

    async def script(ws: ServerConnection) -> None:
        await ws.send(json.dumps(updated))
        await ws.wait_closed()

    relay = await relay_factory(upstream_url=await scripted_upstream(script), **NO_DEFAULTS)
    async with opened(relay.ws_url + "?input_rate=48000&output_rate=48000") as ws:
        assert (await next_event(ws))["type"] == "session.created"
        forwarded = await next_event(ws)
        assert forwarded["type"] == "session.updated" and forwarded["session"]["audio"]["input"] is None
        assert ws.close_code is None


@pytest.mark.parametrize("code", [3000, 4000, 4001, 4999])
async def test_upstream_application_close_codes_pass_through_with_their_reason(
    relay_factory: Any, scripted_upstream: Any, code: int
) -> None:
    long_reason = f"session ended by policy (key {TEST_API_KEY}) " + "x" * 200

    async def script(ws: ServerConnection) -> None:
        await ws.close(code, long_reason[:120])

    relay = await relay_factory(upstream_url=await scripted_upstream(script), **NO_DEFAULTS)
    async with opened(relay.ws_url) as ws:
        await next_event(ws)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == code
    assert ws.close_reason is not None
    assert ws.close_reason.startswith("session ended by policy") and "[redacted]" in ws.close_reason
    assert len(ws.close_reason.encode()) <= 123


async def test_an_upstream_that_stops_answering_pings_is_lost(relay_factory: Any) -> None:
    """A TCP peer that completes the handshake and then goes silent, like a dead network path."""
    from websockets.http11 import Request
    from websockets.server import ServerProtocol

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        protocol = ServerProtocol()
        while True:
            protocol.receive_data(await reader.read(4096))
            requests = [e for e in protocol.events_received() if isinstance(e, Request)]
            if requests:
                break
        protocol.send_response(protocol.accept(requests[0]))
        protocol.send_text(json.dumps(SESSION_CREATED).encode())
        writer.write(b"".join(protocol.data_to_send()))
        await asyncio.sleep(30)  # reads nothing more, answers no ping

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        relay = await relay_factory(
            upstream_url=f"ws://127.0.0.1:{port}/v1/realtime",
            heartbeat_seconds="1",
            rollover_retries="0",  # a lost upstream ends the session here; tests/test_rollover.py rolls over
            **NO_DEFAULTS,
        )
        async with opened(relay.ws_url) as ws:
            await next_event(ws)
            loop = asyncio.get_running_loop()
            started = loop.time()
            error = await next_event(ws, timeout=10)
            assert error["error"]["code"] == "relay_upstream_unavailable"
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 4502
            assert loop.time() - started < 2 + 2.5
    finally:
        server.close()


def test_transcription_usage_is_charged_to_the_budget() -> None:
    charged: list[int] = []

    def charge(tokens: int) -> None:
        charged.append(tokens)

    state = SessionState(
        metrics=RelayMetrics(),
        policy=SessionPolicy(),
        resampler_quality="low-latency",
        bounds=SessionBounds(),
        on_usage=charge,
    )
    completed = {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": "i",
        "transcript": "hi",
    }
    state.from_upstream_text(json.dumps({**completed, "usage": {"type": "tokens", "total_tokens": 17}}))
    state.from_upstream_text(json.dumps({**completed, "usage": {"type": "duration", "seconds": 2.05}}))
    assert charged == [17, 21]  # whisper-1 bills by duration: about one token per 100 ms of audio
    assert state.tokens_used == 38


def _carried_out(actions: Any) -> tuple[list[str], list[str]]:
    upstream, client = list(actions.to_upstream), list(actions.to_client)
    for step in actions.more or ():
        upstream += step.to_upstream
        client += step.to_client
    return upstream, client


def test_a_large_append_is_decoded_and_resampled_in_slices_exactly_as_whole() -> None:
    def state() -> SessionState:
        return SessionState(
            metrics=RelayMetrics(),
            policy=SessionPolicy(),
            resampler_quality="low-latency",
            bounds=SessionBounds(),
            input_rate=48000,
        )

    rng = np.random.default_rng(7)
    pcm = (rng.standard_normal(48000 * 4) * 3000).astype("<i2").tobytes()  # 4 s: 512 kB of base64
    text = json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
    sliced = state()
    actions = sliced.from_client_text(text)
    assert actions.more is not None and not actions.to_upstream  # nothing goes up before all of it decoded
    upstream, client = _carried_out(actions)
    assert client == [] and len(upstream) > 1
    whole = state()
    resampler = whole._input_resampler
    assert resampler is not None
    expected = resampler.process(pcm)
    got = b"".join(base64.b64decode(json.loads(t)["audio"]) for t in upstream)
    assert got == expected

    # A bad character near the end refuses the whole frame: nothing of it reaches the upstream.
    bad = text[:-100] + "!" + text[-99:]
    upstream, client = _carried_out(state().from_client_text(bad))
    assert upstream == []
    [error] = [json.loads(t)["error"] for t in client]
    assert error["code"] == "relay_bad_audio" and "Nothing of it was forwarded" in error["message"]
