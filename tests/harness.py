"""Running the relay for tests: in this process (fast, inspectable) or as the real command in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from relay.app import Runtime, create_app
from relay.client_socket import RelayWebSocketProtocol
from relay.config import load_config
from relay.connection_guard import public_http_protocol
from relay.metrics import RelayMetrics
from relay.providers.profiles import ProviderSet

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[Any], timeout: float = 15) -> int:
    """SIGTERM (the relay drains on it), then SIGKILL if it is still there after `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
    return int(process.returncode)


def env_name(key: str) -> str:
    """`access_tokens` → `RELAY_ACCESS_TOKENS`; names already in upper case are kept."""
    return key if key.isupper() else "RELAY_" + key.upper()


class LoopbackUrls:
    """The relay's URLs on 127.0.0.1, for anything with a `port`."""

    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"


@dataclass
class InProcessRelay(LoopbackUrls):
    """The relay app served by uvicorn on a free loopback port inside the test's event loop."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int
    runtime: Runtime

    @property
    def metrics(self) -> RelayMetrics:
        return self.runtime.metrics

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self.task, 10)


async def start_in_process(
    upstream_url: str, api_key: str, providers: ProviderSet | None = None, **settings: str
) -> InProcessRelay:
    """Serve the relay app in this event loop with the given `RELAY_*` settings (lower-case keys).

    `providers`, when given, are the upstream profiles instead of `upstream_url` and `api_key`.
    """
    env = {"RELAY_UPSTREAM_URL": upstream_url, "OPENAI_API_KEY": api_key}
    env.update({env_name(k): v for k, v in settings.items()})
    config = load_config(env=env)
    app = create_app(config, providers=providers)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            http=public_http_protocol(config),
            log_config=None,
            lifespan="on",
            ws_per_message_deflate=False,
            ws=RelayWebSocketProtocol,
            proxy_headers=False,  # the app applies trusted proxy headers itself, after recording the real peer
        )
    )
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise TimeoutError("relay did not start")
        await asyncio.sleep(0.01)
    return InProcessRelay(server, task, port, app.state.runtime)


@dataclass
class RelayProcess(LoopbackUrls):
    """The real `python -m relay` command running in a subprocess; its stderr goes to `log_path`."""

    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log_path: Path
    stopped: bool = field(default=False)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """Every log line, parsed as JSON (a line that is not JSON fails the test)."""
        return [json.loads(line) for line in self.log_text().splitlines() if line.strip()]

    def stop(self, timeout: float = 15) -> int:
        if not self.stopped:
            self.stopped = True
            stop_process(self.process, timeout)
        return int(self.process.returncode)


async def start_process(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    preexec_fn: Callable[[], Any] | None = None,
) -> RelayProcess:
    """Start `python -m relay ARGS` on free ports with `env` (merged over a clean environment).

    `preexec_fn` runs in the child before the relay starts (e.g. to lower its open-file limit).
    """
    port, metrics_port = free_port(), free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_") and k != "OPENAI_API_KEY"}
    full_env.update(
        {
            "RELAY_PORT": str(port),
            "RELAY_METRICS_PORT": str(metrics_port),
            "RELAY_LOG_FORMAT": "json",
            # --demo saves conversations: under the test's own directory, never the checkout.
            "RELAY_DATA_DIR": str(tmp_path / "data"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    full_env.update(env or {})
    log_path = tmp_path / f"relay-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "relay", *args],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            preexec_fn=preexec_fn,
        )
    relay = RelayProcess(process, port, metrics_port, log_path)
    if wait_ready:
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient() as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"relay exited with {process.returncode}:\n{relay.log_text()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{relay.base_url}/healthz", timeout=1)).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    relay.stop()
                    raise TimeoutError(f"relay did not become healthy:\n{relay.log_text()}")
                await asyncio.sleep(0.05)
    return relay


class ScanningProxy:
    """A loopback TCP proxy that watches every byte the server sends back for secrets.

    Tests reach the relay through it, so whatever any client receives (HTTP bodies, headers, WebSocket frames) is
    scanned for the API key, including across chunk boundaries. Findings are kept in `leaks`.
    """

    def __init__(self, target_port: int, secrets: list[bytes]) -> None:
        self.target_port = target_port
        self.secrets = [s for s in secrets if s]
        self.leaks: list[bytes] = []
        self.bytes_scanned = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        up = asyncio.create_task(self._pipe(client_reader, server_writer, scan=False))
        down = asyncio.create_task(self._pipe(server_reader, client_writer, scan=True))
        self._tasks.update({up, down})
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for task in (up, down):
            task.cancel()
            self._tasks.discard(task)
        for writer in (client_writer, server_writer):
            with contextlib.suppress(Exception):
                writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, scan: bool) -> None:
        tail = b""
        keep = max((len(s) for s in self.secrets), default=1) - 1
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while chunk := await reader.read(65536):
                if scan:
                    self.bytes_scanned += len(chunk)
                    window = tail + chunk
                    self.leaks.extend(s for s in self.secrets if s in window)
                    tail = window[-keep:] if keep else b""
                writer.write(chunk)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.write_eof()
