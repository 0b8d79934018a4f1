"""The OpenAI Agents SDK's `RealtimeRunner`, unmodified, holds a voice turn and a tool call with Gemini Live through
the relay's translation (the simulated Gemini server), at the page's 48 kHz."""

from __future__ import annotations

from typing import Any

import numpy as np
from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner
from agents.realtime.events import RealtimeAudio, RealtimeAudioEnd, RealtimeError, RealtimeToolEnd

from relay.providers.profiles import GEMINI_MODEL
from tests.conftest import ProxiedRelay
from tests.harness import InProcessRelay
from tests.provider_fixtures import Upstreams
from tests.test_agents_runner import events_until
from tests.test_provider_scenarios import voiced

RATE = 48000
CITIES: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    CITIES.append(city)
    return f"Sunny in {city}."


async def test_agents_runner_with_gemini(both: ProxiedRelay[InProcessRelay], upstreams: Upstreams) -> None:
    agent = RealtimeAgent(name="assistant", instructions="Be brief.", tools=[get_weather])
    url = both.ws_url + f"?provider=gemini&input_rate={RATE}&output_rate={RATE}"
    config: Any = {
        "url": url,
        "api_key": "unused-by-the-relay",
        "initial_model_settings": {"model_name": GEMINI_MODEL},
    }
    session = await RealtimeRunner(agent).run(model_config=config)
    seen: list[Any] = []
    async with session:
        audio = voiced(1.0, rate=RATE)
        for start in range(0, len(audio), RATE // 50 * 2):
            await session.send_audio(audio[start : start + RATE // 50 * 2])
        await events_until(session, RealtimeAudioEnd, seen)
        heard = b"".join(e.audio.data for e in seen if isinstance(e, RealtimeAudio))
        await session.send_message("Please call get_weather for Paris.")
        try:
            await events_until(session, RealtimeToolEnd, seen)
            await events_until(session, RealtimeAudioEnd, seen)
        except TimeoutError:
            raise AssertionError([e.error for e in seen if isinstance(e, RealtimeError)]) from None
    errors = [e for e in seen if isinstance(e, RealtimeError)]
    assert not errors, [e.error for e in errors]
    # The answer played the 1 s of speech back, delivered at the 48 kHz the URL asked for.
    assert 0.9 < len(heard) / (2 * RATE) < 1.6
    assert np.frombuffer(heard, dtype="<i2").std() > 100
    assert CITIES == ["example"]  # the simulated model fills a string argument with "example"
    setup = upstreams.gemini.connections[0].received[0]["setup"]
    assert setup["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
