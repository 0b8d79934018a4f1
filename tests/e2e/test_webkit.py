"""The real web page in WebKit (WebKitGTK's MiniBrowser, driven over WebDriver), through the real relay command to
the simulated model: microphone audio reaches the model, a typed message is answered, the reply plays.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from relay.fake.server import FakeRealtimeServer
from tests.e2e.conftest import SCREENSHOTS
from tests.e2e.scenario import assert_turn, voice_and_text_turn
from tests.e2e.webkit import launch_webkit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

StartRelay = Callable[..., Awaitable[Any]]


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
        turn = await voice_and_text_turn(page, fake_upstream, "WebKit", SCREENSHOTS / "webkit-connected.png")
        entries = await page.console_entries()

    assert_turn(turn)
    assert any(e.text == "console collected" for e in entries), entries
    errors = [e for e in entries if e.level in ("warn", "error")]
    assert errors == [], errors
