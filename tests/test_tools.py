"""Server tools through the relay, over real sockets: real MCP servers as processes (the demo server over stdio,
started by the relay; the test server over streamable HTTP, started here), the simulated model calling them when
the user names them, and the official `openai` SDK and the Agents SDK runner as clients.

Every event on every socket is checked against the SDK's types (tests/sdk_events.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from openai import AsyncOpenAI

from relay.fake.server import ConnectionRecord, FakeRealtimeServer
from relay.fake.spoken import say
from tests.conftest import ProxiedRelay
from tests.harness import REPO, InProcessRelay, free_port, stop_process

RATE = 24000
FRAME = RATE // 50 * 2  # 20 ms of PCM16
Start = Callable[..., Awaitable[ProxiedRelay[InProcessRelay]]]


@pytest.fixture(scope="module")
def http_tool_server() -> Iterator[str]:
    """The misbehaving test MCP server (tests/tool_server.py) over streamable HTTP, as its own process."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.tool_server", "--http", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                stop_process(process)
                raise RuntimeError("the test MCP server did not start") from None
            time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop_process(process, 5)


@pytest.fixture
def tools_file(tmp_path: Path, http_tool_server: str) -> Path:
    path = tmp_path / "tools.toml"
    path.write_text(
        f'[servers.demo]\ncommand = ["{sys.executable}", "-m", "relay.demo_tools"]\n\n'
        f'[servers.test]\nurl = "{http_tool_server}"\n'
    )
    return path


@pytest.fixture
async def tool_relay(relay_factory: Start, tools_file: Path) -> Start:
    async def start(**settings: str) -> ProxiedRelay[InProcessRelay]:
        return await relay_factory(**{"tools_file": str(tools_file), "tool_waiting_seconds": "0", **settings})

    return start


def spoken(text: str, rate: int = RATE) -> bytes:
    """A voice turn saying `text`: silence, the words, then enough silence for the VAD to end the turn."""
    pad = bytes(int(0.3 * rate) * 2)
    return pad + say(text, rate) + bytes(int(0.9 * rate) * 2)


async def speak(connection: Any, text: str) -> None:
    audio = spoken(text)
    for start in range(0, len(audio), FRAME):
        await connection.input_audio_buffer.append(
            audio=base64.b64encode(audio[start : start + FRAME]).decode()
        )


async def type_turn(connection: Any, text: str) -> None:
    await connection.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await connection.response.create()


async def events_until(connection: Any, done: Callable[[Any], bool], timeout: float = 20) -> list[Any]:
    events: list[Any] = []
    async with asyncio.timeout(timeout):
        async for event in connection:
            events.append(event)
            if done(event):
                return events
    raise AssertionError("the connection ended early")


def nth_done(count: int) -> Callable[[Any], bool]:
    seen = [0]

    def check(event: Any) -> bool:
        seen[0] += event.type == "response.done"
        return seen[0] >= count

    return check


def relay_mark(event: Any) -> Any:
    return (event.model_extra or {}).get("relay")


def sdk(relay: ProxiedRelay[InProcessRelay]) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="client-token", base_url=f"{relay.base_url}/v1")


def outputs_sent(record: ConnectionRecord) -> list[dict[str, Any]]:
    return [
        e["item"]
        for e in record.received
        if e["type"] == "conversation.item.create" and e["item"].get("type") == "function_call_output"
    ]


def follow_ups(record: ConnectionRecord) -> list[dict[str, Any]]:
    return [
        e
        for e in record.received
        if e["type"] == "response.create"
        and ((e.get("response") or {}).get("metadata") or {}).get("relay") == "tool_followup"
    ]


def calls_total(relay: ProxiedRelay[InProcessRelay], tool: str, outcome: str) -> float:
    value = relay.metrics.registry.get_sample_value(
        "relay_tool_calls_total", {"tool": tool, "outcome": outcome}
    )
    return float(value or 0)


async def test_a_spoken_turn_calls_a_demo_tool_and_the_answer_follows(
    tool_relay: Start, fake_upstream: FakeRealtimeServer
) -> None:
    relay = await tool_relay()
    weather: Any = {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    async with sdk(relay).realtime.connect(model="gpt-realtime") as connection:
        await connection.session.update(session={"type": "realtime", "tools": [weather]})
        await speak(connection, "what is the current time")
        events = await events_until(connection, nth_done(2))
        record = fake_upstream.connections[-1]

        # The model called the demo tool (over stdio) when it heard its name; the client saw it, marked.
        call = next(
            e for e in events if e.type == "response.output_item.done" and e.item.type == "function_call"
        )
        assert call.item.name == "current_time" and orjson.loads(call.item.arguments) == {"timezone": "UTC"}
        assert relay_mark(call) == {"server_tool": True}
        output = next(
            e for e in events if e.type == "conversation.item.done" and e.item.type == "function_call_output"
        )
        assert output.item.call_id == call.item.call_id and relay_mark(output) == {"server_tool": True}
        result = orjson.loads(output.item.output)["result"]
        assert result["timezone"] == "UTC" and len(result["time"]) == 5
        # The output reached the model, then the relay asked it to go on, and the answer speaks of the result.
        assert [o["call_id"] for o in outputs_sent(record)] == [call.item.call_id]
        assert len(follow_ups(record)) == 1
        answer = [e for e in events if e.type == "response.output_audio_transcript.done"][-1]
        assert result["time"] in answer.transcript
        assert events[-1].response.status == "completed"
        assert any(e.type == "response.output_audio.delta" for e in events[events.index(output) :])

        # The client's own tool went up exactly as the client defined it, beside the server's.
        update = [e for e in record.received if e["type"] == "session.update"][-1]
        names = [t["name"] for t in update["session"]["tools"]]
        assert update["session"]["tools"][0] == weather
        assert set(names) == {
            "get_weather",
            "current_time",
            "convert_units",
            "capital_city",
            "slow_lookup",
            "hang_forever",
            "explode",
            "broken_json",
            "garbage_then_exit",
        }

        # A client may not answer a server call; the session goes on.
        await connection.conversation.item.create(
            item={"type": "function_call_output", "call_id": call.item.call_id, "output": "{}"}
        )
        refused = await events_until(connection, lambda e: e.type == "error")
        assert (
            refused[-1].error.code == "relay_policy_violation"
            and "server tool call" in refused[-1].error.message
        )

        # A client tool call passes through unmarked, and its output and response.create are the client's.
        await type_turn(connection, "what is the weather, get weather for Paris")
        events = await events_until(connection, nth_done(1))
        client_call = next(e for e in events if e.type == "response.output_item.done")
        assert client_call.item.name == "get_weather" and relay_mark(client_call) is None
        await connection.conversation.item.create(
            item={
                "type": "function_call_output",
                "call_id": client_call.item.call_id,
                "output": '{"sky": "clear"}',
            }
        )
        await connection.response.create()
        events = await events_until(connection, nth_done(1))
        assert (
            "clear" in [e for e in events if e.type == "response.output_audio_transcript.done"][-1].transcript
        )
    assert len(follow_ups(record)) == 1  # the relay asked nothing for the client's call
    assert calls_total(relay, "current_time", "ok") == 1
    assert calls_total(relay, "get_weather", "ok") == 0


async def test_tools_that_hang_raise_or_return_garbage_cost_only_their_call(
    tool_relay: Start, fake_upstream: FakeRealtimeServer
) -> None:
    relay = await tool_relay(tool_timeout_seconds="1")
    async with sdk(relay).realtime.connect(model="gpt-realtime") as connection:
        answers = {}
        for name, words in (
            ("hang_forever", "please hang forever"),
            ("explode", "now explode"),
            ("broken_json", "give me broken json"),
        ):
            started = time.monotonic()
            await type_turn(connection, words)
            events = await events_until(connection, nth_done(2))
            answers[name] = (
                [e for e in events if e.type == "response.output_audio_transcript.done"][-1].transcript,
                time.monotonic() - started,
            )
        record = fake_upstream.connections[-1]
        # Still a working session: a plain turn is answered.
        await type_turn(connection, "hello again")
        events = await events_until(connection, nth_done(1))
        assert events[-1].response.status == "completed"

    outputs = {o["call_id"]: orjson.loads(o["output"]) for o in outputs_sent(record)}
    assert len(outputs) == 3 and len(follow_ups(record)) == 3
    hang, boom, broken = outputs.values()
    assert "did not answer within 1 seconds" in hang["error"]
    assert "explode tool failed" in boom["error"]
    assert broken == {"result": "{'answer': 42,"}  # not JSON: read as text, the output itself stays JSON
    # The model heard each outcome and spoke about it; the hanging call ended at its timeout, not later.
    assert "did not answer" in answers["hang_forever"][0] and 1.0 <= answers["hang_forever"][1] < 6
    assert "failed" in answers["explode"][0]
    assert calls_total(relay, "hang_forever", "timeout") == 1
    assert calls_total(relay, "explode", "error") == 1
    assert calls_total(relay, "broken_json", "ok") == 1
    latency = relay.metrics.registry.get_sample_value(
        "relay_tool_call_seconds_count", {"tool": "hang_forever"}
    )
    assert latency == 1


class _TimedList(list[dict[str, Any]]):
    """The fake upstream's record of received events, noting when each arrived."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        super().__init__(items)
        self.arrived: dict[str, float] = {}

    def append(self, event: dict[str, Any]) -> None:
        if isinstance(event.get("event_id"), str):
            self.arrived[event["event_id"]] = time.perf_counter()
        super().append(event)


async def _open_quiet_session(
    relay: ProxiedRelay[InProcessRelay], fake: FakeRealtimeServer, stack: Any
) -> Any:
    """A session with manual turns (the streamed audio below never ends a turn), and its upstream's record."""
    connection = await stack.enter_async_context(sdk(relay).realtime.connect(model="gpt-realtime"))
    await connection.session.update(
        session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
    )
    await events_until(connection, lambda e: e.type == "session.updated")
    record = fake.connections[-1]
    record.received = _TimedList(record.received)
    record.sent = _TimedList(record.sent)
    return connection, record


async def _stream_audio(connection: Any, record: ConnectionRecord, words: str) -> dict[str, Any]:
    """Ask with `words`, then stream 3 s of real-time 20 ms appends; each append's client-to-upstream latency."""
    await type_turn(connection, words)
    events: list[Any] = []
    heard: dict[str, float] = {}

    async def read() -> None:
        async for event in connection:
            heard[event.event_id] = time.perf_counter()
            events.append(event)

    reader = asyncio.create_task(read())
    sent: dict[str, float] = {}
    frame = base64.b64encode(bytes(FRAME)).decode()
    began = time.perf_counter()
    for index in range(150):
        await asyncio.sleep(max(0.0, began + index * 0.02 - time.perf_counter()))
        event_id = f"audio_{index}"
        sent[event_id] = time.perf_counter()
        await connection.input_audio_buffer.append(audio=frame, event_id=event_id)
    await asyncio.sleep(0.5)
    reader.cancel()
    arrived = record.received.arrived  # type: ignore[attr-defined]
    spoken_at = record.sent.arrived  # type: ignore[attr-defined]
    return {
        "latencies": sorted(arrived[k] - v for k, v in sent.items() if k in arrived),
        "events": events,
        # Upstream to client: each audio delta, when the model sent it and how long it took to reach the client.
        "deltas": [
            (spoken_at[e.event_id], heard[e.event_id] - spoken_at[e.event_id])
            for e in events
            if e.type == "response.output_audio.delta"
        ],
    }


async def test_audio_keeps_its_pace_while_a_tool_runs(
    tool_relay: Start, fake_upstream: FakeRealtimeServer
) -> None:
    # The model is told to say it is looking 0.3 s into the call, so its audio flows while the tool runs.
    relay = await tool_relay(tool_waiting_seconds="0.3")
    async with contextlib.AsyncExitStack() as stack:
        (tool_conn, tool_record), (plain_conn, plain_record) = [
            await _open_quiet_session(relay, fake_upstream, stack) for _ in range(2)
        ]
        # Side by side: the same stream in two sessions at once, one of them with a 2 s tool call running.
        with_tool, without = await asyncio.gather(
            _stream_audio(tool_conn, tool_record, "slow lookup 2 please"),
            _stream_audio(plain_conn, plain_record, "just say hello"),
        )
    outputs = outputs_sent(tool_record)
    assert [orjson.loads(o["output"]) for o in outputs] == [{"result": {"waited": 2.0}}]
    assert outputs_sent(plain_record) == []
    for run in (with_tool, without):
        assert len(run["latencies"]) == 150
    p95 = [run["latencies"][int(0.95 * 150)] for run in (with_tool, without)]
    worst = [run["latencies"][-1] for run in (with_tool, without)]
    # Generous bounds for a shared 2-core machine: a forwarding loop that waited for the tool would show 2 s.
    assert p95[0] < max(3 * p95[1], 0.05), p95
    assert worst[0] < max(3 * worst[1], 0.25), worst
    # Audio from the model reached the client while the tool ran, as fast as in the session without a tool.
    call_done = tool_record.sent.arrived[
        next(e.event_id for e in with_tool["events"] if e.type == "response.output_item.done")
    ]
    during = sorted(lag for sent_at, lag in with_tool["deltas"] if call_done < sent_at < call_done + 2)
    plain = sorted(lag for _, lag in without["deltas"])
    assert len(during) >= 3 and plain, (during, plain)
    assert during[-1] < max(3 * plain[-1], 0.25), (during, plain)
    # Three responses: the call, the "still looking" one, the answer after the output.
    statuses = [e.response.status for e in with_tool["events"] if e.type == "response.done"]
    assert statuses == ["completed"] * 3, statuses
    assert len(follow_ups(tool_record)) == 1


async def test_a_barge_in_during_a_tool_call_gets_no_follow_up(
    tool_relay: Start, fake_upstream: FakeRealtimeServer
) -> None:
    relay = await tool_relay()
    async with sdk(relay).realtime.connect(model="gpt-realtime") as connection:
        await speak(connection, "slow lookup 1.5")
        await events_until(connection, lambda e: e.type == "response.done")
        record = fake_upstream.connections[-1]
        assert outputs_sent(record) == []  # the tool is still running
        # The user speaks again while it runs: their turn gets its own response.
        await speak(connection, "hello there")
        events = await events_until(connection, lambda e: e.type == "response.done")
        assert events[-1].response.status == "completed"
        await asyncio.sleep(1.5)
        output = await events_until(
            connection, lambda e: e.type == "conversation.item.done" and e.item.type == "function_call_output"
        )
        assert orjson.loads(output[-1].item.output) == {"result": {"waited": 1.5}}
        await asyncio.sleep(0.5)
    assert len(outputs_sent(record)) == 1
    assert follow_ups(record) == []  # the conversation moved on: no response.create after the output
    assert not any(e.type == "response.created" for e in output)


async def test_a_cancelled_response_gets_no_follow_up(
    tool_relay: Start, fake_upstream: FakeRealtimeServer
) -> None:
    relay = await tool_relay()
    async with sdk(relay).realtime.connect(model="gpt-realtime") as connection:
        await type_turn(connection, "what is the current time")
        await events_until(connection, lambda e: e.type == "response.created")
        await connection.response.cancel()
        events = await events_until(connection, lambda e: e.type == "response.done")
        assert events[-1].response.status == "cancelled"
        await asyncio.sleep(0.5)
        record = fake_upstream.connections[-1]
        assert follow_ups(record) == [] and outputs_sent(record) == []
        await type_turn(connection, "hello again")
        events = await events_until(connection, nth_done(1))
        assert events[-1].response.status == "completed"
    assert calls_total(relay, "current_time", "ok") == 0


async def test_two_sessions_calls_never_mix(tool_relay: Start, fake_upstream: FakeRealtimeServer) -> None:
    relay = await tool_relay()

    async def one(seconds: str) -> tuple[ConnectionRecord, list[Any]]:
        async with sdk(relay).realtime.connect(model="gpt-realtime") as connection:
            await type_turn(connection, f"slow lookup {seconds}")
            events = await events_until(connection, nth_done(2))
            call_id = next(e.item.call_id for e in events if e.type == "response.output_item.done")
            record = next(
                r
                for r in fake_upstream.connections
                if any(
                    e["type"] == "response.output_item.done" and e["item"].get("call_id") == call_id
                    for e in r.sent
                )
            )
            return record, events

    (first, first_events), (second, second_events) = await asyncio.gather(one("0.6"), one("0.3"))
    for record, events, seconds in ((first, first_events, 0.6), (second, second_events, 0.3)):
        call = next(
            e for e in events if e.type == "response.output_item.done" and e.item.type == "function_call"
        )
        outputs = outputs_sent(record)
        assert [o["call_id"] for o in outputs] == [call.item.call_id]
        assert orjson.loads(outputs[0]["output"]) == {"result": {"waited": seconds}}
        assert len(follow_ups(record)) == 1
    assert first is not second


async def test_the_agents_runner_sees_valid_events_with_server_calls_hidden(
    tool_relay: Start, fake_upstream: FakeRealtimeServer
) -> None:
    from agents import function_tool
    from agents.realtime import RealtimeAgent, RealtimeRunner
    from agents.realtime.events import RealtimeAudioEnd, RealtimeError, RealtimeToolEnd, RealtimeToolStart

    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"Sunny in {city}."

    relay = await tool_relay(tool_calls="hidden")
    agent = RealtimeAgent(name="assistant", instructions="Be brief.", tools=[get_weather])
    config: Any = {
        "url": relay.ws_url + "?model=gpt-realtime",
        "api_key": "client-token",
        "initial_model_settings": {"model_name": "gpt-realtime"},
    }
    session = await RealtimeRunner(agent).run(model_config=config)
    seen: list[Any] = []

    async def until(wanted: type) -> None:
        async with asyncio.timeout(20):
            async for event in session:
                seen.append(event)
                if isinstance(event, wanted):
                    return

    async with session:
        audio = spoken("convert units 5 km to mi")
        for start in range(0, len(audio), FRAME):
            await session.send_audio(audio[start : start + FRAME])
        await until(RealtimeAudioEnd)  # the answer after the hidden server call
        await session.send_message("Please call get_weather for Paris.")
        await until(RealtimeToolEnd)
        await until(RealtimeAudioEnd)
    record = fake_upstream.connections[-1]
    assert not [e for e in seen if isinstance(e, RealtimeError)]
    # The runner saw only its own tool's call; the server's ran unseen, and its answer reached the runner.
    assert [e.tool.name for e in seen if isinstance(e, RealtimeToolStart)] == ["get_weather"]
    assert asked == ["example"]  # the simulated model fills free strings with a placeholder
    outputs = outputs_sent(record)
    assert orjson.loads(outputs[0]["output"]) == {"result": {"value": 3.1069, "unit": "mi"}}
    assert len(follow_ups(record)) == 1


async def test_demo_mode_offers_the_demo_tools_and_logs_each_call_once_without_arguments(
    start_relay: Callable[..., Awaitable[ProxiedRelay[Any]]],
) -> None:
    relay = await start_relay("--demo", api_key=None, tool_waiting_seconds="0")
    async with sdk(relay).realtime.connect(model="gpt-realtime") as connection:
        created = await events_until(connection, lambda e: e.type == "session.created")
        offered = {t.name for t in created[-1].session.tools or []}
        assert offered == {"current_time", "convert_units", "capital_city"}
        await type_turn(connection, "what is the capital city of japan")
        events = await events_until(connection, nth_done(2))
    answer = [e for e in events if e.type == "response.output_audio_transcript.done"][-1].transcript
    assert "Tokyo" in answer
    async with asyncio.timeout(5):
        while "tool_call" not in relay.log_text():
            await asyncio.sleep(0.05)
    [line] = [line for line in relay.log_lines() if line["event"] == "tool_call"]
    assert line["tool"] == "capital_city" and line["outcome"] == "ok" and line["session_id"]
    assert "arguments" not in line and "japan" not in relay.log_text()


def _start_up(tmp_path: Path, toml: str, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "tools.toml"
    path.write_text(toml)
    env = {
        "PATH": "/usr/bin:/bin",
        "RELAY_PORT": str(free_port()),
        "RELAY_METRICS_PORT": str(free_port()),
        "RELAY_TOOLS_FILE": str(path),
        "RELAY_TOOL_CONNECT_TIMEOUT": "3" if "sleep(60)" in toml else "20",
    }
    return subprocess.run(
        [sys.executable, "-m", "relay", "--demo"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        (
            f'[servers.one]\ncommand = ["{sys.executable}", "-m", "relay.demo_tools"]\n'
            f'[servers.two]\ncommand = ["{sys.executable}", "-m", "relay.demo_tools"]\n',
            "is offered by both MCP servers",
        ),
        ('[servers.gone]\nurl = "http://127.0.0.1:9/mcp"\n', "MCP server 'gone' (http://127.0.0.1:9/mcp)"),
        ('[servers.nothing]\ncommand = ["/nonexistent/tool-server"]\n', "MCP server 'nothing'"),
        (
            f'[servers.silent]\ncommand = ["{sys.executable}", "-c", "import time; time.sleep(60)"]\n',
            "did not answer within 3 s",
        ),
        (
            f'[servers.demo]\ncommand = ["{sys.executable}", "-m", "relay.demo_tools"]\n[access]\nx = ["no_such"]\n',
            "grants 'no_such'",
        ),
        ("[servers.demo\n", "is not valid TOML"),
    ],
)
def test_a_tool_server_that_cannot_be_used_stops_the_start_up(tmp_path: Path, toml: str, words: str) -> None:
    started = time.monotonic()
    result = _start_up(tmp_path, toml)
    assert result.returncode == 2, result.stderr[-2000:]
    assert words in result.stderr, result.stderr[-2000:]
    # Bounded by RELAY_TOOL_CONNECT_TIMEOUT, not by the server; and no server process is left behind holding the
    # pipes (subprocess.run waits for them to close).
    assert time.monotonic() - started < 25


async def test_identities_get_only_the_tools_granted_to_them(
    relay_factory: Start, tmp_path: Path, fake_upstream: FakeRealtimeServer
) -> None:
    path = tmp_path / "tools.toml"
    path.write_text(
        f'[servers.demo]\ncommand = ["{sys.executable}", "-m", "relay.demo_tools"]\n'
        '[access]\n"anonymous" = ["current_time"]\n"tailscale:*" = ["*"]\n'
    )
    relay = await relay_factory(tools_file=str(path))
    async with sdk(relay).realtime.connect(model="gpt-realtime") as connection:
        created = await events_until(connection, lambda e: e.type == "session.created")
        assert [t.name for t in created[-1].session.tools or []] == ["current_time"]
        # A tool this identity may not use is not offered, so the model cannot call it.
        await type_turn(connection, "convert units 5 km to mi")
        events = await events_until(connection, nth_done(1))
        assert not any(
            e.type == "response.output_item.done" and e.item.type == "function_call" for e in events
        )
    assert outputs_sent(fake_upstream.connections[-1]) == []


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_a_sessions_calls_run_within_its_concurrency_bound(
    tool_relay: Start, fake_upstream: FakeRealtimeServer, concurrency: int
) -> None:
    relay = await tool_relay(tool_concurrency=str(concurrency), tool_timeout_seconds="1", log_level="debug")
    with structlog.testing.capture_logs() as logs:
        async with sdk(relay).realtime.connect(model="gpt-realtime") as connection:
            # One response, two calls (parallel tool calls): one that hangs until its 1 s timeout, one of 0.3 s.
            await type_turn(connection, "hang forever and slow lookup 0.3")
            events = await events_until(connection, nth_done(2))
    items = [
        e.item for e in events if e.type == "response.output_item.done" and e.item.type == "function_call"
    ]
    assert [item.name for item in items] == ["hang_forever", "slow_lookup"]
    record = fake_upstream.connections[-1]
    by_name = {item.call_id: item.name for item in items}
    finished = [by_name[o["call_id"]] for o in outputs_sent(record)]
    # With one slot the quick call waits for the hanging one to time out; with four it does not.
    assert finished == (
        ["hang_forever", "slow_lookup"] if concurrency == 1 else ["slow_lookup", "hang_forever"]
    )
    assert len(follow_ups(record)) == 1  # one follow-up, once both outputs are in
    # At debug level each call's line carries its arguments.
    lines = [line for line in logs if line.get("event") == "tool_call"]
    assert {line["tool"]: line["arguments"] for line in lines} == {
        "hang_forever": "{}",
        "slow_lookup": '{"seconds":0.3}',
    }


async def test_a_tool_server_that_writes_garbage_and_dies_costs_only_its_calls(
    relay_factory: Start, tmp_path: Path, fake_upstream: FakeRealtimeServer
) -> None:
    path = tmp_path / "tools.toml"
    path.write_text(
        f'[servers.flaky]\ncommand = ["{sys.executable}", "-m", "tests.tool_server"]\n'
        f'env = {{ PYTHONPATH = "{REPO}" }}\n'
    )
    relay = await relay_factory(tools_file=str(path), tool_timeout_seconds="3", tool_waiting_seconds="0")
    async with sdk(relay).realtime.connect(model="gpt-realtime") as connection:
        started = time.monotonic()
        await type_turn(connection, "garbage then exit")
        await events_until(connection, nth_done(2))
        first_took = time.monotonic() - started
        # The server is gone: a later call gets an error output too, and the session still answers plain turns.
        await type_turn(connection, "now explode")
        await events_until(connection, nth_done(2))
        await type_turn(connection, "hello again")
        events = await events_until(connection, nth_done(1))
        assert events[-1].response.status == "completed"
    first, second = (orjson.loads(o["output"]) for o in outputs_sent(fake_upstream.connections[-1]))
    assert "error" in first and first_took < 8
    assert "explode" in second["error"] and ("unavailable" in second["error"] or "failed" in second["error"])
