"""WebKit (the engine of Safari) as WebKitGTK's MiniBrowser, driven over classic WebDriver by WebKitWebDriver.

MiniBrowser has no headless mode, so it draws on its own virtual X server (Xvfb); its Web Audio plays into its own
PulseAudio daemon with a null sink. WebKit's mock capture device stands in for the microphone; under automation the
page is granted it without a prompt.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.processes import private_environment, pulseaudio, read_text, stop
from tests.e2e.scenario import poll_script
from tests.harness import free_port

WEBDRIVER = "/usr/bin/WebKitWebDriver"
MINIBROWSER = "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser"
XVFB = "/usr/bin/Xvfb"

#: MiniBrowser under automation, with WebKit's mock microphone instead of a real one; other settings stay MiniBrowser's
#: defaults.
BROWSER_ARGS = ["--automation", "--enable-mock-capture-devices=true"]

#: The W3C key for a web element in WebDriver answers.
ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"
ENTER = "\ue007"
#: Wraps the console and listens for uncaught errors and rejections, keeping each as {kind, level, text}.
COLLECT_CONSOLE = """(() => {
    const entries = (window.__consoleEntries = []);
    for (const level of ["debug", "log", "info", "warn", "error"]) {
        const original = console[level].bind(console);
        console[level] = (...args) => {
            entries.push({ kind: "console", level, text: args.map(String).join(" ") });
            original(...args);
        };
    }
    window.addEventListener("error", (e) => {
        const where = e.filename ? ` at ${e.filename}:${e.lineno}` : "";
        entries.push({ kind: "uncaught", level: "error", text: e.message + where });
    });
    window.addEventListener("unhandledrejection", (e) =>
        entries.push({ kind: "unhandled rejection", level: "error", text: String(e.reason) }));
})()"""


class WebDriverError(RuntimeError):
    """A command that the driver answered with an error, or a script that threw."""


@dataclass
class ConsoleEntry:
    """One console call or uncaught error of the page."""

    kind: str
    level: str
    text: str


@dataclass
class WebKitSession:
    """One WebDriver session: a MiniBrowser window with one page."""

    http: httpx.AsyncClient
    url: str

    async def command(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 20
    ) -> Any:
        """Send a command to `<session>/<path>` and return its `value`; raise `WebDriverError` for an error."""
        response = await self.http.request(method, f"{self.url}{path}", json=body, timeout=timeout)
        value = response.json().get("value")
        if response.status_code != 200:
            detail = value if not isinstance(value, dict) else f"{value.get('error')}: {value.get('message')}"
            raise WebDriverError(f"{method} {path}: {response.status_code} {detail}")
        return value

    async def navigate(self, url: str) -> None:
        """Load `url` and wait for its load event."""
        await self.command("POST", "/url", {"url": url}, timeout=30)

    async def set_window_size(self, width: int, height: int) -> None:
        """Resize the browser window."""
        await self.command("POST", "/window/rect", {"width": width, "height": height})

    async def evaluate(self, expression: str, timeout: float = 15) -> Any:
        """Evaluate a JS expression (promises are awaited); the value comes back through JSON."""
        script = (
            "const done = arguments[arguments.length - 1];"
            f"(async () => JSON.stringify(await ({expression})))()"
            ".then(done, (e) => done({thrown: String(e && e.stack || e)}));"
        )
        value = await self.command(
            "POST", "/execute/async", {"script": script, "args": []}, timeout=timeout + 5
        )
        if isinstance(value, dict) and "thrown" in value:
            raise WebDriverError(f"script threw: {value['thrown']}")
        return json.loads(value) if isinstance(value, str) else None

    async def wait_for(self, expression: str, timeout: float = 15) -> None:
        """Wait until a JS expression is true, polling every 50 ms inside the page."""
        await self.command("POST", "/timeouts", {"script": round((timeout + 5) * 1000)})
        ok = await self.evaluate(poll_script(expression, timeout), timeout=timeout)
        if not ok:
            raise TimeoutError(f"not true after {timeout} s: {expression}")

    async def _element(self, selector: str) -> str:
        found = await self.command("POST", "/element", {"using": "css selector", "value": selector})
        return str(found[ELEMENT_KEY])

    async def click(self, selector: str) -> None:
        """Click the element as a user does: the browser synthesises the mouse events (a real user activation)."""
        await self.command("POST", f"/element/{await self._element(selector)}/click", {})

    async def type_text(self, selector: str, text: str, *, enter: bool = False) -> None:
        """Type `text` into a field key by key, then press Enter if asked."""
        keys = text + ENTER if enter else text
        await self.command("POST", f"/element/{await self._element(selector)}/value", {"text": keys})

    async def screenshot(self, path: Path) -> Path:
        """Save a PNG of the page's viewport, once the page has painted its latest changes."""
        # The capture is of the last painted frame: wait for two frames so the latest DOM changes are on it.
        await self.evaluate("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
        data = await self.command("GET", "/screenshot")
        await asyncio.to_thread(_write_file, path, base64.b64decode(data))
        return path

    async def collect_console(self) -> None:
        """Record the page's console calls and uncaught errors from now on (until it navigates away).

        WebKitGTK writes console messages only to the system journal and classic WebDriver has no log endpoint,
        so the page itself keeps them, for `console_entries`.
        """
        await self.evaluate(COLLECT_CONSOLE)

    async def console_entries(self) -> list[ConsoleEntry]:
        """The console calls and uncaught errors recorded since `collect_console`."""
        entries = await self.evaluate("window.__consoleEntries")
        if entries is None:
            raise WebDriverError("the console is not being collected on this page")
        return [ConsoleEntry(**entry) for entry in entries]


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@contextlib.asynccontextmanager
async def xvfb(log_path: Path) -> AsyncIterator[str]:
    """A virtual X server on a display number it picks itself; yields the DISPLAY value."""
    read_fd, write_fd = os.pipe()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [XVFB, "-displayfd", str(write_fd), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(write_fd,),
            start_new_session=True,
        )
    os.close(write_fd)
    try:
        # Xvfb writes the display number once it accepts connections.
        with os.fdopen(read_fd, "rb") as pipe:
            number = (await asyncio.wait_for(asyncio.to_thread(pipe.readline), 15)).strip()
        if not number:
            raise RuntimeError("Xvfb did not start:\n" + read_text(log_path))
        yield f":{number.decode()}"
    finally:
        stop(process)


@contextlib.asynccontextmanager
async def launch_webkit(workdir: Path, width: int = 1200, height: int = 820) -> AsyncIterator[WebKitSession]:
    """Start Xvfb, PulseAudio and WebKitWebDriver in `workdir`, open a MiniBrowser session; stop them all on exit."""
    env, runtime = private_environment(workdir, "relay-webkit-")
    browser_log = workdir / "webkit.log"
    try:
        async with (
            xvfb(workdir / "xvfb.log") as display,
            pulseaudio(runtime, env, workdir / "pulseaudio.log") as pulse_socket,
            httpx.AsyncClient() as http,
        ):
            port = free_port()
            with browser_log.open("wb") as log:
                # MiniBrowser inherits the driver's environment (display, audio server) and output.
                driver = subprocess.Popen(
                    [WEBDRIVER, f"--port={port}"],
                    env={**env, "DISPLAY": display, "PULSE_SERVER": f"unix:{pulse_socket}"},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                base = f"http://127.0.0.1:{port}"
                await _wait_until_ready(http, base, driver, browser_log)
                capabilities = {"webkitgtk:browserOptions": {"binary": MINIBROWSER, "args": BROWSER_ARGS}}
                answer = await http.post(
                    f"{base}/session", json={"capabilities": {"alwaysMatch": capabilities}}, timeout=30
                )
                if answer.status_code != 200:
                    raise WebDriverError(f"no session: {answer.text}")
                session = WebKitSession(http, f"{base}/session/{answer.json()['value']['sessionId']}")
                try:
                    await session.set_window_size(width, height)
                    yield session
                finally:
                    with contextlib.suppress(Exception):
                        await http.delete(session.url, timeout=10)
            finally:
                stop(driver)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


async def _wait_until_ready(
    http: httpx.AsyncClient, base: str, driver: subprocess.Popen[bytes], log_path: Path
) -> None:
    deadline = time.monotonic() + 15
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if (await http.get(f"{base}/status", timeout=1)).status_code == 200:
                return
        if driver.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("WebKitWebDriver did not start:\n" + read_text(log_path)[-2000:])
        await asyncio.sleep(0.05)
