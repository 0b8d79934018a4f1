"""Log lines: JSON or console, session context on every line of a session, uvicorn alike, nothing secret."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import pty
import re
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import structlog

from relay.fake.server import FakeRealtimeServer
from relay.logging import configure_logging, redact_query
from tests.conftest import TEST_API_KEY, ProxiedRelay
from tests.harness import REPO, free_port, stop_process
from tests.test_metrics import RealtimeClient
from tests.test_relay_sdk import voiced_turn

RelayFactory = Callable[..., Awaitable[Any]]
# A run of base64 this long in a log line would be an audio payload (or a key) written out.
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{120,}")


@pytest.fixture
def log_buffer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., io.StringIO]]:
    """Configure the product's logging into a buffer; restore the test process's logging afterwards."""
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets", "websockets.client")
    saved = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate, logging.getLogger(n).level)
        for n in names
    }

    def configure(log_format: str = "json", level: str = "info", **kwargs: Any) -> io.StringIO:
        buffer = io.StringIO()
        monkeypatch.setattr(sys, "stderr", buffer)
        configure_logging(log_format, level, **kwargs)
        return buffer

    yield configure
    structlog.configure(**saved_structlog)
    root.handlers[:], level = saved_root
    root.setLevel(level)
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)


def json_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


# -- the formatter ---------------------------------------------------------------------------------------------


def test_structlog_and_library_lines_are_json_with_bound_context(
    log_buffer: Callable[..., io.StringIO],
) -> None:
    buffer = log_buffer("json")
    with structlog.contextvars.bound_contextvars(session_id="rs_abc", identity="alice"):
        structlog.get_logger("relay.test").info("turn_done", turns=2)
        logging.getLogger("some.library").warning("library says %s", "hello")
    structlog.get_logger("relay.test").info("outside")
    inside_ours, inside_library, outside = json_lines(buffer)
    assert inside_ours["event"] == "turn_done" and inside_ours["turns"] == 2
    assert inside_library["event"] == "library says hello" and inside_library["logger"] == "some.library"
    for line in (inside_ours, inside_library):
        assert line["session_id"] == "rs_abc" and line["identity"] == "alice"
        assert {"timestamp", "level", "logger"} <= line.keys()
    assert "session_id" not in outside


def test_secrets_never_reach_a_line(log_buffer: Callable[..., io.StringIO]) -> None:
    key = "sk-test-" + secrets.token_hex(16)
    token = "tok-" + secrets.token_hex(8)
    buffer = log_buffer("json", secrets=[key, token, "short"])
    log = structlog.get_logger("relay.test")
    log.info("upstream_refused", detail=f"server said: invalid key {key}")
    log.info("handshake", authorization=f"Bearer {token}", audio="UklGRiQAAABXQVZF", delta="AAAA")
    logging.getLogger("library").error("failed with %s", key)
    try:
        raise RuntimeError(f"boom {token}")
    except RuntimeError:
        log.exception("crashed")
    text = buffer.getvalue()
    assert key not in text and token not in text
    lines = json_lines(buffer)
    assert lines[0]["detail"] == "server said: invalid key <redacted>"
    assert lines[1]["authorization"] == lines[1]["audio"] == lines[1]["delta"] == "<redacted>"
    assert lines[2]["event"] == "failed with <redacted>"
    assert "RuntimeError: boom <redacted>" in lines[3]["exception"]
    # Too short to search for safely: ordinary words are left alone.
    log.info("a short word")
    assert json_lines(buffer)[-1]["event"] == "a short word"


def test_console_format_is_key_value(log_buffer: Callable[..., io.StringIO]) -> None:
    buffer = log_buffer("console")
    structlog.get_logger("relay.test").info("session_closed", turns=3, close_reason="client closed")
    line = buffer.getvalue().strip()
    assert not line.startswith("{")
    assert "session_closed" in line and "turns=3" in line and "close_reason='client closed'" in line


def test_websockets_debug_lines_are_dropped(log_buffer: Callable[..., io.StringIO]) -> None:
    # The websockets library logs handshake headers (Authorization included) and frame contents at debug level.
    buffer = log_buffer("json", level="debug")
    logging.getLogger("websockets.client").setLevel(logging.DEBUG)
    record = logging.LogRecord(
        "websockets.client",
        logging.DEBUG,
        "/x/site-packages/websockets/client.py",
        297,
        "> %s: %s",
        ("Authorization", "Bearer x"),
        None,
    )
    logging.getLogger("websockets.client").handle(record)
    structlog.get_logger("relay.test").debug("still_here")
    assert [line["event"] for line in json_lines(buffer)] == ["still_here"]


def test_query_strings_keep_only_known_parameters() -> None:
    assert redact_query("/v1/realtime?model=gpt-realtime&input_rate=48000") == (
        "/v1/realtime?model=gpt-realtime&input_rate=48000"
    )
    assert (
        redact_query("/v1/realtime?token=s3cret&input_rate=44100")
        == "/v1/realtime?token=<redacted>&input_rate=44100"
    )
    assert redact_query("/healthz") == "/healthz"
    assert "s3cret" not in redact_query("/x?api-key=s3cret&a=s3cret&&=s3cret")


# -- a real session ----------------------------------------------------------------------------------------------


async def test_library_lines_in_a_session_task_carry_its_ids(relay: ProxiedRelay) -> None:
    # The websockets client logs its upstream handshake from the session's upstream task; whatever it logs
    # there must see the session's context (merge_contextvars reads it when the line is formatted).
    seen: list[dict[str, Any]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(structlog.contextvars.get_contextvars())

    library = logging.getLogger("websockets.client")
    handler, level = Capture(), library.level
    library.addHandler(handler)
    library.setLevel(logging.DEBUG)
    try:
        client = await RealtimeClient.open(relay.ws_url)
        await client.close()
    finally:
        library.removeHandler(handler)
        library.setLevel(level)
    assert seen, "the websockets client logged nothing at debug level"
    ids = {(c.get("session_id"), c.get("identity")) for c in seen}
    assert len(ids) == 1
    [(session_id, identity)] = ids
    assert session_id is not None and session_id.startswith("rs_") and identity


async def test_session_lines_are_json_with_ids_summary_and_no_secrets(
    start_relay: RelayFactory, fake_upstream: FakeRealtimeServer
) -> None:
    query_secret = "qs-" + secrets.token_hex(12)
    fake_upstream.options.first_audio_delay = 0.2
    relay = await start_relay(upstream_url=fake_upstream.url)
    async with httpx.AsyncClient() as http:
        assert (
            await http.get(f"{relay.base_url}/healthz?token={query_secret}&input_rate=48000")
        ).status_code == 200
    client = await RealtimeClient.open(f"{relay.ws_url}?input_rate=24000&access_token={query_secret}")
    await client.send_audio(voiced_turn(), 24000)
    await client.wait_for("response.done")
    await client.close()

    async with asyncio.timeout(5):
        while "session_closed" not in relay.log_text():
            await asyncio.sleep(0.02)
    text = relay.log_text()
    lines = relay.log_lines()  # every line parses as JSON, or this fails
    assert all({"event", "level", "timestamp"} <= line.keys() for line in lines)

    opened = next(line for line in lines if line["event"] == "session_opened")
    session_id = opened["session_id"]
    in_session = [line for line in lines if line.get("session_id") == session_id]
    assert {"session_opened", "upstream_connected", "session_closed"} <= {
        line["event"] for line in in_session
    }
    assert all(line["identity"] == opened["identity"] for line in in_session)

    [summary] = [line for line in in_session if line["event"] == "session_closed"]
    assert summary["outcome"] == "client_closed" and summary["close_reason"]
    assert summary["duration_s"] > 0
    assert summary["audio_in_s"] == pytest.approx(len(voiced_turn()) / 48000, abs=0.01)
    heard = sum(
        len(e["delta"]) * 3 // 4 for _, e in client.events if e["type"] == "response.output_audio.delta"
    )
    assert summary["audio_out_s"] == pytest.approx(heard / 48000, abs=0.01)
    assert summary["turns"] == 1
    assert 190 <= summary["first_audio_p50_ms"] <= 260
    _, done = await client.wait_for("response.done")
    assert summary["tokens"] == done["response"]["usage"]["total_tokens"]

    # uvicorn's own lines: key/value, with unknown query values redacted.
    [health] = [
        line for line in lines if line["event"] == "http_request" and line["path"].startswith("/healthz?")
    ]
    assert health["path"] == "/healthz?token=<redacted>&input_rate=48000"
    assert health["status"] == 200 and health["method"] == "GET" and health["logger"] == "uvicorn.access"
    handshakes = [line for line in lines if line["event"] == "websocket_handshake"]
    assert any(line["path"] == "/v1/realtime?input_rate=24000&access_token=<redacted>" for line in handshakes)
    assert all(line["result"] in {"accepted", "rejected"} for line in handshakes)

    assert query_secret not in text
    assert TEST_API_KEY not in text
    assert not BASE64_RUN.search(text), "an audio payload was written to the log"


def test_console_lines_by_default_on_a_terminal(tmp_path: Any) -> None:
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_") and k != "OPENAI_API_KEY"}
    env.update({"RELAY_PORT": str(port), "RELAY_METRICS_PORT": str(metrics_port), "PYTHONUNBUFFERED": "1"})
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "relay", "--demo"],
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    output = b""
    try:
        deadline = time.monotonic() + 20
        while b"Application startup complete" not in output and b"Uvicorn running" not in output:
            assert time.monotonic() < deadline, output.decode(errors="replace")
            if select.select([primary], [], [], 0.2)[0]:
                with contextlib.suppress(OSError):
                    output += os.read(primary, 65536)
        httpx.get(f"http://127.0.0.1:{port}/healthz?token=never-logged", timeout=5)
        deadline = time.monotonic() + 5
        while b"http_request" not in output and time.monotonic() < deadline:
            if select.select([primary], [], [], 0.2)[0]:
                with contextlib.suppress(OSError):
                    output += os.read(primary, 65536)
    finally:
        stop_process(process, 10)
        os.close(primary)
    text = re.sub(r"\x1b\[[0-9;]*m", "", output.decode(errors="replace"))
    starting = next(line for line in text.splitlines() if "relay_listening" in line)
    assert not starting.lstrip().startswith("{"), "a terminal gets console lines, not JSON"
    # The page's URL leads the first line instead of ending a long alphabetically sorted one.
    assert "[info" in starting and starting.index(f"open=http://127.0.0.1:{port}/") < starting.index("model=")
    request = next(line for line in text.splitlines() if "http_request" in line)
    assert "path='/healthz?token=<redacted>'" in request and "status=200" in request
    assert "never-logged" not in text
