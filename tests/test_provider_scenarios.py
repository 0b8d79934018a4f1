"""The same voice, text, barge-in and tool-call scenarios against each simulated provider, through the relay,
with the official `openai` SDK as the client. Every server event is checked against the SDK's types (conftest)
and every message the simulated Gemini server sends against google-genai's `LiveServerMessage`."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from openai import AsyncOpenAI

from tests.conftest import ProxiedRelay
from tests.harness import InProcessRelay
from tests.provider_fixtures import Upstreams

CLIENT_TOKEN = "client-side-token-not-the-key"
PROVIDERS = ("openai", "gemini")
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def voiced(seconds: float, rate: int = 24000, lead: float = 0.3, tail: float = 1.0) -> bytes:
    """Silence, a loud harmonic signal for `seconds`, silence: one clear turn for any VAD."""
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate((180, 360, 540, 720)))
    signal = np.concatenate([np.zeros(int(lead * rate)), 6000 * voice, np.zeros(int(tail * rate))])
    return signal.astype("<i2").tobytes()


async def collect_until(connection: Any, done: Callable[[Any], bool], timeout: float = 15) -> list[Any]:
    events: list[Any] = []
    async with asyncio.timeout(timeout):
        async for event in connection:
            events.append(event)
            assert event.type != "error", event
            if done(event):
                return events
    raise AssertionError("connection ended early")


def is_done(event: Any) -> bool:
    return bool(event.type == "response.done")


async def text_turn(connection: Any, text: str) -> list[Any]:
    """A typed user message and a response.create; the events up to that response's response.done."""
    await connection.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await connection.response.create()
    return await collect_until(connection, is_done)


async def send_audio(connection: Any, pcm: bytes, frame: int = 960) -> None:
    for start in range(0, len(pcm), frame):
        await connection.input_audio_buffer.append(
            audio=base64.b64encode(pcm[start : start + frame]).decode()
        )


def connect(relay: ProxiedRelay[InProcessRelay], provider: str) -> Any:
    client = AsyncOpenAI(api_key=CLIENT_TOKEN, base_url=f"{relay.base_url}/v1")
    return client.realtime.connect(model="", extra_query={"provider": provider})


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_voice_turn(provider: str, both: ProxiedRelay[InProcessRelay], upstreams: Upstreams) -> None:
    async with connect(both, provider) as connection:
        await connection.session.update(
            session={
                "type": "realtime",
                "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}},
            }
        )
        await send_audio(connection, voiced(1.2))
        events = await collect_until(connection, is_done)
    types = [e.type for e in events]
    assert types[0] == "session.created"
    order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "response.created",
        "response.output_audio.delta",
        "response.output_audio_transcript.done",
        "response.done",
    ]
    positions = [types.index(kind) for kind in order]
    assert positions == sorted(positions), types
    done = events[-1].response
    assert done.status == "completed"
    assert done.usage is not None and done.usage.total_tokens > 0
    audio = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
    # Both simulated models play the user's speech back: about 1.2 s of it at 24 kHz.
    assert 1.0 < len(audio) / 48000 < 2.0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_text_turn(provider: str, both: ProxiedRelay[InProcessRelay]) -> None:
    async with connect(both, provider) as connection:
        events = await text_turn(connection, "hello there")
    transcript = next(e.transcript for e in events if e.type == "response.output_audio_transcript.done")
    assert transcript == "You said: hello there"
    assert events[-1].response.status == "completed"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_barge_in_cancels_the_answer(provider: str, both: ProxiedRelay[InProcessRelay]) -> None:
    async with connect(both, provider) as connection:
        await send_audio(connection, voiced(3.0))
        first = await collect_until(connection, lambda e: e.type == "response.output_audio.delta")
        assert "response.created" in [e.type for e in first]
        # The user speaks over the answer that is still playing.
        await send_audio(connection, voiced(1.0, lead=0.0))
        events = await collect_until(connection, is_done)
    types = [e.type for e in events]
    assert "input_audio_buffer.speech_started" in types
    assert types.index("input_audio_buffer.speech_started") < len(types) - 1
    done = events[-1].response
    assert done.status == "cancelled"
    assert done.status_details.reason == "turn_detected"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_tool_call_round_trip(provider: str, both: ProxiedRelay[InProcessRelay]) -> None:
    async with connect(both, provider) as connection:
        await connection.session.update(session={"type": "realtime", "tools": [WEATHER_TOOL]})
        first = await text_turn(connection, "Use get_weather for Paris")
        call = first[-1].response.output[-1]
        assert call.type == "function_call" and call.name == "get_weather"
        assert "city" in call.arguments
        await connection.conversation.item.create(
            item={"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "clear"}'}
        )
        await connection.response.create()
        second = await collect_until(connection, is_done)
    transcript = next(e.transcript for e in second if e.type == "response.output_audio_transcript.done")
    assert "clear" in transcript
