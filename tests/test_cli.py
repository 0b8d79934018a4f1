"""The `realtime-relay` command as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.harness import REPO


def run_command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_") and k != "OPENAI_API_KEY"}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        check=False,
    )


def test_without_key_or_demo_exits_naming_both_remedies() -> None:
    result = run_command()
    assert result.returncode != 0
    assert "OPENAI_API_KEY" in result.stderr
    assert "--demo" in result.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RELAY_PORT": "eighty"}, "RELAY_PORT"),
        ({"RELAY_PORT": "70000"}, "RELAY_PORT"),
        ({"RELAY_UPSTREAM_URL": "https://api.openai.com/v1/realtime"}, "RELAY_UPSTREAM_URL"),
        ({"RELAY_RESAMPLER": "best"}, "RELAY_RESAMPLER"),
        ({"RELAY_VOICE": "robot"}, "RELAY_VOICE"),
        ({"RELAY_MAX_SESSIONS": "0"}, "RELAY_MAX_SESSIONS"),
    ],
)
def test_bad_setting_stops_with_one_line_naming_it(env: dict[str, str], named: str) -> None:
    result = run_command("--demo", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "expected" in lines[0]


def test_bad_flag_value_names_the_flag() -> None:
    result = run_command("--demo", "--port", "-3")
    assert result.returncode == 2
    assert "--port" in result.stderr


def test_secret_setting_value_is_not_echoed() -> None:
    result = run_command(env={"OPENAI_API_KEY": "sk-visible-in-error", "RELAY_PORT": "nope"})
    assert "sk-visible-in-error" not in result.stderr + result.stdout


async def test_demo_serves_and_says_the_model_is_simulated(start_relay: Any, tmp_path: Path) -> None:
    relay = await start_relay("--demo", api_key=None)
    async with httpx.AsyncClient() as client:
        ready = await client.get(f"{relay.base_url}/readyz")
        page = await client.get(f"{relay.base_url}/")
        metrics_on_public = await client.get(f"{relay.base_url}/metrics")
        metrics = await client.get(relay.metrics_url)
    assert ready.status_code == 200
    assert ready.json()["simulated"] is True
    assert "SIMULATED" in ready.json()["note"]
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert metrics_on_public.status_code == 404
    assert metrics.status_code == 200 and "relay_sessions_active" in metrics.text
    async with websockets.connect(relay.ws_url) as ws:
        created = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert created["type"] == "session.created"
    assert created["session"]["model"] == "gpt-realtime"
    assert any(line.get("event") == "model_simulated" for line in relay.log_lines())


async def test_sigterm_drains_then_exits_cleanly(start_relay: Any) -> None:
    relay = await start_relay("--demo", api_key=None, drain_seconds="5")
    async with websockets.connect(relay.ws_url) as ws:
        await asyncio.wait_for(ws.recv(), 5)
        relay.inner.process.terminate()
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient() as client:
            ready = await client.get(f"{relay.base_url}/readyz")
        assert ready.status_code == 503
        # The open session is allowed to finish; the client leaves on its own, then the relay exits by itself.
    assert await asyncio.to_thread(relay.inner.process.wait, 10) == 0
    events = [line.get("event") for line in relay.log_lines()]
    assert "draining" in events and "session_closed" in events
