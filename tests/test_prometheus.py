"""A real Prometheus server scrapes the real relay command; promtool accepts the exposition.

Prometheus (`/usr/bin/prometheus`, Debian package `prometheus`) runs on 127.0.0.1 with a 1 s scrape interval and
its storage in the test's temporary directory; it is stopped at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.fake.server import FakeRealtimeServer
from tests.harness import REPO, free_port
from tests.test_dashboard import expressions, load
from tests.test_metrics import RealtimeClient, parse_exposition, value
from tests.test_relay_sdk import voiced_turn

RelayFactory = Callable[..., Awaitable[Any]]
FIRST_AUDIO_P50 = "histogram_quantile(0.5, sum by (le) (rate(relay_response_first_audio_seconds_bucket[1m])))"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is not installed (Debian package `prometheus`)"
    return path


@dataclass
class Prometheus:
    """A Prometheus server scraping one target; `query` evaluates PromQL through its HTTP API."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    async def query(self, promql: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        body = response.json()
        assert body["status"] == "success", f"{promql}: {body}"
        return list(body["data"]["result"])

    async def scalar(self, promql: str) -> float | None:
        """The single value of an instant query, or None while it has no data."""
        result = await self.query(promql)
        return float(result[0]["value"][1]) if result else None

    async def wait_for(self, promql: str, predicate: Callable[[float], bool], timeout: float = 20) -> float:
        """Poll an instant query until its single value satisfies `predicate`; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            last = await self.scalar(promql)
            if last is not None and predicate(last):
                return last
            await asyncio.sleep(0.25)
        raise AssertionError(f"{promql} never satisfied the check within {timeout} s (last value {last})")


@pytest.fixture
async def prometheus(tmp_path: Path) -> AsyncIterator[Callable[[str], Awaitable[Prometheus]]]:
    """Start Prometheus scraping `host:port` (the relay's metrics listener) every second."""
    started: list[Prometheus] = []

    async def start(target: str) -> Prometheus:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  evaluation_interval: 1s\n"
            # The deployment's recording rules, which the dashboard queries.
            f"rule_files: ['{REPO / 'deploy' / 'recording-rules.yml'}']\n"
            "scrape_configs:\n"
            "  - job_name: relay\n"
            "    scrape_interval: 1s\n"
            "    scrape_timeout: 900ms\n"
            "    metrics_path: /metrics\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        log_path = tmp_path / "prometheus.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    tool("prometheus"),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = Prometheus(process, f"http://127.0.0.1:{port}", log_path)
        started.append(server)
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient() as http:
            while True:
                assert process.poll() is None, f"prometheus exited:\n{log_path.read_text()}"
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{server.url}/-/ready", timeout=1)).status_code == 200:
                        return server
                assert time.monotonic() < deadline, f"prometheus not ready:\n{log_path.read_text()}"
                await asyncio.sleep(0.1)

    yield start
    for server in started:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(5)


async def voice_session(relay: Any) -> RealtimeClient:
    """One voiced turn through the relay, then the client closes."""
    client = await RealtimeClient.open(relay.ws_url)
    await client.send_audio(voiced_turn(), 24000)
    await client.wait_for("response.done")  # the turn is over (rate limits come at its start)
    await client.close()
    return client


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's variables with what they would be here (all instances, a 1 minute window)."""
    return expr.replace("$__rate_interval", "1m").replace("$instance", ".*")


async def test_prometheus_scrapes_the_relay_and_answers_first_audio_quantiles(
    start_relay: RelayFactory,
    fake_upstream: FakeRealtimeServer,
    prometheus: Callable[[str], Awaitable[Prometheus]],
) -> None:
    fake_upstream.options.first_audio_delay = 0.3
    relay = await start_relay(upstream_url=fake_upstream.url)
    prom = await prometheus(f"127.0.0.1:{relay.metrics_port}")
    # The zero series are scraped before the turn, so rate() sees the increase the turn makes.
    await prom.wait_for('up{job="relay"}', lambda v: v == 1)
    await prom.wait_for(
        'relay_response_first_audio_seconds_count{trigger="speech_stopped"}', lambda v: v == 0
    )

    client = await voice_session(relay)

    p50 = await prom.wait_for(FIRST_AUDIO_P50, lambda v: not math.isnan(v))
    # One observation of ~0.30 s falls in the (0.3, 0.35] bucket; the quantile interpolates inside it.
    assert 0.3 <= p50 <= 0.35, p50
    await prom.wait_for('relay_sessions_total{outcome="client_closed"}', lambda v: v == 1)
    assert await prom.scalar("sum(relay_sessions_total)") == 1
    assert await prom.scalar("relay_sessions_active") == 0
    assert await prom.scalar("relay_session_duration_seconds_count") == 1
    appends = await prom.scalar(
        'relay_events_total{direction="to_upstream", type="input_audio_buffer.append"}'
    )
    assert appends == client.frames_sent

    # Every dashboard query is valid PromQL over these series, and those that are not filtered to non-zero
    # values return data after one turn.
    for expr in expressions(load()):
        if expr.startswith("label_values("):
            assert await prom.query("relay_sessions_active"), expr
            continue
        result = await prom.query(grafana_to_promql(expr))
        # A recorded series appears at the rule group's next evaluation (every 5 s).
        deadline = time.monotonic() + 15
        while not result and "relay:" in expr and "> 0" not in expr and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            result = await prom.query(grafana_to_promql(expr))
        if "> 0" not in expr:
            assert result, f"dashboard query returned nothing: {expr}"
    # So is every recording rule of the deployment.
    rules = re.findall(
        r"^\s+expr:\s*(.+)$", (REPO / "deploy" / "recording-rules.yml").read_text(), re.MULTILINE
    )
    assert rules
    for expr in rules:
        await prom.query(expr)


async def test_promtool_accepts_the_exposition_and_metrics_stay_off_the_public_port(
    start_relay: RelayFactory, fake_upstream: FakeRealtimeServer
) -> None:
    relay = await start_relay(upstream_url=fake_upstream.url, metrics_identity_label="true")
    await voice_session(relay)
    async with httpx.AsyncClient() as http:
        exposition = (await http.get(relay.metrics_url)).text
        public = await http.get(f"{relay.base_url}/metrics")
    samples = parse_exposition(exposition)
    # The exposition is the real one after a session: histograms with data, per-identity series present.
    assert value(samples, "relay_response_first_audio_seconds_count", trigger="speech_stopped") == 1
    assert any(name == "relay_identity_sessions_total" for name, _ in samples)
    checked = await asyncio.to_thread(
        subprocess.run,
        [tool("promtool"), "check", "metrics"],
        input=exposition.encode(),
        capture_output=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert "relay_" not in public.text
    assert public.status_code == 404
