"""`./run-relay` as a newcomer types it, without OPENAI_API_KEY: demo mode for serving, every other command intact."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import websockets

from tests.harness import REPO, free_port, stop_process

RUN_RELAY = str(REPO / "run-relay")


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_") and k != "OPENAI_API_KEY"}
    env["RELAY_LOG_FORMAT"] = "json"
    return env


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUN_RELAY, *args], env=clean_env(), capture_output=True, text=True, timeout=60, cwd=REPO, check=False
    )


@contextlib.contextmanager
def running(*args: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [RUN_RELAY, *args],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        yield process
    finally:
        stop_process(process)


def wait_until(check: Callable[[], bool], process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert process.poll() is None, f"exited with {process.returncode}: {process.communicate()}"
        assert time.monotonic() < deadline, "did not come up in time"
        time.sleep(0.1)


def test_help_shows_the_commands_not_a_start_up_line() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    assert "fake-upstream" in result.stdout and "bench" in result.stdout and "serve" in result.stdout
    assert "OPENAI_API_KEY" in result.stdout and "RELAY_COOKIE_SECRET" in result.stdout
    assert result.stderr == ""


def test_bad_value_gets_its_error_and_nothing_that_suggests_it_started() -> None:
    result = run("--port", "notanumber")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "realtime-relay: --port='notanumber' is not valid: expected a number"
    ]


@pytest.mark.parametrize("command", [["serve"], []], ids=["serve", "options-only"])
def test_serving_with_options_runs_the_simulated_model(command: list[str]) -> None:
    port, metrics_port = free_port(), free_port()
    with running(*command, "--port", str(port), "--metrics-port", str(metrics_port)) as process:

        def healthy() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            return False

        wait_until(healthy, process)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["simulated"] is True
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    first = json.loads(stderr.splitlines()[0])
    assert first["event"] == "relay_listening" and first["open"] == f"http://127.0.0.1:{port}/"
    assert "OPENAI_API_KEY is not set" in first["model"]


def test_fake_upstream_runs_without_a_key() -> None:
    port = free_port()
    with running("fake-upstream", "--port", str(port)) as process:

        async def handshake() -> str:
            async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime") as ws:
                return str(json.loads(await ws.recv())["type"])

        def answers() -> bool:
            with contextlib.suppress(OSError, websockets.WebSocketException):
                return asyncio.run(handshake()) == "session.created"
            return False

        wait_until(answers, process)


def test_bench_runs_without_a_key() -> None:
    result = run("bench", "resample", "--frames", "3")
    assert result.returncode == 0, result.stderr
    assert "low-latency" in result.stdout and "48000" in result.stdout
