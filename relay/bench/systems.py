"""The systems `bench relay` compares, each started as its own process, pinned, timed to ready, and stopped.

`relay` is the relay under test (`python -m relay`); `naive`, `aiohttp` and `splice` are the reference relays of
this folder; `direct` is no relay at all (the load generator talks to the echo upstream), the baseline that a
relay's added round trip is measured against.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO

from relay.bench.procstat import children_pinned
from relay.bench.serving import READY_PATH

#: The relay and the references, in the order they are run and shown.
RELAYS = ("relay", "naive", "aiohttp", "splice")
DIRECT = "direct"
LABELS = {
    "relay": "relay (under test)",
    "naive": "naive: Starlette+websockets",
    "aiohttp": "aiohttp middle tier, uvloop",
    "splice": "TCP splice (floor)",
    DIRECT: "direct (no relay)",
}
_MODULES = {
    "naive": "relay.bench.naive_relay",
    "aiohttp": "relay.bench.aiohttp_relay",
    "splice": "relay.bench.splice_relay",
    "echo": "relay.bench.echo_upstream",
}
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0


class StartError(RuntimeError):
    """A system did not become ready."""


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def relay_settings(sessions: int) -> dict[str, str]:
    """What the relay under test is given besides its key, token, ports and upstream: limits raised for the load."""
    return {
        # Every bench session signs in with the same token, so one identity holds all of them.
        "RELAY_MAX_SESSIONS": str(sessions + 1),
        "RELAY_MAX_SESSIONS_PER_IDENTITY": str(sessions + 1),
        # N sessions of one identity stream more audio than a day's default budget allows a person.
        "RELAY_DAILY_TOKEN_BUDGET": "0",
        # Nothing is open when the bench stops the relay: no drain to wait for.
        "RELAY_DRAIN_SECONDS": "0",
        "RELAY_LOG_LEVEL": "warning",
        "RELAY_LOG_FORMAT": "json",
    }


@dataclass
class Running:
    """A started system: where clients connect, how long it took to be ready, and its process."""

    name: str
    url: str
    headers: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    cold_start: float | None = None
    _stderr: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        """The process to measure (None for `direct`)."""
        return self.process.pid if self.process is not None else None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in time."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._stderr is not None:
            self._stderr.close()

    def stderr_tail(self) -> str:
        """The last lines the process wrote to stderr (for a failure report)."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return b"".join(self._stderr.readlines()[-5:]).decode(errors="replace").strip()


def _ready(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", READY_PATH)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def start_process(
    name: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    cpu: int | None,
    url: str,
    headers: dict[str, str],
) -> Running:
    """Start `command` pinned to `cpu` and wait for GET /readyz to answer 200; cold start is the time between."""
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by Running.stop)
    started = time.monotonic()
    with children_pinned(cpu):
        process = subprocess.Popen(  # noqa: S603 (this interpreter, arguments built here)
            command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )
    running = Running(name, url, headers, process, _stderr=stderr)
    while not _ready(port):
        if process.poll() is not None or time.monotonic() - started > READY_TIMEOUT_SECONDS:
            tail = running.stderr_tail()
            running.stop()
            raise StartError(f"{name} did not become ready: {tail or 'no output'}")
        time.sleep(0.005)
    running.cold_start = time.monotonic() - started
    return running


def _base_env(key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["OPENAI_API_KEY"] = key
    return env


def start_echo(key: str, cpu: int | None) -> tuple[Running, str]:
    """The echo upstream, and the ws:// URL relays should use for it."""
    port = free_port()
    command = [sys.executable, "-m", _MODULES["echo"], "--port", str(port)]
    url = f"ws://127.0.0.1:{port}/v1/realtime"
    return start_process("echo", command, _base_env(key), port, cpu, url, {}), url


def start_system(name: str, echo_url: str, key: str, token: str, sessions: int, cpu: int | None) -> Running:
    """Start one of RELAYS against the echo upstream (or, for `direct`, nothing)."""
    if name == DIRECT:
        return Running(name, echo_url + "?model=gpt-realtime", {"Authorization": f"Bearer {key}"})
    port = free_port()
    url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
    env = _base_env(key)
    if name == "relay":
        env.update(
            {
                "RELAY_UPSTREAM_URL": echo_url,
                "RELAY_ACCESS_TOKENS": token,
                "RELAY_PORT": str(port),
                "RELAY_METRICS_PORT": str(free_port()),
                **relay_settings(sessions),
            }
        )
        command = [sys.executable, "-m", "relay"]
    else:
        command = [sys.executable, "-m", _MODULES[name], "--port", str(port), "--upstream", echo_url]
    # The references ask for no credential; the token is sent to every relay alike.
    return start_process(name, command, env, port, cpu, url, {"Authorization": f"Bearer {token}"})
