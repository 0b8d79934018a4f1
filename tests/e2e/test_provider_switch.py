"""The page in headless Chromium switches between the demo's two simulated providers (OpenAI and Gemini Live) and
holds a spoken turn with each: microphone → relay → provider → playback, the same page code for both."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import LaunchBrowser, WebPage, microphone_wav, open_page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

StartRelay = Callable[..., Awaitable[Any]]


async def spoken_turn(web: WebPage, provider: str) -> dict[str, Any]:
    """Connect with the chosen provider, wait for one answered and fully played voice turn, disconnect."""
    page = web.page
    await page.click("#connect-btn")
    await web.wait_for("d.state === 'listening' || d.state === 'speaking'")
    await web.wait_for("(d.events?.['response.done'] ?? 0) >= 1 && d.state === 'listening'", timeout_s=30)
    debug = await web.debug()
    debug["chat"] = await page.eval_on_selector_all(
        "#chat-log .line.assistant .text", "els => els.map(e => e.textContent)"
    )
    await web.screenshot(f"provider-{provider}-answered")
    await page.click("#connect-btn")  # disconnect
    await web.wait_for("d.state === 'disconnected'")
    return debug


def first_audio_counts(exposition: str) -> dict[str, float]:
    return {
        sample.labels["provider"]: sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "relay_provider_first_audio_seconds"
        for sample in family.samples
        if sample.name.endswith("_count")
    }


async def test_switch_provider_and_hold_a_spoken_turn_with_each(
    start_relay: StartRelay, launch_browser: LaunchBrowser, tmp_path: Path
) -> None:
    # Two phrases, far enough apart for the first turn to be answered and played before the switch.
    wav, _ = microphone_wav(
        tmp_path / "two-turns.wav",
        [1.0, "Hello there, how are you today?", 9.0, "And now the other model, please.", 4.0],
    )
    relay = await start_relay("--demo", api_key=None)
    web = await open_page(await launch_browser(wav), relay.base_url)
    page = web.page

    # The provider choice comes from /api/config; the badge names it and says it is simulated.
    assert await page.is_visible("#provider-select")
    options = await page.eval_on_selector_all("#provider-select option", "els => els.map(e => e.value)")
    assert options == ["openai", "gemini"]
    assert (await page.text_content("#provider-name") or "").strip() == "openai"
    assert await page.is_visible("#simulated-badge")
    first = await spoken_turn(web, "openai")
    assert first["provider"] == "openai"
    assert first["turnLatenciesMs"], "the latency readout measured the turn"

    await page.select_option("#provider-select", "gemini")
    assert (await page.text_content("#provider-name") or "").strip() == "gemini"
    assert await page.is_visible("#simulated-badge")
    # Gemini's voices are on offer now.
    voices = await page.eval_on_selector_all("#voice-select option", "els => els.map(e => e.value)")
    assert "Puck" in voices and "marin" not in voices
    second = await spoken_turn(web, "gemini")
    assert second["provider"] == "gemini"
    assert second["turnLatenciesMs"]
    assert second["bargeIns"] == 0 or second["truncates"] == [], "no truncate is sent to Gemini"
    # The answer's transcript showed for each (both simulated models play the speech back and say so).
    for turn in (first, second):
        assert any(line.startswith("You spoke for") for line in turn["chat"]), turn["chat"]

    # The choice is remembered.
    await page.reload()
    await page.wait_for_selector("#loading", state="hidden")
    assert await page.input_value("#provider-select") == "gemini"

    # The relay measured one answered turn on each provider.
    async with httpx.AsyncClient() as http:
        exposition = (await http.get(relay.inner.metrics_url)).text
    counts = first_audio_counts(exposition)
    assert counts["openai"] >= 1 and counts["gemini"] >= 1
    assert web.errors == []
