"""The `realtime-relay` command as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from relay.config import SETTINGS
from tests.harness import REPO, free_port


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


def test_help_lists_the_commands_and_the_settings_only_the_environment_gives() -> None:
    result = run_command("--help")
    assert result.returncode == 0, result.stderr
    for command in ("serve", "fake-upstream", "bench"):
        assert command in result.stdout
    env_only = [s.env for s in SETTINGS if s.secret]
    assert {"OPENAI_API_KEY", "RELAY_ACCESS_TOKENS", "RELAY_COOKIE_SECRET"} <= set(env_only)
    for env in env_only:
        assert env in result.stdout
    serve_help = run_command("serve", "--help")
    assert serve_help.returncode == 0 and "--upstream-url" in serve_help.stdout
    assert all(env in serve_help.stdout for env in env_only)


@pytest.mark.parametrize(
    ("args", "given", "meant", "also_named"),
    [
        # A secret has no flag; the near-miss must not be taken as --access-tokens-file (prefix matching).
        (
            ("--demo", "--access-tokens", "abc"),
            "--access-tokens",
            "--access-tokens-file",
            "RELAY_ACCESS_TOKENS",
        ),
        (("--demo", "--por", "9000"), "--por", "--port", None),
        (("serve", "--demo", "--metrics-prot=9000"), "--metrics-prot", "--metrics-port", None),
        (("fake-upstream", "--prot", "9000"), "--prot", "--port", None),
    ],
)
def test_unknown_option_is_refused_with_the_close_match(
    args: tuple[str, ...], given: str, meant: str, also_named: str | None
) -> None:
    result = run_command(*args)
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert f"unknown option {given}" in error
    assert f"Did you mean {meant}?" in error and "--help" in error
    assert also_named is None or also_named in error
    assert "file" not in error.replace("--access-tokens-file", "")


def test_bench_parsers_take_whole_option_names_only() -> None:
    result = run_command("bench", "resample", "--frame", "3")
    assert result.returncode == 2
    assert "--frames" in result.stderr


@pytest.mark.parametrize("taken", ["--port", "--metrics-port"])
def test_port_in_use_is_one_line_naming_the_option(taken: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = str(holder.getsockname()[1])
        ports = {"--port": str(free_port()), "--metrics-port": str(free_port()), taken: busy}
        result = run_command("--demo", "--port", ports["--port"], "--metrics-port", ports["--metrics-port"])
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert busy in lines[0] and "already in use" in lines[0]
    assert f"{taken} (RELAY_{taken[2:].upper().replace('-', '_')})" in lines[0]
    other = "--metrics-port" if taken == "--port" else "--port"
    assert other + " " not in lines[0]


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


async def test_first_line_says_where_to_open_the_page_and_how_it_runs(start_relay: Any) -> None:
    relay = await start_relay("--demo", api_key=None)
    lines = relay.log_lines()
    first = lines[0]
    assert first["event"] == "relay_listening"
    assert first["open"] == f"{relay.inner.base_url}/"
    assert first["model"] == "simulated, offline (OPENAI_API_KEY is not set)"
    assert first["access_control"].startswith("off: ")
    assert first["metrics"] == relay.metrics_url
    text = relay.log_text()
    assert text.count("Started server process") == 1
    assert "Config(" not in text
    config = next(line for line in lines if line["event"] == "relay_config")
    assert config["port"] == relay.inner.port and config["demo"] is True
    assert config["openai_api_key_set"] is False and config["resampler"] == "low-latency"
    assert "openai_api_key" not in config, "a secret's own name would carry its value"


async def test_first_line_with_a_key_and_tokens_says_real_model_and_access_control_on(
    start_relay: Any, fake_upstream: Any
) -> None:
    relay = await start_relay(upstream_url=fake_upstream.url, access_tokens="a-long-enough-token")
    first = relay.log_lines()[0]
    assert first["event"] == "relay_listening"
    assert first["model"] == f"OpenAI at {fake_upstream.url}"
    assert first["access_control"] == "on: token required"
    config = next(line for line in relay.log_lines() if line["event"] == "relay_config")
    assert config["openai_api_key_set"] is True and config["access_tokens_set"] is True
