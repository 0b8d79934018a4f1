"""The simulated model measured against the `openai` SDK's types and the API's documented behaviour.

Every socket here is checked by the suite's SDK validation; events made without a socket are checked explicitly.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from relay.fake.model import FakeOptions, SimulatedModel
from relay.fake.server import FakeRealtimeServer
from tests.harness import REPO, free_port
from tests.sdk_events import server_event_problems
from tests.test_fake_model import error_of, feed, manual_model, pcm, silence, text_turn, tone, types
from tests.test_fake_server import manual_turns, recv, recv_until, send


@pytest.fixture
async def server() -> AsyncIterator[FakeRealtimeServer]:
    async with FakeRealtimeServer(FakeOptions()) as fake:
        yield fake


def valid(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    problems = [p for e in events for p in server_event_problems(e)]
    assert not problems, problems
    return events


CURRENT_FIELDS: dict[str, Any] = {
    "type": "realtime",
    "reasoning": {"effort": "low"},
    "parallel_tool_calls": False,
    "audio": {
        "input": {
            "transcription": {
                "model": "gpt-live-transcribe",
                "languages": ["en", "fr"],
                "keywords": ["relay"],
                "delay": "minimal",
            },
            "noise_reduction": {"type": "near_field", "strength": 0.5},
        },
        "output": {"voice": {"id": "voice_custom_1"}},
    },
}


def test_current_session_fields_are_accepted_and_kept() -> None:
    model = SimulatedModel(FakeOptions(), "gpt-realtime")
    [updated] = valid(model.handle({"type": "session.update", "session": CURRENT_FIELDS}))
    assert updated["type"] == "session.updated", updated
    session = updated["session"]
    assert session["reasoning"] == {"effort": "low"} and session["parallel_tool_calls"] is False
    transcription = session["audio"]["input"]["transcription"]
    assert transcription["languages"] == ["en", "fr"] and transcription["delay"] == "minimal"
    assert session["audio"]["input"]["noise_reduction"] == {"type": "near_field", "strength": 0.5}
    assert session["audio"]["output"]["voice"] == {"id": "voice_custom_1"}


def test_truncate_audio_end_ms_must_be_an_integer() -> None:
    model = manual_model()
    error = error_of(
        model.handle(
            {"type": "conversation.item.truncate", "item_id": "x", "content_index": 0, "audio_end_ms": 1.5}
        )
    )
    assert (error["code"], error["param"]) == ("invalid_type", "audio_end_ms")


def test_fault_switches_fail_responses_and_transcriptions() -> None:
    failing = manual_model(fail_responses=True)
    text_turn(failing, "hello")
    valid(failing.handle({"type": "response.create"}))
    stream = failing.pop_started_response()
    assert stream is not None
    [done] = valid(stream.drain())
    assert done["response"]["status"] == "failed"
    assert done["response"]["status_details"]["error"]["type"] == "server_error"

    limited = manual_model(rate_limit_after_responses=0)
    text_turn(limited, "hello")
    _, limits = valid(limited.handle({"type": "response.create"}))
    assert next(x for x in limits["rate_limits"] if x["name"] == "tokens")["remaining"] == 0
    stream = limited.pop_started_response()
    assert stream is not None
    [done] = valid(stream.drain())
    assert done["response"]["status_details"]["error"]["code"] == "rate_limit_exceeded"

    deaf = SimulatedModel(FakeOptions(fail_transcription=True), "gpt-realtime")
    update = {"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}
    deaf.handle({"type": "session.update", "session": update})
    feed(deaf, pcm(np.concatenate([silence(0.3), tone(1.0), silence(0.8)])))
    [transcript] = deaf.pop_background()
    assert types(valid(transcript.drain())) == ["conversation.item.input_audio_transcription.failed"]


async def test_an_unknown_model_is_refused_at_the_handshake(server: FakeRealtimeServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(server.url + "?model=not-a-model")
    assert refused.value.response.status_code == 400
    assert b"model_not_found" in refused.value.response.body
    async with connect(server.url + "?model=gpt-realtime-mini") as ws:
        assert (await recv(ws))["session"]["model"] == "gpt-realtime-mini"


async def speak_and_reply(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    audio = (np.sin(np.arange(int(24000 * seconds)) * 2 * np.pi * 440 / 24000) * 8000).astype("<i2")
    await send(ws, {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio.tobytes()).decode()})
    await send(ws, {"type": "input_audio_buffer.commit"})
    await send(ws, {"type": "response.create"})
    return await recv_until(ws, "response.done", timeout=10)


async def test_audio_arrives_faster_than_real_time_in_varying_chunks_after_a_delay(
    server: FakeRealtimeServer,
) -> None:
    async with connect(server.url) as ws:
        await manual_turns(ws)
        started = time.monotonic()
        events = await speak_and_reply(ws, 2.0)
        took = time.monotonic() - started
    deltas = [
        len(base64.b64decode(e["delta"])) // 48 for e in events if e["type"] == "response.output_audio.delta"
    ]
    played_s = sum(deltas) / 1000
    assert len(set(deltas)) > 2, deltas  # chunk sizes vary
    assert min(deltas[:-1]) >= server.options.chunk_ms[0] and max(deltas) <= server.options.chunk_ms[1]
    assert server.options.first_audio_delay > 0
    assert server.options.first_audio_delay <= took < played_s  # faster than real time, but not instant


async def test_transcription_is_incremental_and_may_follow_response_done(server: FakeRealtimeServer) -> None:
    server.options.first_audio_delay = 0.1
    server.options.transcription_delay = 1.5  # a slow transcriber: the short text reply is done first
    async with connect(server.url) as ws:
        await manual_turns(ws)
        update: dict[str, Any] = {"type": "realtime", "output_modalities": ["text"]}
        update["audio"] = {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}
        await send(ws, {"type": "session.update", "session": update})
        await recv_until(ws, "session.updated")
        events = await speak_and_reply(ws, 1.0)
        events += await recv_until(ws, "conversation.item.input_audio_transcription.completed")
    kinds = types(events)
    assert kinds.index("response.done") < kinds.index("conversation.item.input_audio_transcription.delta")
    assert kinds.count("conversation.item.input_audio_transcription.delta") > 1
    assert kinds.index("rate_limits.updated") == kinds.index("response.created") + 1


async def test_server_error_switch_sends_one_error_and_the_session_goes_on(
    server: FakeRealtimeServer,
) -> None:
    server.options.server_error_after_events = 1
    async with connect(server.url) as ws:
        await recv(ws)
        error = await recv(ws)
        assert error["error"]["type"] == "server_error"
        await send(ws, {"type": "input_audio_buffer.clear"})
        assert (await recv(ws))["type"] == "input_audio_buffer.cleared"


async def test_transcription_session_transcribes_and_never_responds(server: FakeRealtimeServer) -> None:
    server.options.transcription_delay = 0.0
    async with connect(server.url + "?intent=transcription") as ws:
        created = await recv(ws)
        assert created["session"]["type"] == "transcription"
        speech = pcm(np.concatenate([silence(0.4), tone(1.0), silence(0.9)]))
        await send(ws, {"type": "input_audio_buffer.append", "audio": base64.b64encode(speech).decode()})
        events = await recv_until(ws, "conversation.item.input_audio_transcription.completed")
        await send(ws, {"type": "response.create", "event_id": "r"})
        error = (await recv_until(ws, "error"))[-1]["error"]
        await asyncio.sleep(0.1)
    assert "response.created" not in types(events)
    assert "input_audio_buffer.committed" in types(events)
    assert (error["code"], error["event_id"]) == ("invalid_value", "r")


async def test_fake_upstream_command_takes_the_fault_switches_and_pacing() -> None:
    port = free_port()
    command = [sys.executable, "-m", "relay", "fake-upstream", "--port", str(port), "--fail-responses"]
    process = subprocess.Popen([*command, "--first-audio-delay", "0.05", "--chunk-ms", "20", "60"], cwd=REPO)
    try:
        for _ in range(200):
            try:
                ws = await connect(f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime")
                break
            except OSError:
                await asyncio.sleep(0.05)
        async with ws:
            await manual_turns(ws)
            await send(ws, {"type": "response.create"})
            done = (await recv_until(ws, "response.done"))[-1]
        assert done["response"]["status"] == "failed"
    finally:
        process.terminate()
        process.wait(10)


def test_parallel_tool_calls_are_several_output_items_of_one_response() -> None:
    tools = [
        {"type": "function", "name": name, "parameters": {"type": "object", "properties": {}}}
        for name in ("get_weather", "get_time")
    ]
    for parallel, expected in ((True, ["get_weather", "get_time"]), (False, ["get_weather"])):
        model = manual_model()
        model.handle(
            {
                "type": "session.update",
                "session": {"type": "realtime", "tools": tools, "parallel_tool_calls": parallel},
            }
        )
        text_turn(model, "Please call get_weather and get_time.")
        valid(model.handle({"type": "response.create"}))
        stream = model.pop_started_response()
        assert stream is not None
        events = valid(stream.drain())
        added = [e for e in events if e["type"] == "response.output_item.added"]
        assert [e["item"]["name"] for e in added] == expected
        assert [e["output_index"] for e in added] == list(range(len(expected)))
        done = events[types(events).index("response.done")]["response"]
        assert [item["name"] for item in done["output"]] == expected
        assert all(item["status"] == "completed" for item in done["output"])
        arguments_done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
        assert [e["output_index"] for e in arguments_done] == list(range(len(expected)))
