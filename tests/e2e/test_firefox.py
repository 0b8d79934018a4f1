"""The real web page in headless Firefox (Debian's ESR build, driven over WebDriver BiDi), through the real relay
command to the simulated model: microphone audio reaches the model, a typed message is answered, the reply plays.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from relay.fake.server import FakeRealtimeServer
from relay.protocol import API_RATE
from tests.e2e.bidi import FAKE_TONE_HZ, BrowserUnresponsive, launch_firefox
from tests.e2e.conftest import SCREENSHOTS
from tests.e2e.scenario import assert_turn, voice_and_text_turn

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]  # room for fresh starts after hangs

StartRelay = Callable[..., Awaitable[Any]]


async def test_firefox_voice_and_text_turn(
    fake_upstream: FakeRealtimeServer, start_relay: StartRelay, tmp_path: Path
) -> None:
    """Firefox captures its fake microphone at its own rate, the relay resamples it, and a typed turn plays back."""
    fake_upstream.options.pace_audio = True  # the reply streams in real time, as a live model's does
    relay = await start_relay(upstream_url=fake_upstream.url)
    attempts = 3
    for attempt in range(1, attempts + 1):
        try:
            async with launch_firefox(tmp_path / f"firefox-{attempt}") as firefox:
                tab = await firefox.new_tab()
                await tab.navigate(relay.base_url)
                await tab.wait_for("document.getElementById('loading').hidden")
                shot = SCREENSHOTS / "firefox-connected.png"
                turn = await voice_and_text_turn(tab, fake_upstream, "Firefox", shot)
                entries = tab.log_entries()
            break
        except BrowserUnresponsive as hang:
            # Only a browser that stopped answering altogether gets a fresh start; a wrong answer fails at once.
            if attempt == attempts:
                raise
            print(f"\nFirefox stopped answering ({hang}); starting a fresh browser")

    assert_turn(turn)
    # At the pitch Firefox generated: a wrong declared rate would shift it by the ratio of the rates.
    received = turn.received
    spectrum = np.abs(np.fft.rfft(received * np.hanning(len(received))))
    peak_hz = float(np.argmax(spectrum)) * API_RATE / len(received)
    print(f"tone at the model: {peak_hz:.1f} Hz (Firefox generated {FAKE_TONE_HZ} Hz)")
    assert abs(peak_hz - FAKE_TONE_HZ) <= 2 * API_RATE / len(received)
    assert any(e.get("text") == "console collected" for e in entries), entries
    errors = [e for e in entries if e.get("level") == "error" or e.get("type") == "javascript"]
    assert errors == [], errors
