"""The web page shows a call the relay ran itself: the user names a demo tool aloud (headless Chromium, a WAV as
the microphone), the simulated model calls it, the relay runs it on the demo MCP server, and the conversation
shows the call's name, its status and its short result, then the spoken answer."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from relay.fake.server import FakeRealtimeServer
from relay.fake.spoken import say
from tests.audio_signals import write_wav
from tests.e2e.conftest import WAV_RATE, LaunchBrowser, open_page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


async def test_the_page_shows_a_server_tool_call(
    fake_upstream: FakeRealtimeServer,
    start_relay: Callable[..., Awaitable[Any]],
    launch_browser: LaunchBrowser,
    tmp_path: Path,
) -> None:
    words = np.frombuffer(say("what is the capital city of kenya", WAV_RATE), dtype="<i2")
    quiet = np.zeros(WAV_RATE, dtype=np.int16)
    wav = tmp_path / "ask.wav"
    write_wav(wav, np.concatenate([quiet, words, quiet, quiet, quiet]), WAV_RATE)
    tools = tmp_path / "tools.toml"
    tools.write_text(f'[servers.demo]\ncommand = ["{sys.executable}", "-m", "relay.demo_tools"]\n')
    relay = await start_relay(upstream_url=fake_upstream.url, tools_file=str(tools), tool_waiting_seconds="0")
    web = await open_page(await launch_browser(wav), relay.base_url)
    page = web.page
    # The browser's echo cancellation, noise suppression and gain control would reshape the words.
    await page.click("#settings-toggle")
    for toggle in ("#echo-input", "#noise-input", "#gain-input"):
        await page.uncheck(toggle)
    await page.click("#settings-close")
    await page.click("#connect-btn")

    await web.wait_for("document.querySelector('#chat-log .line.tool')?.textContent.includes('Nairobi')", 30)
    await web.wait_for("d.events['response.done'] >= 2", 20)
    await web.screenshot("server-tool-call")
    tool = await page.evaluate(
        """() => { const li = document.querySelector('#chat-log .line.tool');
                   return { who: li.querySelector('.who').textContent, text: li.querySelector('.text').textContent,
                            tag: li.querySelector('.tag').textContent }; }"""
    )
    assert tool["who"] == await web.string("chat.tool", name="capital_city")
    assert "capital: Nairobi" in tool["text"]
    assert tool["tag"] == await web.string("chat.tool.done")
    roles = await page.evaluate(
        "() => [...document.querySelectorAll('#chat-log > li')].map((li) => li.className.split(' ')[1])"
    )
    assert roles[:2] == ["user", "tool"] and roles[-1] == "assistant", roles
    answer = await page.evaluate(
        "() => [...document.querySelectorAll('#chat-log .line.assistant .text')].pop().textContent"
    )
    assert "Nairobi" in answer
    assert web.errors == []
