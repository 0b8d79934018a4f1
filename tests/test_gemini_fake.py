"""The simulated Gemini Live server, driven by Google's own client (`google-genai`'s `client.aio.live.connect`),
so that its protocol is checked against Google's code rather than our reading of the documentation. Every message
it sends is also validated against `LiveServerMessage` (which forbids unknown keys)."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from google import genai
from google.genai import errors, types

from relay.fake.gemini.options import GeminiOptions
from relay.fake.gemini.server import FakeGeminiServer
from relay.providers.profiles import GEMINI_MODEL
from tests.conftest import TEST_API_KEY
from tests.gemini_checks import GeminiChecker
from tests.harness import REPO, free_port, stop_process
from tests.tls import loopback_tls


def voiced16k(seconds: float, lead: float = 0.3, tail: float = 1.0) -> bytes:
    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate((180, 360, 540, 720)))
    signal = np.concatenate([np.zeros(int(lead * rate)), 6000 * voice, np.zeros(int(tail * rate))])
    return signal.astype("<i2").tobytes()


_CLIENT_TLS: dict[str, ssl.SSLContext] = {}


@pytest.fixture
async def checked(tmp_path: Path) -> AsyncIterator[tuple[FakeGeminiServer, GeminiChecker]]:
    checker = GeminiChecker()
    server = FakeGeminiServer(GeminiOptions(api_key=TEST_API_KEY, check=checker, first_audio_delay=0.05))
    # google-genai dials wss:// whatever the base URL says, so the simulated server speaks TLS here.
    server_tls, _CLIENT_TLS["ctx"] = loopback_tls(tmp_path)
    await server.start("127.0.0.1", 0, tls=server_tls)
    try:
        yield server, checker
    finally:
        await server.stop()
    assert checker.checked > 0
    assert not checker.problems, "\n".join(checker.problems)


def client_for(server: FakeGeminiServer, key: str = TEST_API_KEY) -> genai.Client:
    options = types.HttpOptions(base_url=server.base_url, async_client_args={"ssl": _CLIENT_TLS["ctx"]})
    return genai.Client(api_key=key, http_options=options)


async def until_turn_complete(session: Any, timeout: float = 10) -> list[types.LiveServerMessage]:
    messages: list[types.LiveServerMessage] = []
    async with asyncio.timeout(timeout):
        async for message in session.receive():
            messages.append(message)
            if message.server_content and message.server_content.turn_complete:
                return messages
            if message.tool_call:
                return messages
    return messages


_CONFIG: dict[str, Any] = {
    "response_modalities": ["AUDIO"],
    "input_audio_transcription": {},
    "output_audio_transcription": {},
    "session_resumption": {},
    "speech_config": {"voice_config": {"prebuilt_voice_config": {"voice_name": "Kore"}}},
}


def live_config(**extra: Any) -> types.LiveConnectConfig:
    return types.LiveConnectConfig.model_validate({**_CONFIG, **extra})


CONFIG = live_config()


async def test_sdk_voice_turn_with_automatic_activity_detection(
    checked: tuple[FakeGeminiServer, GeminiChecker],
) -> None:
    server, _ = checked
    async with client_for(server).aio.live.connect(model=GEMINI_MODEL, config=CONFIG) as session:
        audio = voiced16k(1.0)
        for start in range(0, len(audio), 640):
            await session.send_realtime_input(
                audio=types.Blob(data=audio[start : start + 640], mime_type="audio/pcm;rate=16000")
            )
        messages = await until_turn_complete(session)
    record = server.connections[0]
    setup = record.received[0]["setup"]
    assert setup["model"] == f"models/{GEMINI_MODEL}"
    assert record.request_headers["x-goog-api-key"] == TEST_API_KEY
    assert record.input_rates == {16000}
    activity = [m.voice_activity.voice_activity_type for m in messages if m.voice_activity]
    assert activity == [types.VoiceActivityType.ACTIVITY_START, types.VoiceActivityType.ACTIVITY_END]
    heard = "".join(
        m.server_content.input_transcription.text or ""
        for m in messages
        if m.server_content and m.server_content.input_transcription
    )
    assert heard.startswith("(speech, 1.")
    # The SDK decodes the audio parts; the answer plays the speech back at 24 kHz.
    spoken = b"".join(m.data for m in messages if m.data)
    assert 0.9 < len(spoken) / 48000 < 1.6
    said = "".join(
        m.server_content.output_transcription.text or ""
        for m in messages
        if m.server_content and m.server_content.output_transcription
    )
    assert said.startswith("You spoke for 1.")
    usage = messages[-1].usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.response_token_count
    assert usage.total_token_count == usage.prompt_token_count + usage.response_token_count
    assert any(m.server_content and m.server_content.generation_complete for m in messages)


async def test_sdk_text_turn_tool_call_and_resumption_handle(
    checked: tuple[FakeGeminiServer, GeminiChecker],
) -> None:
    server, _ = checked
    tools = [
        {
            "function_declarations": [
                {
                    "name": "get_weather",
                    "description": "Weather.",
                    "parameters_json_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                }
            ]
        }
    ]
    async with client_for(server).aio.live.connect(
        model=GEMINI_MODEL, config=live_config(tools=tools)
    ) as session:
        await session.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text="call get_weather for Rome")]),
            turn_complete=True,
        )
        messages = await until_turn_complete(session)
        call = messages[-1].tool_call
        assert call is not None and call.function_calls
        assert call.function_calls[0].name == "get_weather" and call.function_calls[0].args == {
            "city": "example"
        }
        await session.send_tool_response(
            function_responses=[
                types.FunctionResponse(
                    id=call.function_calls[0].id, name="get_weather", response={"sky": "clear"}
                )
            ]
        )
        answer = await until_turn_complete(session)
        handles = []
        async with asyncio.timeout(5):
            async for message in session.receive():
                if message.session_resumption_update:
                    handles.append(message.session_resumption_update.new_handle)
                    break
    said = "".join(
        m.server_content.output_transcription.text or ""
        for m in answer
        if m.server_content and m.server_content.output_transcription
    )
    assert said == 'The function returned: {"sky":"clear"}'
    assert handles and handles[0]
    # The handle resumes the same conversation on a new connection.
    resumed = live_config(session_resumption={"handle": handles[0]})
    async with client_for(server).aio.live.connect(model=GEMINI_MODEL, config=resumed) as session:
        await session.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text="again")]), turn_complete=True
        )
        await until_turn_complete(session)
    second = server.connections[1]
    assert second.model is not None and second.model.resumed_from == handles[0]
    assert [t[0] for t in second.model.memory.turns][:2] == ["user", "user"]


async def test_go_away_comes_before_the_connection_limit(
    checked: tuple[FakeGeminiServer, GeminiChecker],
) -> None:
    server, _ = checked
    server.options.connection_seconds = 0.6
    server.options.go_away_seconds = 0.3
    async with client_for(server).aio.live.connect(model=GEMINI_MODEL, config=CONFIG) as session:
        seen = []
        async with asyncio.timeout(5):
            async for message in session.receive():
                seen.append(message)
                if message.go_away:
                    break
    assert seen[-1].go_away is not None and seen[-1].go_away.time_left == "0.3s"
    await asyncio.wait_for(server.connections[0].closed.wait(), 5)
    assert server.connections[0].close_code == 1000


@pytest.mark.parametrize(
    ("key", "model", "reason"),
    [
        ("not-the-key", GEMINI_MODEL, "API key not valid"),
        (TEST_API_KEY, "gemini-unknown", "is not found"),
    ],
)
async def test_refusals_reach_the_sdk_as_errors(
    key: str, model: str, reason: str, checked: tuple[FakeGeminiServer, GeminiChecker]
) -> None:
    server, checker = checked
    checker.checked += 1  # a refused connection sends no message to check
    with pytest.raises(errors.APIError, match=reason):
        async with client_for(server, key).aio.live.connect(model=model, config=CONFIG) as session:
            await until_turn_complete(session, timeout=2)


async def test_the_command_serves_it_with_a_short_connection_limit() -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "relay",
            "fake-upstream",
            "--kind",
            "gemini",
            "--port",
            str(port),
            "--connection-seconds",
            "1.5",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"ws://127.0.0.1:{port}/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
        async with asyncio.timeout(15):
            while True:
                try:
                    ws = await websockets.connect(url)
                    break
                except OSError:
                    await asyncio.sleep(0.1)
        async with ws:
            await ws.send(json.dumps({"setup": {"model": f"models/{GEMINI_MODEL}"}}))
            assert "setupComplete" in json.loads(await ws.recv())
            async with asyncio.timeout(5):
                go_away = json.loads(await ws.recv())
            assert go_away == {"goAway": {"timeLeft": "0.75s"}}
    finally:
        stop_process(process)
