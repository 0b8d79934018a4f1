"""The image's HEALTHCHECK (`python -m relay.healthcheck`) finds where the running relay listens.

The process table is a folder laid out like /proc (cmdline and environ, NUL-separated), so the test picks exactly
which "relay" is running; the health endpoint it asks is a real HTTP server on loopback.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from relay.config import load_config
from relay.healthcheck import DEFAULT_HOST, DEFAULT_PORT, RelayProcess, check, health_url, serve_arguments

SCRIPT = ["/app/.venv/bin/python", "/app/.venv/bin/realtime-relay"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([*SCRIPT], []),
        ([*SCRIPT, "--demo", "--port", "9000"], ["--demo", "--port", "9000"]),
        ([*SCRIPT, "serve", "--port", "9000"], ["--port", "9000"]),
        (["python", "-m", "relay", "--port", "7000"], ["--port", "7000"]),
        ([*SCRIPT, "fake-upstream", "--port", "8765"], None),
        (["python", "-m", "relay.healthcheck"], None),
        (["sleep", "5"], None),
    ],
)
def test_serve_arguments(argv: list[str], expected: list[str] | None) -> None:
    assert serve_arguments(argv) == expected


def test_a_port_flag_wins_over_the_environment() -> None:
    env = {"RELAY_HOST": "0.0.0.0", "RELAY_PORT": "8080"}
    assert health_url(RelayProcess(1, [], env)) == "http://127.0.0.1:8080/healthz"
    assert health_url(RelayProcess(1, ["--port", "9000"], env)) == "http://127.0.0.1:9000/healthz"
    assert health_url(RelayProcess(1, ["--host", "::"], env)) == "http://[::1]:8080/healthz"
    assert health_url(RelayProcess(1, ["--host", "10.1.2.3"], env)) == "http://10.1.2.3:8080/healthz"
    assert health_url(RelayProcess(1, ["--demo", "--port=9100"], {})) == "http://127.0.0.1:9100/healthz"


def test_the_defaults_are_the_relays() -> None:
    defaults = load_config({})
    assert (defaults.host, defaults.port) == (DEFAULT_HOST, DEFAULT_PORT)
    assert health_url(RelayProcess(1, [], {})) == f"http://{defaults.host}:{defaults.port}/healthz"


def test_the_health_check_does_not_load_the_relays_settings() -> None:
    # Docker runs it every 15 s: importing relay.config (and numpy with it) would cost most of a second each time.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, relay.healthcheck; print('numpy' in sys.modules, 'relay.config' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert probe.stdout.split() == ["False", "False"]


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def fake_proc(root: Path, pid: int, argv: list[str], env: dict[str, str]) -> None:
    folder = root / str(pid)
    folder.mkdir(parents=True)
    (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (folder / "environ").write_bytes(b"".join(f"{k}={v}\0".encode() for k, v in env.items()))


def test_check_asks_the_port_the_relay_was_started_with(
    health_server: ThreadingHTTPServer, tmp_path: Path
) -> None:
    port = health_server.server_address[1]
    fake_proc(tmp_path, 7, ["sleep", "100"], {})
    fake_proc(tmp_path, 12, [*SCRIPT, "--port", str(port)], {"RELAY_HOST": "0.0.0.0", "RELAY_PORT": "1"})
    assert check(proc=tmp_path) is None

    _Health.status = 503
    try:
        assert check(proc=tmp_path) == f"http://127.0.0.1:{port}/healthz answered 503"
    finally:
        _Health.status = 200


def test_check_fails_without_a_relay_or_with_nothing_listening(tmp_path: Path) -> None:
    fake_proc(tmp_path, 3, ["sleep", "100"], {})
    assert check(proc=tmp_path) == "no realtime-relay process of this user is running"
    # Port 1 on loopback: nothing listens there.
    fake_proc(tmp_path, 4, [*SCRIPT], {"RELAY_PORT": "1"})
    problem = check(proc=tmp_path, timeout=1)
    assert problem is not None and problem.startswith("http://127.0.0.1:1/healthz did not answer")
