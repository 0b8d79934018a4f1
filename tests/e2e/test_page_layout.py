"""The page in headless Chromium: the turn indicator follows the server's view of the user's speech, and the
settings panel opens over the page without moving the conversation, laid out alike in English and Japanese at
desktop and phone widths. Screenshots of each go to test-artifacts/screenshots/ (layout-*.png, turn-*.png).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from relay.fake.server import FakeRealtimeServer
from tests.e2e.conftest import LaunchBrowser, WebPage, microphone_wav, open_page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

StartRelay = Callable[..., Awaitable[Any]]

DESKTOP = (1280, 820)
PHONE = (390, 844)
FIRST_AUDIO_DELAY_S = 1.2

# Every change of the turn line, with the page's clock and the status at that moment.
RECORD_TURNS = """() => {
  window.turnLog = [];
  const line = document.getElementById('turn');
  new MutationObserver(() => window.turnLog.push({
    turn: line.dataset.turn, text: line.textContent, at: performance.now(), state: window.relayDebug.state,
  })).observe(line, { attributes: true, attributeFilter: ['data-turn'] });
}"""

# Where the conversation is: page scroll, the log's own scroll, and whether the last bubble is fully in view.
CHAT_PLACE = """() => {
  const log = document.getElementById('chat-log');
  const last = log.lastElementChild.getBoundingClientRect();
  const box = log.getBoundingClientRect();
  return {
    pageY: window.scrollY, pageHeight: document.documentElement.scrollHeight,
    logTop: log.scrollTop, logHeight: log.scrollHeight, logTopOnPage: box.top + window.scrollY,
    lastVisible: last.bottom <= box.bottom + 1 && last.top >= box.top - 1,
  };
}"""

BUTTONS = """() => ['connect-btn', 'mic-btn'].map((id) => {
  const r = document.getElementById(id).getBoundingClientRect();
  return { top: Math.round(r.top), left: Math.round(r.left), width: Math.round(r.width), height: Math.round(r.height) };
})"""


async def test_turn_indicator_shows_speech_heard_then_thinking_until_the_reply(
    fake_upstream: FakeRealtimeServer, start_relay: StartRelay, launch_browser: LaunchBrowser, tmp_path: Path
) -> None:
    """speech_started → "hearing", speech_stopped → "thinking" until the first reply audio, then idle again."""
    fake_upstream.options.first_audio_delay = FIRST_AUDIO_DELAY_S
    wav, _ = microphone_wav(tmp_path / "turn.wav", [1.0, "Hello there, how are you today?", 3.0])
    relay = await start_relay(upstream_url=fake_upstream.url)
    web = await open_page(await launch_browser(wav), relay.base_url)
    await web.page.evaluate(RECORD_TURNS)
    await web.page.click("#connect-btn")
    await web.wait_for("d.turn === 'hearing'")
    assert await web.page.text_content("#turn") == await web.string("turn.hearing")
    await web.screenshot("turn-hearing")
    await web.wait_for("d.turn === 'thinking'")
    assert await web.page.text_content("#turn") == await web.string("turn.thinking")
    await web.screenshot("turn-thinking")
    await web.wait_for("d.events['response.done'] === 1", timeout_s=20)

    # Rendering sets the attribute on every status change; keep only the changes of value.
    raw: list[dict[str, Any]] = await web.page.evaluate("window.turnLog")
    log = [entry for n, entry in enumerate(raw) if n == 0 or entry["turn"] != raw[n - 1]["turn"]]
    turns = [entry["turn"] for entry in log]
    assert turns[:5] == ["off", "idle", "hearing", "thinking", "idle"], turns
    thinking, after = log[3], log[4]
    # The model held its first audio back by FIRST_AUDIO_DELAY_S: the page said "thinking" all that time.
    assert after["at"] - thinking["at"] >= FIRST_AUDIO_DELAY_S * 1000 - 150
    debug = await web.debug()
    assert debug["events"]["input_audio_buffer.speech_started"] >= 1
    assert debug["events"]["input_audio_buffer.speech_stopped"] >= 1
    assert web.errors == []


async def typed_turns(web: WebPage, count: int) -> None:
    for n in range(1, count + 1):
        await web.page.fill("#compose-input", f"Message number {n}: tell me something about the sea.")
        await web.page.press("#compose-input", "Enter")
        await web.wait_for(f"d.events['response.done'] === {n}")


@pytest.mark.parametrize(("lang", "locale"), [("en", "en-US"), ("ja", "ja-JP")])
async def test_settings_panel_keeps_the_conversation_and_both_languages_lay_out_alike(
    fake_upstream: FakeRealtimeServer,
    start_relay: StartRelay,
    launch_browser: LaunchBrowser,
    tmp_path: Path,
    lang: str,
    locale: str,
) -> None:
    wav, _ = microphone_wav(tmp_path / "quiet.wav", [2.0])
    relay = await start_relay(upstream_url=fake_upstream.url)
    web = await open_page(await launch_browser(wav), relay.base_url, locale=locale, viewport=DESKTOP)
    page = web.page
    assert await page.evaluate("document.documentElement.lang") == lang
    await page.click("#connect-btn")
    await web.wait_for("d.state === 'listening'")
    await typed_turns(web, 6)

    for width, height in (DESKTOP, PHONE):
        await page.set_viewport_size({"width": width, "height": height})
        size = "desktop" if width == DESKTOP[0] else str(width)
        assert await page.evaluate("document.documentElement.scrollWidth") <= width, "no horizontal scrolling"
        # Connect above Microphone, equally wide and tall, in either language; the microphone's state fits inside.
        connect, mic = await page.evaluate(BUTTONS)
        aligned = ("left", "width", "height")
        assert [connect[k] for k in aligned] == [mic[k] for k in aligned], (connect, mic)
        assert mic["top"] >= connect["top"] + connect["height"], (connect, mic)
        assert await page.evaluate(
            "(() => { const b = document.getElementById('mic-btn'); return b.scrollWidth <= b.clientWidth; })()"
        ), "the microphone button's content overflows it"

        # The user has scrolled to the newest message, then opens and closes the settings.
        await page.evaluate("document.getElementById('chat-log').lastElementChild.scrollIntoView(false)")
        before = await page.evaluate(CHAT_PLACE)
        assert before["lastVisible"]
        await web.screenshot(f"layout-{lang}-{size}", full_page=False)
        await page.click("#settings-toggle")
        await page.wait_for_selector("#settings-panel", state="visible")
        panel = await page.evaluate(
            "(() => { const r = document.getElementById('settings-panel').getBoundingClientRect();"
            " return {top: r.top, bottom: r.bottom, right: r.right, width: r.width}; })()"
        )
        assert panel["top"] == 0 and panel["bottom"] == height and panel["right"] == width
        assert panel["width"] <= width
        assert await page.evaluate(CHAT_PLACE) == before, "opening settings moved the conversation"
        await web.screenshot(f"layout-{lang}-{size}-settings", full_page=False)
        await page.keyboard.press("Escape")
        await page.wait_for_selector("#settings-panel", state="hidden")
        assert await page.evaluate(CHAT_PLACE) == before, "closing settings moved the conversation"
        # And from the top of the page, as a newcomer first sees it.
        await page.evaluate("window.scrollTo(0, 0)")
        await web.screenshot(f"layout-{lang}-{size}-top", full_page=False)
    assert web.errors == []
