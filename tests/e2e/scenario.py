"""What the Firefox and WebKit tests do alike: a voice capture and a typed turn through the relay to the model.

Each browser driver (WebDriver BiDi for Firefox, classic WebDriver for WebKit) offers the same small page API; the
scenario and its common checks are written once against it, and each test adds what only its browser can show.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from relay.fake.server import ConnectionRecord, FakeRealtimeServer
from relay.protocol import API_RATE

DEBUG = "JSON.parse(JSON.stringify(window.relayDebug))"
_CHAT_LINES = (
    "[...document.querySelectorAll('#chat-log > li')].map((li) => ({"
    " role: li.classList.contains('user') ? 'user' : 'assistant',"
    " text: li.querySelector('.text').textContent }))"
)


def poll_script(expression: str, timeout: float) -> str:
    """A script that resolves to true once the JS `expression` is true, or to false after `timeout` seconds."""
    return f"""new Promise((resolve) => {{
        const deadline = performance.now() + {timeout * 1000};
        const poll = () => {{
            let value = false;
            try {{ value = Boolean({expression}); }} catch {{}}
            if (value || performance.now() > deadline) resolve(value);
            else setTimeout(poll, 50);
        }};
        poll();
    }})"""


class BrowserPage(Protocol):
    """The page API both browser drivers offer."""

    async def evaluate(self, expression: str, timeout: float = 15) -> Any: ...
    async def wait_for(self, expression: str, timeout: float = 15) -> None: ...
    async def click(self, selector: str) -> None: ...
    async def type_text(self, selector: str, text: str, *, enter: bool = False) -> None: ...
    async def screenshot(self, path: Path) -> Path: ...


@dataclass
class Turn:
    """What the scenario saw: the browser's own rate, the page's debug state, and what reached the model."""

    browser_rate: int
    record: ConnectionRecord
    capture_debug: dict[str, Any]
    captured_s: float
    received: npt.NDArray[np.float64]
    final_debug: dict[str, Any]
    lines: list[dict[str, str]]
    typed: str
    shot: Path

    @property
    def received_s(self) -> float:
        return len(self.received) / API_RATE


async def voice_and_text_turn(
    page: BrowserPage, fake_upstream: FakeRealtimeServer, browser: str, screenshot: Path
) -> Turn:
    """On a loaded page: connect, capture a second of the microphone, stop it, then type a message and hear the reply."""
    browser_rate = await page.evaluate(
        "(() => { const c = new AudioContext(); c.close(); return c.sampleRate; })()"
    )
    await page.evaluate("console.info('console collected')")  # proves the console log is really collected
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
    await page.wait_for(
        "window.relayDebug.captureSamples > window.relayDebug.contextRate"
    )  # a second of sound

    # Stop the microphone, so what the page captured and what the model received can be compared whole.
    await page.click("#mic-btn")
    await page.wait_for("window.relayDebug.state === 'connected'")
    capture_debug = await page.evaluate(DEBUG)
    # The last frames are still on their way through the relay: wait until the model's input stops growing.
    size, still_since = -1, time.monotonic()
    for _ in range(100):
        if len(record.input_audio) != size:
            size, still_since = len(record.input_audio), time.monotonic()
        elif time.monotonic() - still_since > 0.3:
            break
        await asyncio.sleep(0.05)
    received = np.frombuffer(bytes(record.input_audio), dtype="<i2").astype(np.float64) / 32768.0

    # A typed message: the simulated model answers it with audio and a transcript, and the page plays it.
    typed = f"Hello from {browser}"
    await page.type_text("#compose-input", typed, enter=True)
    await page.wait_for(
        "window.relayDebug.events['response.done'] >= 1 && window.relayDebug.state === 'connected'"
        " && Object.values(window.relayDebug.playedSamplesByItem).some((n) => n > 0)",
        timeout=20,
    )
    await page.evaluate("document.activeElement?.blur()")
    shot = await page.screenshot(screenshot)
    turn = Turn(
        browser_rate=browser_rate,
        record=record,
        capture_debug=capture_debug,
        captured_s=capture_debug["captureSamples"] / capture_debug["inputRate"],
        received=received,
        final_debug=await page.evaluate(DEBUG),
        lines=await page.evaluate(_CHAT_LINES),
        typed=typed,
        shot=shot,
    )
    print(
        f"\n{browser} rate {browser_rate} Hz; captured {turn.captured_s:.3f} s, model received {turn.received_s:.3f} s"
    )
    return turn


def assert_turn(turn: Turn) -> None:
    """The checks every browser must pass."""
    debug = turn.capture_debug
    # The page ran at the browser's own rate and declared it; the relay reported the same rate back.
    assert debug["contextRate"] == turn.browser_rate
    assert debug["inputRate"] == turn.browser_rate
    assert debug["sessionInputRate"] == turn.browser_rate
    # Every captured second reached the model as 24 kHz audio (a wrong declared rate would stretch or shrink it by
    # the ratio of the rates), and it is sound, not silence.
    assert abs(turn.received_s - turn.captured_s) < 0.05  # one 20 ms capture frame, with margin
    assert float(np.sqrt(np.mean(turn.received**2))) > 0.01

    sent = turn.record.sent
    item = next(
        e["item"]["id"]
        for e in sent
        if e.get("type") == "response.output_item.added" and e["item"].get("role") == "assistant"
    )
    done = next(e for e in sent if e.get("type") == "response.output_audio_transcript.done")
    played = turn.final_debug["playedSamplesByItem"][item]
    assert played > 0
    assert played == turn.final_debug["receivedSamplesByItem"][item]
    assert {"role": "user", "text": turn.typed} in turn.lines
    assert {"role": "assistant", "text": done["transcript"]} in turn.lines
    assert turn.shot.stat().st_size > 0
