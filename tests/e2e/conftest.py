"""Browser fixtures for the web client tests: headless Debian Chromium with a WAV file as the microphone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.async_api import Browser, ConsoleMessage, Error, Page, async_playwright

from tests.audio_signals import speech_wav, write_wav

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
#: The rate of the WAV files used as the microphone.
WAV_RATE = 48000

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def microphone_wav(path: Path, parts: Sequence[str | float], rate: int = WAV_RATE) -> tuple[Path, np.ndarray]:
    """Write a 16-bit mono WAV made of spoken phrases (str) and silences (float seconds); return it and its samples.

    Chromium loses the first 0.1-0.3 s of the file, so tests start with a silence.
    """
    pieces = [
        speech_wav(part, rate) if isinstance(part, str) else np.zeros(round(part * rate), dtype=np.int16)
        for part in parts
    ]
    samples = np.concatenate(pieces).astype(np.int16)
    write_wav(path, samples, rate)
    return path, samples


LaunchBrowser = Callable[..., Awaitable[Browser]]


@pytest.fixture
async def launch_browser() -> AsyncIterator[LaunchBrowser]:
    """`await launch_browser(wav)`: Chromium whose microphone plays `wav` once (no loop).

    With `allow_microphone=False` the browser's permission prompt is not auto-accepted, so the page is refused
    the microphone as when a user clicks "Block".
    """
    playwright = await async_playwright().start()
    browsers: list[Browser] = []

    async def launch(wav: Path, *, allow_microphone: bool = True) -> Browser:
        args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}%noloop"]
        if not allow_microphone:
            args.remove("--use-fake-ui-for-media-stream")
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        browsers.append(browser)
        return browser

    yield launch
    for browser in browsers:
        await browser.close()
    await playwright.stop()


@dataclass
class WebPage:
    """A page of the web client plus what went wrong inside it (uncaught errors, console errors)."""

    page: Page
    errors: list[str] = field(default_factory=list)

    async def debug(self) -> dict[str, Any]:
        """A JSON copy of window.relayDebug."""
        result: dict[str, Any] = await self.page.evaluate(
            "() => JSON.parse(JSON.stringify(window.relayDebug))"
        )
        return result

    async def string(self, key: str, lang: str = "en", **params: Any) -> str:
        """A UI string as the page's own i18n module renders it."""
        text: str = await self.page.evaluate(
            "async ([key, lang, params]) => (await import('/i18n.js')).translator(lang)(key, params)",
            [key, lang, params],
        )
        return text

    async def wait_for(self, expression: str, timeout_s: float = 15) -> None:
        """Wait until a JS expression (over window.relayDebug as `d`) is true."""
        await self.page.wait_for_function(
            f"() => {{ const d = window.relayDebug; return Boolean({expression}); }}",
            timeout=timeout_s * 1000,
        )

    async def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        """Save a screenshot under test-artifacts/screenshots/: the full page, or only what the viewport shows
        (which is where fixed and sticky parts really are once the page has scrolled)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        await self.page.mouse.move(0, 0)  # no hover colour on the last button clicked
        await self.page.screenshot(path=str(path), full_page=full_page)
        return path


async def open_page(
    browser: Browser, url: str, *, locale: str = "en-US", viewport: tuple[int, int] = (1200, 820)
) -> WebPage:
    """Open the web client in a fresh context (no cookies, no stored settings) and wait for its first view."""
    context = await browser.new_context(
        locale=locale, viewport={"width": viewport[0], "height": viewport[1]}, color_scheme="light"
    )
    page = await context.new_page()
    web = WebPage(page)

    def on_console(message: ConsoleMessage) -> None:
        # A refused WebSocket or login is an expected outcome in some tests; the browser logs those itself.
        text = message.text
        if message.type == "error" and "WebSocket" not in text and "status of 4" not in text:
            web.errors.append(f"console: {text}")

    def on_page_error(error: Error) -> None:
        web.errors.append(f"uncaught: {error}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    await page.goto(url)
    await page.wait_for_selector("#loading", state="hidden")
    return web
