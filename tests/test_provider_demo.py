"""The demo's two simulated providers in the real `realtime-relay --demo` process: a voice turn with each through
the official SDK, then what an operator sees: `/api/config`, the per-provider metrics and the log lines."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ProxiedRelay
from tests.harness import RelayProcess
from tests.test_provider_scenarios import CLIENT_TOKEN, collect_until, is_done, send_audio, voiced


async def test_demo_serves_both_providers_with_metrics_and_logs_by_provider(
    start_relay: Callable[..., Awaitable[ProxiedRelay[RelayProcess]]],
) -> None:
    relay = await start_relay("--demo", api_key=None)
    async with httpx.AsyncClient() as http:
        config = (await http.get(f"{relay.base_url}/api/config")).json()
    assert [(p["name"], p["simulated"]) for p in config["providers"]] == [("openai", True), ("gemini", True)]
    client = AsyncOpenAI(api_key=CLIENT_TOKEN, base_url=f"{relay.base_url}/v1")
    for provider in ("openai", "gemini"):
        async with client.realtime.connect(model="", extra_query={"provider": provider}) as connection:
            await send_audio(connection, voiced(0.8))
            events = await collect_until(connection, is_done, timeout=20)
        assert events[-1].response.status == "completed"
    async with httpx.AsyncClient() as http:
        exposition = (await http.get(relay.inner.metrics_url)).text
    counts = {
        sample.labels["provider"]: sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "relay_provider_first_audio_seconds"
        for sample in family.samples
        if sample.name.endswith("_count")
    }
    assert counts == {"openai": 1.0, "gemini": 1.0}
    relay.inner.stop()
    closed = [line for line in relay.inner.log_lines() if line.get("event") == "session_closed"]
    assert sorted(line["provider"] for line in closed) == ["gemini", "openai"]
    assert all(line["first_audio_p50_ms"] is not None for line in closed)
    opened = [line for line in relay.inner.log_lines() if line.get("event") == "upstream_connected"]
    assert sorted(line["provider"] for line in opened) == ["gemini", "openai"]
