"""The real web page in headless Firefox (Debian's ESR build, driven over WebDriver BiDi), through the real relay
command to the simulated model: microphone audio reaches the model, a typed message is answered, the reply plays.
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
from tests.e2e.bidi import FAKE_TONE_HZ, launch_firefox
from tests.e2e.conftest import SCREENSHOTS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

StartRelay = Callable[..., Awaitable[Any]]
API_RATE = 24000
DEBUG = "JSON.parse(JSON.stringify(window.relayDebug))"


async def test_firefox_voice_and_text_turn(
    fake_upstream: FakeRealtimeServer, start_relay: StartRelay, tmp_path: Path
) -> None:
    """Firefox captures its fake microphone at its own rate, the relay resamples it, and a typed turn plays back."""
    fake_upstream.options.pace_audio = True  # the reply streams in real time, as a live model's does
    relay = await start_relay(upstream_url=fake_upstream.url)
    async with launch_firefox(tmp_path / "firefox") as firefox:
        tab = await firefox.new_tab()
        await tab.navigate(relay.base_url)
        await tab.wait_for("document.getElementById('loading').hidden")
        browser_rate = await tab.evaluate(
            "(() => { const c = new AudioContext(); c.close(); return c.sampleRate; })()"
        )

        await tab.evaluate("console.info('console collected')")  # proves the log below is really collected
        await tab.click("#connect-btn")
        try:
            record = await fake_upstream.wait_for_connection(timeout=10)
        except TimeoutError:
            shown = await tab.evaluate(
                "document.getElementById('status-text').textContent + ' / ' + "
                "document.getElementById('error-text').textContent"
            )
            raise AssertionError(f"the page never connected; it shows: {shown}") from None
        await tab.wait_for("window.relayDebug.state === 'listening' && window.relayDebug.captureRms > 0.01")
        # A second of the tone.
        await tab.wait_for("window.relayDebug.captureSamples > window.relayDebug.contextRate")

        # Stop the microphone, so what the page captured and what the model received can be compared whole.
        await tab.click("#mic-btn")
        await tab.wait_for("window.relayDebug.state === 'connected'")
        debug = await tab.evaluate(DEBUG)
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
            f"\nFirefox rate {browser_rate} Hz; captured {captured_s:.3f} s, model received {received_s:.3f} s"
        )

        # The page ran at Firefox's own rate and declared it; the relay reported the same rate back.
        assert debug["contextRate"] == browser_rate
        assert debug["inputRate"] == browser_rate
        assert debug["sessionInputRate"] == browser_rate
        # Every captured second reached the model as 24 kHz audio, and it is the tone, not silence.
        assert abs(received_s - captured_s) < 0.05  # one 20 ms capture frame, with margin
        assert float(np.sqrt(np.mean(received**2))) > 0.01
        # At the pitch Firefox generated: a wrong declared rate would shift it by the ratio of the rates.
        spectrum = np.abs(np.fft.rfft(received * np.hanning(len(received))))
        peak_hz = float(np.argmax(spectrum)) * API_RATE / len(received)
        print(f"tone at the model: {peak_hz:.1f} Hz (Firefox generated {FAKE_TONE_HZ} Hz)")
        assert abs(peak_hz - FAKE_TONE_HZ) <= 2 * API_RATE / len(received)

        # A typed message: the simulated model answers it with audio and a transcript, and the page plays it.
        await tab.type_text("#compose-input", "Hello from Firefox", enter=True)
        await tab.wait_for(
            "window.relayDebug.events['response.done'] >= 1 && window.relayDebug.state === 'connected'"
            " && Object.values(window.relayDebug.playedSamplesByItem).some((n) => n > 0)",
            timeout=20,
        )
        await tab.evaluate("document.activeElement?.blur()")
        shot = await tab.screenshot(SCREENSHOTS / "firefox-connected.png")
        debug = await tab.evaluate(DEBUG)
        lines = await tab.evaluate(
            "[...document.querySelectorAll('#chat-log > li')].map((li) => ({"
            " role: li.classList.contains('user') ? 'user' : 'assistant',"
            " text: li.querySelector('.text').textContent }))"
        )
        entries = tab.log_entries()

    item = next(
        e["item"]["id"]
        for e in record.sent
        if e.get("type") == "response.output_item.added" and e["item"].get("role") == "assistant"
    )
    done = next(e for e in record.sent if e.get("type") == "response.output_audio_transcript.done")
    assert debug["playedSamplesByItem"][item] > 0
    assert debug["playedSamplesByItem"][item] == debug["receivedSamplesByItem"][item]
    assert {"role": "user", "text": "Hello from Firefox"} in lines
    assert {"role": "assistant", "text": done["transcript"]} in lines
    assert any(e.get("text") == "console collected" for e in entries), entries
    errors = [e for e in entries if e.get("level") == "error" or e.get("type") == "javascript"]
    assert errors == [], errors
    assert shot.stat().st_size > 0
