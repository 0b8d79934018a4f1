"""A small WebDriver BiDi client and a headless Firefox to drive with it.

Firefox speaks WebDriver BiDi natively, so the stock Debian build is tested as users run it. Its Web Audio only
runs with a working audio output, so each browser gets its own PulseAudio daemon with a null sink (no sound card is
needed, and no other program's audio is touched).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from tests.e2e.processes import private_environment, pulseaudio, read_text, stop
from tests.e2e.scenario import poll_script

FIREFOX = "/usr/bin/firefox-esr"
LISTENING = re.compile(r"WebDriver BiDi listening on (ws://127\.0\.0\.1:\d+)")

#: The pitch of Firefox's fake microphone, a steady sine tone.
FAKE_TONE_HZ = 440

#: Fake microphone (a tone) with no permission prompt, and no background traffic. Autoplay keeps Firefox's default
#: policy: the page must start its audio from the user's click, as for a real user.
PREFS: dict[str, object] = {
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.navigator.audio.fake_frequency": FAKE_TONE_HZ,
    # Audio in the content process: its hangs after Connect went from 3 in 16 runs to 1 in 20 (measured here).
    "media.cubeb.sandbox": False,
    "app.update.auto": False,
    "app.update.enabled": False,
    "app.normandy.enabled": False,
    "app.shield.optoutstudies.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "browser.newtabpage.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.update.enabled": False,
    "browser.ping-centre.telemetry": False,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.server": "",
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "services.settings.server": "http://127.0.0.1:9/",
    "messaging-system.rsexperimentloader.enabled": False,
    "browser.region.network.url": "",
    "browser.search.geoip.url": "",
    "geo.provider.network.url": "",
}


class BrowserUnresponsive(TimeoutError):
    """Firefox did not answer a command at all: its content process hung (seen now and then with headless Firefox's
    fake media devices, with the page's scripts already loaded), as opposed to a page that answered wrongly."""


class BidiError(RuntimeError):
    """A command that the browser answered with an error, or a script that threw."""


class BidiClient:
    """One WebDriver BiDi session over a WebSocket: commands matched to answers by id, events kept in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str) -> BidiClient:
        """Connect to `ws://host:port/session` and start a new session."""
        client = cls(await websockets.connect(url, max_size=None))
        await client.command("session.new", {"capabilities": {}})
        return client

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self._ws:
                message: dict[str, Any] = json.loads(raw)
                if message.get("type") == "event":
                    self.events.append(message)
                    continue
                future = self._pending.pop(int(message.get("id", -1)), None)
                if future is not None and not future.done():
                    future.set_result(message)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BidiError("the browser closed the connection"))

    async def command(self, method: str, params: dict[str, Any] | None = None, timeout: float = 15) -> Any:
        """Send a command and return its `result`; raise `BidiError` for an error answer."""
        command_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        try:
            await self._ws.send(json.dumps({"id": command_id, "method": method, "params": params or {}}))
            answer = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise BrowserUnresponsive(f"{method}: no answer within {timeout} s") from None
        finally:
            self._pending.pop(command_id, None)
        if answer.get("type") != "success":
            raise BidiError(f"{method}: {answer.get('error')}: {answer.get('message')}")
        return answer["result"]

    async def close(self) -> None:
        """Close the socket (the browser ends the session with it)."""
        await self._ws.close()
        self._reader.cancel()


@dataclass
class Tab:
    """One browsing context (a tab) and the console/JavaScript log entries it produced."""

    client: BidiClient
    context: str

    async def navigate(self, url: str) -> None:
        """Load `url` and wait for its load event."""
        await self.client.command(
            "browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"}, timeout=20
        )

    async def evaluate(self, expression: str, timeout: float = 15) -> Any:
        """Evaluate a JS expression (promises are awaited); the value comes back through JSON."""
        result = await self.client.command(
            "script.evaluate",
            {
                "expression": f"(async () => JSON.stringify(await ({expression})))()",
                "target": {"context": self.context},
                "awaitPromise": True,
            },
            timeout=timeout,
        )
        if result.get("type") == "exception":
            details = result.get("exceptionDetails", {})
            raise BidiError(f"script threw: {details.get('text')}")
        value = result["result"]
        return json.loads(value["value"]) if value.get("type") == "string" else None

    async def click(self, selector: str) -> None:
        """Click the middle of an element with the mouse, as a user does (the page gets a real user activation)."""
        node = await self._node(selector)
        await self._perform(
            {
                "type": "pointer",
                "id": "mouse",
                "parameters": {"pointerType": "mouse"},
                "actions": [
                    {"type": "pointerMove", "x": 0, "y": 0, "origin": {"type": "element", "element": node}},
                    {"type": "pointerDown", "button": 0},
                    {"type": "pointerUp", "button": 0},
                ],
            }
        )

    async def type_text(self, selector: str, text: str, *, enter: bool = False) -> None:
        """Click into a field and type `text` key by key, then press Enter if asked."""
        await self.click(selector)
        keys = [*text, "\ue007"] if enter else list(text)
        actions = [{"type": kind, "value": key} for key in keys for kind in ("keyDown", "keyUp")]
        await self._perform({"type": "key", "id": "keyboard", "actions": actions})

    async def _node(self, selector: str) -> dict[str, str]:
        result = await self.client.command(
            "script.callFunction",
            {
                "functionDeclaration": "(selector) => document.querySelector(selector)",
                "arguments": [{"type": "string", "value": selector}],
                "target": {"context": self.context},
                "awaitPromise": False,
            },
        )
        value = result.get("result", {})
        if result.get("type") != "success" or value.get("type") != "node":
            raise BidiError(f"no element matches {selector!r}")
        return {"sharedId": str(value["sharedId"])}

    async def _perform(self, source: dict[str, Any]) -> None:
        await self.client.command("input.performActions", {"context": self.context, "actions": [source]})
        await self.client.command("input.releaseActions", {"context": self.context})

    async def wait_for(self, expression: str, timeout: float = 15) -> None:
        """Wait until a JS expression is true, polling every 50 ms inside the page."""
        ok = await self.evaluate(poll_script(expression, timeout), timeout=timeout + 5)
        if not ok:
            raise TimeoutError(f"not true after {timeout} s: {expression}")

    async def screenshot(self, path: Path) -> Path:
        """Save a PNG of the whole page."""
        result = await self.client.command(
            "browsingContext.captureScreenshot", {"context": self.context, "origin": "document"}
        )
        await asyncio.to_thread(_write_file, path, base64.b64decode(result["data"]))
        return path

    def log_entries(self) -> list[dict[str, Any]]:
        """The `log.entryAdded` events of this tab so far (console calls and uncaught errors)."""
        return [
            e["params"]
            for e in self.client.events
            if e.get("method") == "log.entryAdded"
            and e["params"].get("source", {}).get("context") == self.context
        ]


@dataclass
class Firefox:
    """A running headless Firefox and the processes behind it."""

    client: BidiClient
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    async def new_tab(self, width: int = 1200, height: int = 820) -> Tab:
        """The browser's first tab, sized, with log entries collected."""
        await self.client.command("session.subscribe", {"events": ["log.entryAdded"]})
        tree = await self.client.command("browsingContext.getTree", {"maxDepth": 0})
        context = tree["contexts"][0]["context"]
        await self.client.command(
            "browsingContext.setViewport",
            {"context": context, "viewport": {"width": width, "height": height}},
        )
        return Tab(self.client, context)


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_profile(profile: Path) -> None:
    profile.mkdir(parents=True, exist_ok=True)
    lines = [f"user_pref({json.dumps(name)}, {json.dumps(value)});" for name, value in PREFS.items()]
    (profile / "user.js").write_text("\n".join(lines) + "\n")


async def _wait_for_file_text(
    path: Path, pattern: re.Pattern[str], process: subprocess.Popen[bytes], name: str, timeout: float
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        content = await asyncio.to_thread(read_text, path)
        if pattern.search(content):
            return content
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{content[-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} did not print {pattern.pattern!r} in {timeout} s:\n{content[-2000:]}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def launch_firefox(workdir: Path) -> AsyncIterator[Firefox]:
    """Start PulseAudio (null sink) and headless Firefox in `workdir`, connect over BiDi; stop both on exit."""
    env, runtime = private_environment(workdir, "relay-pulse-")
    browser: subprocess.Popen[bytes] | None = None
    client: BidiClient | None = None
    try:
        async with pulseaudio(runtime, env, workdir / "pulseaudio.log") as socket_path:
            try:
                profile = workdir / "profile"
                _write_profile(profile)
                firefox_log = workdir / "firefox.log"
                with firefox_log.open("wb") as log:
                    browser = subprocess.Popen(
                        [
                            FIREFOX,
                            "--headless",
                            "--remote-debugging-port=0",  # Firefox picks a free port and prints it
                            "--profile",
                            str(profile),
                            "--no-remote",
                            "about:blank",
                        ],
                        env={**env, "PULSE_SERVER": f"unix:{socket_path}"},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                banner = await _wait_for_file_text(firefox_log, LISTENING, browser, "Firefox", timeout=30)
                match = LISTENING.search(banner)
                assert match is not None
                client = await BidiClient.connect(f"{match.group(1)}/session")
                yield Firefox(client, [browser])
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.command("browser.close", timeout=5), 6)
                    with contextlib.suppress(Exception):
                        await client.close()
                if browser is not None:
                    stop(browser)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
