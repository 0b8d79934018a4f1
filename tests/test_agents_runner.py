"""The OpenAI Agents SDK's `RealtimeRunner` through the relay at 48 kHz: a voice turn, then a tool call.

The runner parses every server event with the `openai` package's types and drops what fails, so this holds only if
the relay's session events keep the spec's 24000 (the client's 48000 is in the relay's own field) and the audio
it hears back is the 48 kHz the URL asked for.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner
from agents.realtime.events import (
    RealtimeAudio,
    RealtimeAudioEnd,
    RealtimeError,
    RealtimeRawModelEvent,
    RealtimeToolEnd,
)

from relay.fake.server import FakeRealtimeServer
from tests.audio_signals import speech_wav
from tests.conftest import ProxiedRelay

RATE = 48000
CALLS: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    CALLS.append(city)
    return f"Sunny in {city}."


async def events_until(session: Any, wanted: type, seen: list[Any], timeout: float = 20) -> Any:
    async def run() -> Any:
        async for event in session:
            seen.append(event)
            if isinstance(event, wanted):
                return event
        raise AssertionError(f"session ended before {wanted.__name__}")

    return await asyncio.wait_for(run(), timeout)


async def test_runner_holds_a_voice_turn_and_a_tool_call_at_48k(
    relay: ProxiedRelay, fake_upstream: FakeRealtimeServer
) -> None:
    agent = RealtimeAgent(name="assistant", instructions="Be brief.", tools=[get_weather])
    runner = RealtimeRunner(agent)
    url = relay.ws_url + f"?model=gpt-realtime&input_rate={RATE}&output_rate={RATE}"
    config: Any = {
        "url": url,
        "api_key": "unused-by-the-relay",
        "initial_model_settings": {"model_name": "gpt-realtime"},
    }
    session = await runner.run(model_config=config)
    seen: list[Any] = []
    async with session:
        speech = speech_wav("Hello, how are you today?", RATE)
        quiet = np.zeros(RATE, dtype="<i2")
        audio = np.concatenate([quiet[: RATE // 2], speech, quiet]).astype("<i2").tobytes()
        for start in range(0, len(audio), RATE // 50 * 2):  # 20 ms appends at 48 kHz
            await session.send_audio(audio[start : start + RATE // 50 * 2])
        await events_until(session, RealtimeAudioEnd, seen)
        heard = b"".join(e.audio.data for e in seen if isinstance(e, RealtimeAudio))
        await session.send_message("Please call get_weather for Paris.")
        await events_until(session, RealtimeToolEnd, seen)
        await events_until(session, RealtimeAudioEnd, seen)

    errors = [e for e in seen if isinstance(e, RealtimeError)]
    assert not errors, errors
    upstream = await fake_upstream.wait_for_connection()
    # The voice turn: what the model said at 24 kHz reached the runner at the 48 kHz the URL asked for.
    [first_reply] = [e for e in upstream.sent if e["type"] == "response.created"][:1]
    said = sum(
        len(base64.b64decode(e["delta"])) // 2
        for e in upstream.sent
        if e["type"] == "response.output_audio.delta" and e["response_id"] == first_reply["response"]["id"]
    )
    assert said > 24000 // 2  # the speech was heard and played back
    assert abs(len(heard) // 2 - 2 * said) <= 64, (len(heard) // 2, said)
    assert len(CALLS) == 1
    tool_end = next(e for e in seen if isinstance(e, RealtimeToolEnd))
    assert "Sunny" in str(tool_end.output)
    raw = [e.data for e in seen if isinstance(e, RealtimeRawModelEvent)]
    created = [getattr(d, "data", {}) for d in raw if getattr(d, "type", "") == "raw_server_event"]
    sessions = [d for d in created if isinstance(d, dict) and d.get("type") == "session.created"]
    assert sessions and sessions[0]["relay"] == {"input_rate": RATE, "output_rate": RATE}
    updates = [e for e in upstream.received if e["type"] == "session.update"]
    assert all(json.dumps(u).count("48000") == 0 for u in updates)  # the model only ever hears 24 kHz
