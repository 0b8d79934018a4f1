"""The simulated Realtime server over real loopback sockets: handshake rules, misbehaviour, voice turns, timing."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from openai import AsyncOpenAI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from relay.fake import FakeOptions, FakeRealtimeServer
from tests.protocol_sequences import VOICE_TURN

RATE = 24000
Event = dict[str, Any]


@pytest.fixture
async def server() -> AsyncIterator[FakeRealtimeServer]:
    async with FakeRealtimeServer() as fake:
        yield fake


def speech(seconds: float, dbfs: float = -15.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return 10 ** (dbfs / 20) * np.sqrt(2) * np.sin(2 * np.pi * 220 * t)


def pcm(*parts: np.ndarray) -> bytes:
    return (np.concatenate(parts) * 32767).astype("<i2").tobytes()


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE))


async def recv(ws: ClientConnection, timeout: float = 5.0) -> Event:
    event: Event = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return event


async def recv_until(ws: ClientConnection, event_type: str, timeout: float = 5.0) -> list[Event]:
    events: list[Event] = []
    while not events or events[-1]["type"] != event_type:
        events.append(await recv(ws, timeout))
    return events


async def send(ws: ClientConnection, event: Event) -> None:
    await ws.send(json.dumps(event))


async def stream_audio(ws: ClientConnection, audio: bytes, frame_ms: int = 20) -> int:
    """Send audio as 20 ms appends, as a microphone client does. Returns the number of appends."""
    size = frame_ms * RATE // 1000 * 2
    count = 0
    for offset in range(0, len(audio), size):
        chunk = base64.b64encode(audio[offset : offset + size]).decode()
        await send(ws, {"type": "input_audio_buffer.append", "audio": chunk})
        count += 1
    return count


# ----- handshake -----


async def manual_turns(ws: ClientConnection) -> None:
    """Read session.created, switch to manual turns and read session.updated."""
    await recv(ws)
    await send(
        ws,
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        },
    )
    await recv(ws)


async def test_auth_by_bearer_or_browser_subprotocol() -> None:
    key = "sk-test-0123456789"
    async with FakeRealtimeServer(FakeOptions(api_key=key)) as fake:
        for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
            with pytest.raises(InvalidStatus) as refused:
                await connect(fake.url, additional_headers=headers)
            response = refused.value.response
            assert response.status_code == 401
            assert response.headers["Content-Type"] == "application/json"
            body = json.loads(response.body)
            assert body["error"]["code"] == "invalid_api_key"
            assert key not in response.body.decode() and "sk-wrong" not in response.body.decode()
        async with connect(fake.url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
            assert (await recv(ws))["type"] == "session.created"
        async with connect(fake.url, subprotocols=["realtime", f"openai-insecure-api-key.{key}"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "realtime"
            assert (await recv(ws))["type"] == "session.created"
        statuses = [record.handshake_status for record in fake.connections]
        assert statuses == [401, 401, 101, 101]
        assert fake.connections[2].request_headers["authorization"] == f"Bearer {key}"


async def test_beta_header_is_refused_with_4000(server: FakeRealtimeServer) -> None:
    async with connect(server.url, additional_headers={"OpenAI-Beta": "realtime=v1"}) as ws:
        error = await recv(ws)
        assert error["type"] == "error"
        assert error["error"]["code"] == "beta_api_shape_disabled"
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 4000


async def test_refuse_status_changes_between_connections(server: FakeRealtimeServer) -> None:
    expected_codes = {403: "unsupported_country_region_territory", 429: "rate_limit_exceeded", 500: None}
    for status, code in expected_codes.items():
        server.options.refuse_status = status
        with pytest.raises(InvalidStatus) as refused:
            await connect(server.url)
        assert refused.value.response.status_code == status
        assert json.loads(refused.value.response.body)["error"]["code"] == code
        record = await server.wait_for_connection()
        assert record.handshake_status == status
    server.options.refuse_status = None
    async with connect(server.url + "?model=gpt-realtime-mini") as ws:
        created = await recv(ws)
        assert created["session"]["model"] == "gpt-realtime-mini"
    record = await server.wait_for_connection()
    assert record.query == {"model": "gpt-realtime-mini"}
    assert record.path == "/v1/realtime"


async def test_handshake_delay_stalls_the_upgrade(server: FakeRealtimeServer) -> None:
    server.options.handshake_delay = 5.0
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await connect(server.url, open_timeout=0.3)
    assert time.monotonic() - started < 1.0
    server.options.handshake_delay = 0.4
    started = time.monotonic()
    async with connect(server.url, open_timeout=3) as ws:
        elapsed = time.monotonic() - started
        assert (await recv(ws))["type"] == "session.created"
    print(f"handshake_delay=0.4 s: upgrade took {elapsed * 1000:.0f} ms")
    assert 0.4 <= elapsed < 1.0


async def test_stop_ends_a_stalled_handshake() -> None:
    fake = await FakeRealtimeServer(FakeOptions(handshake_delay=30.0)).start()

    async def attempt_connect() -> None:
        async with connect(fake.url, open_timeout=10):
            pass

    attempt = asyncio.create_task(attempt_connect())
    await fake.wait_for_connection()
    started = time.monotonic()
    await fake.stop()
    assert time.monotonic() - started < 2.0
    with pytest.raises((InvalidStatus, ConnectionError, OSError, ConnectionClosed)):
        await attempt


# ----- misbehaviour -----


async def test_drop_after_events_aborts_without_close_frame(server: FakeRealtimeServer) -> None:
    server.options.drop_after_events = 3
    async with connect(server.url) as ws:
        await send(ws, {"type": "session.update", "session": {"type": "realtime"}})
        await send(ws, {"type": "input_audio_buffer.clear"})
        await send(ws, {"type": "input_audio_buffer.clear"})
        got = [(await recv(ws))["type"] for _ in range(3)]
        assert got == ["session.created", "session.updated", "input_audio_buffer.cleared"]
        with pytest.raises(ConnectionClosedError) as closed:
            await recv(ws)
        assert closed.value.rcvd is None  # no close frame: the TCP connection was cut
    record = await server.wait_for_connection()
    assert await record.wait_closed() == 1006
    assert len(record.sent) == 3


async def test_garbage_after_events_sends_one_bad_frame(server: FakeRealtimeServer) -> None:
    server.options.garbage_after_events = 1
    async with connect(server.url) as ws:
        assert (await recv(ws))["type"] == "session.created"
        raw = await asyncio.wait_for(ws.recv(), 5)
        with pytest.raises(json.JSONDecodeError):
            json.loads(raw)
        await send(ws, {"type": "session.update", "session": {"type": "realtime"}})
        assert (await recv(ws))["type"] == "session.updated"


async def test_session_expiry_sends_error_and_closes_1001(server: FakeRealtimeServer) -> None:
    server.options.session_seconds = 0.3
    async with connect(server.url) as ws:
        assert (await recv(ws))["type"] == "session.created"
        error = await recv(ws, timeout=2)
        assert error["error"]["code"] == "session_expired"
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1001


# ----- conversation over the wire -----


async def test_voice_turn_streamed_in_20ms_appends(server: FakeRealtimeServer) -> None:
    audio = pcm(quiet(0.6), speech(1.2), quiet(0.8))
    async with connect(server.url) as ws:
        await recv(ws)
        appends = await stream_audio(ws, audio)
        events = await recv_until(ws, "response.done")
    collapsed = [e["type"] for e in events if not e["type"].endswith(".delta")]
    assert collapsed == VOICE_TURN
    assert abs(events[0]["audio_start_ms"] - (600 - 300)) <= 20
    assert abs(events[1]["audio_end_ms"] - (1800 + 500)) <= 20
    reply = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    assert 1.2 <= len(reply) / 2 / RATE <= 1.35
    record = await server.wait_for_connection()
    await record.wait_closed()
    assert bytes(record.input_audio) == audio
    assert record.received_types() == ["input_audio_buffer.append"] * appends
    assert record.close_code == 1000
    assert [e["type"] for e in record.sent[1:]] == [e["type"] for e in events]


async def test_barge_in_cancels_paced_reply_and_truncate(server: FakeRealtimeServer) -> None:
    server.options.pace_audio = True
    server.options.audio_speed = 1.0  # real time, so the reply is still streaming when the user speaks again
    async with connect(server.url) as ws:
        await recv(ws)
        await stream_audio(ws, pcm(quiet(0.3), speech(1.5), quiet(0.6)))
        before = await recv_until(ws, "response.output_audio.delta")
        item_id = next(e for e in before if e["type"] == "response.output_item.added")["item"]["id"]
        # Interrupt while the reply is still playing out at real-time pace.
        await stream_audio(ws, pcm(quiet(0.2), speech(0.4)))
        during = await recv_until(ws, "response.done")
        kinds = [e["type"] for e in during]
        assert "input_audio_buffer.speech_started" in kinds
        assert kinds.index("input_audio_buffer.speech_started") < kinds.index("response.done")
        response = during[-1]["response"]
        assert response["status"] == "cancelled"
        assert response["status_details"]["reason"] == "turn_detected"
        deltas = [e for e in before + during if e["type"] == "response.output_audio.delta"]
        received_ms = sum(len(base64.b64decode(e["delta"])) for e in deltas) / 48
        assert received_ms < 1500  # cut short: the full reply would be about 1.6 s
        await send(
            ws,
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": int(received_ms),
            },
        )
        truncated = await recv_until(ws, "conversation.item.truncated")
        assert truncated[-1]["audio_end_ms"] == int(received_ms)


async def test_first_audio_delay_is_precise(server: FakeRealtimeServer) -> None:
    server.options.first_audio_delay = 0.25
    server.options.pace_audio = True
    async with connect(server.url) as ws:
        await manual_turns(ws)
        measured = []
        for _ in range(3):
            await send(
                ws,
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "hi"}],
                    },
                },
            )
            await send(ws, {"type": "response.create"})
            await recv_until(ws, "response.created")
            created_at = time.monotonic()
            events = (await recv_until(ws, "response.output_audio.delta"))[-1:]
            first_at = time.monotonic()
            events += await recv_until(ws, "response.done")
            done_at = time.monotonic()
            audio_ms = sum(
                len(base64.b64decode(e["delta"])) / 48
                for e in events
                if e["type"] == "response.output_audio.delta"
            )
            measured.append((first_at - created_at, done_at - first_at, audio_ms))
    for first, span, audio_ms in measured:
        print(
            f"first audio after {first * 1000:.1f} ms; paced {audio_ms:.0f} ms of audio over {span * 1000:.0f} ms"
        )
        assert abs(first - 0.25) <= 0.02
        # Paced faster than real time, as the API sends: the reply ends at its playing time over audio_speed.
        speed = server.options.audio_speed
        assert speed > 1 and abs(span - audio_ms / 1000 / speed) <= 0.03


async def test_official_sdk_talks_to_the_fake() -> None:
    async with FakeRealtimeServer(FakeOptions(api_key="sk-local")) as fake:
        client = AsyncOpenAI(api_key="sk-local", base_url=f"http://127.0.0.1:{fake.port}/v1")
        async with client.realtime.connect(model="gpt-realtime") as conn:
            created = await asyncio.wait_for(conn.recv(), 5)
            assert created.type == "session.created"
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            await conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "ping"}]}
            )
            await conn.response.create()
            text = ""
            async for event in conn:
                if event.type == "response.output_text.delta":
                    text += event.delta
                if event.type == "response.done":
                    assert event.response.status == "completed"
                    break
        assert text == "You said: ping"
        record = await fake.wait_for_connection()
        assert record.query["model"] == "gpt-realtime"
        assert record.received_types() == ["session.update", "conversation.item.create", "response.create"]
        assert "openai-beta" not in record.request_headers


async def test_largest_append_fits_in_one_message(server: FakeRealtimeServer) -> None:
    limit = 15 * 1024 * 1024
    async with connect(server.url, max_size=None) as ws:
        await manual_turns(ws)
        await send(
            ws, {"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(limit)).decode()}
        )
        await send(
            ws,
            {
                "type": "input_audio_buffer.append",
                "event_id": "big",
                "audio": base64.b64encode(bytes(limit + 2)).decode(),
            },
        )
        error = await recv(ws)
        assert (error["error"]["code"], error["error"]["event_id"]) == ("invalid_value", "big")
        await send(ws, {"type": "input_audio_buffer.commit"})
        committed = await recv(ws)
        assert committed["type"] == "input_audio_buffer.committed"
    record = await server.wait_for_connection()
    await record.wait_for_received("input_audio_buffer.commit")
    assert len(record.input_audio) == limit  # the refused append is not part of what the model heard


async def test_client_cancel_stops_a_paced_reply(server: FakeRealtimeServer) -> None:
    server.options.pace_audio = True
    async with connect(server.url) as ws:
        await manual_turns(ws)
        await send(
            ws, {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm(speech(2.0))).decode()}
        )
        await send(ws, {"type": "input_audio_buffer.commit"})
        await send(ws, {"type": "response.create"})
        await recv_until(ws, "response.output_audio.delta")
        await send(ws, {"type": "response.cancel", "event_id": "stop"})
        events = await recv_until(ws, "response.done")
        assert events[-1]["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        audio_deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
        assert len(audio_deltas) < 5  # the 2 s reply was cut after a few 100 ms deltas
        await send(ws, {"type": "response.cancel", "event_id": "again"})
        error = (await recv_until(ws, "error"))[-1]
        assert (error["error"]["code"], error["error"]["event_id"]) == ("response_cancel_not_active", "again")
