"""The official `openai` SDK, unmodified, talks to the simulated model through the relay over real sockets."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
from openai import AsyncOpenAI

from relay.fake.server import FakeRealtimeServer
from tests.conftest import TEST_API_KEY, ProxiedRelay

CLIENT_TOKEN = "client-side-token-not-the-key"


def voiced_turn(rate: int = 24000) -> bytes:
    """0.3 s silence, 1.2 s of a voiced (harmonic, loud) signal, 1.0 s silence: one clear turn for the VAD."""
    t = np.arange(int(1.2 * rate)) / rate
    voice = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate((180, 360, 540, 720)))
    signal = np.concatenate([np.zeros(int(0.3 * rate)), 6000 * voice, np.zeros(int(1.0 * rate))])
    return signal.astype("<i2").tobytes()


async def collect_until(connection: Any, last_type: str, timeout: float = 15) -> list[Any]:
    events: list[Any] = []
    async with asyncio.timeout(timeout):
        async for event in connection:
            events.append(event)
            if event.type == last_type:
                return events
    raise AssertionError(f"connection ended before {last_type}")


async def test_official_sdk_voice_turn_through_relay(
    relay: ProxiedRelay, fake_upstream: FakeRealtimeServer
) -> None:
    client = AsyncOpenAI(api_key=CLIENT_TOKEN, base_url=f"{relay.base_url}/v1")
    audio = voiced_turn()
    async with client.realtime.connect(model="gpt-realtime") as connection:
        await connection.session.update(session={"type": "realtime", "instructions": "Answer briefly."})
        # 20 ms appends, as a live microphone would send them.
        for start in range(0, len(audio), 960):
            await connection.input_audio_buffer.append(
                audio=base64.b64encode(audio[start : start + 960]).decode()
            )
        events = await collect_until(connection, "response.done")
    types = [e.type for e in events]
    assert types[0] == "session.created"
    for expected in (
        "session.updated",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "response.created",
        "response.output_audio.delta",
        "response.output_audio_transcript.done",
        "response.done",
    ):
        assert expected in types, f"{expected} missing from {types}"
    assert types.index("input_audio_buffer.speech_stopped") < types.index("response.created")
    done = events[-1]
    assert done.response.status == "completed"
    reply = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
    assert len(reply) > 24000  # the simulated model plays back more than 0.5 s of the user's speech

    record = fake_upstream.connections[-1]
    assert record.request_headers["authorization"] == f"Bearer {TEST_API_KEY}"
    assert "openai-beta" not in record.request_headers
    assert CLIENT_TOKEN not in str(dict(record.request_headers))
    assert record.query.get("model") == "gpt-realtime"
    assert bytes(record.input_audio) == audio
    # The client's session.update went up after the relay's own defaults, unchanged.
    updates = [e for e in record.received if e["type"] == "session.update"]
    assert updates[0]["event_id"] == "relay_session_defaults"
    assert updates[-1]["session"]["instructions"] == "Answer briefly."
    await asyncio.wait_for(record.closed.wait(), 2)


async def test_events_sent_before_upstream_opens_are_held_in_order(
    relay_factory: Any, fake_upstream: FakeRealtimeServer
) -> None:
    fake_upstream.options.handshake_delay = 0.5
    relay = await relay_factory()
    client = AsyncOpenAI(api_key=CLIENT_TOKEN, base_url=f"{relay.base_url}/v1")
    async with client.realtime.connect(model="gpt-realtime") as connection:
        for n in range(20):
            await connection.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": f"message {n}"}],
                }
            )
        events = []
        async with asyncio.timeout(10):
            async for event in connection:
                events.append(event)
                if sum(e.type == "conversation.item.done" for e in events) == 20:
                    break
    record = fake_upstream.connections[-1]
    texts = [
        e["item"]["content"][0]["text"] for e in record.received if e["type"] == "conversation.item.create"
    ]
    assert texts == [f"message {n}" for n in range(20)]
    assert not [e for e in events if e.type == "error"]
