"""The real web page in WebKit (WebKitGTK's MiniBrowser, driven over WebDriver), through the real relay command to
the simulated model: microphone audio reaches the model, a typed message is answered, the reply plays.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from relay.fake.server import FakeRealtimeServer
from tests.e2e.conftest import SCREENSHOTS
from tests.e2e.webkit import launch_webkit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

StartRelay = Callable[..., Awaitable[Any]]
API_RATE = 24000
DEBUG = "JSON.parse(JSON.stringify(window.relayDebug))"


async def test_webkit_voice_and_text_turn(
    fake_upstream: FakeRealtimeServer, start_relay: StartRelay, tmp_path: Path
) -> None:
    """WebKit captures its mock microphone at its own rate, the relay resamples it, and a typed turn plays back."""
    fake_upstream.options.pace_audio = True  # the reply streams in real time, as a live model's does
    relay = await start_relay(upstream_url=fake_upstream.url)
    async with launch_webkit(tmp_path / "webkit") as page:
        await page.navigate(relay.base_url)
        await page.wait_for("document.getElementById('loading').hidden")
        # From here on: the page has loaded and initialised (its loading view is gone), so what follows is covered.
        await page.collect_console()
        browser_rate = await page.evaluate(
            "(() => { const c = new AudioContext(); c.close(); return c.sampleRate; })()"
        )

        await page.evaluate("console.info('console collected')")  # proves the log below is really collected
        await page.click("#connect-btn")
        try:
            record = await fake_upstream.wait_for_connection(timeout=10)
        except TimeoutError:
            shown = await page.evaluate(
                "document.getElementById('status-text').textContent + ' / ' + "
                "document.getElementById('error-text').textContent"
            )
            raise AssertionError(f"the page never connected; it shows: {shown}") from None
        await page.wait_for("window.relayDebug.state === 'listening' && window.relayDebug.captureRms > 0.01")
        # A second of the mock microphone's sound.
        await page.wait_for("window.relayDebug.captureSamples > window.relayDebug.contextRate")

        # Stop the microphone, so what the page captured and what the model received can be compared whole.
        await page.click("#mic-btn")
        await page.wait_for("window.relayDebug.state === 'connected'")
        debug = await page.evaluate(DEBUG)
        captured_s = debug["captureSamples"] / debug["inputRate"]
        # The last frames are still on their way through the relay: wait until the model's input stops growing.
        size, still_since = -1, time.monotonic()
        for _ in range(100):
            if len(record.input_audio) != size:
                size, still_since = len(record.input_audio), time.monotonic()
            elif time.monotonic() - still_since > 0.3:
                break
            await asyncio.sleep(0.05)
        received = np.frombuffer(bytes(record.input_audio), dtype="<i2").astype(np.float64) / 32768.0
        received_s = len(received) / API_RATE
        print(
            f"\nWebKit rate {browser_rate} Hz; captured {captured_s:.3f} s, model received {received_s:.3f} s"
        )

        # The page ran at WebKit's own rate and declared it; the relay reported the same rate back.
        assert debug["contextRate"] == browser_rate
        assert debug["inputRate"] == browser_rate
        assert debug["sessionInputRate"] == browser_rate
        # Every captured second reached the model as 24 kHz audio (a wrong declared rate would stretch or shrink
        # it by the ratio of the rates), and it is sound, not silence.
        assert abs(received_s - captured_s) < 0.05  # one 20 ms capture frame, with margin
        assert float(np.sqrt(np.mean(received**2))) > 0.01

        # A typed message: the simulated model answers it with audio and a transcript, and the page plays it.
        await page.type_text("#compose-input", "Hello from WebKit", enter=True)
        await page.wait_for(
            "window.relayDebug.events['response.done'] >= 1 && window.relayDebug.state === 'connected'"
            " && Object.values(window.relayDebug.playedSamplesByItem).some((n) => n > 0)",
            timeout=20,
        )
        await page.evaluate("document.activeElement?.blur()")
        shot = await page.screenshot(SCREENSHOTS / "webkit-connected.png")
        debug = await page.evaluate(DEBUG)
        lines = await page.evaluate(
            "[...document.querySelectorAll('#chat-log > li')].map((li) => ({"
            " role: li.classList.contains('user') ? 'user' : 'assistant',"
            " text: li.querySelector('.text').textContent }))"
        )
        entries = await page.console_entries()

    item = next(
        e["item"]["id"]
        for e in record.sent
        if e.get("type") == "response.output_item.added" and e["item"].get("role") == "assistant"
    )
    done = next(e for e in record.sent if e.get("type") == "response.output_audio_transcript.done")
    assert debug["playedSamplesByItem"][item] > 0
    assert debug["playedSamplesByItem"][item] == debug["receivedSamplesByItem"][item]
    assert {"role": "user", "text": "Hello from WebKit"} in lines
    assert {"role": "assistant", "text": done["transcript"]} in lines
    assert any(e.text == "console collected" for e in entries), entries
    errors = [e for e in entries if e.level in ("warn", "error")]
    assert errors == [], errors
    assert shot.stat().st_size > 0
