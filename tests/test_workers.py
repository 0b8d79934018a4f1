"""`--workers N`: N relay processes behind one port, their metrics merged, drained together on SIGTERM.

The end-to-end test runs the real command with two workers, a real redis-server and a real Prometheus scraping the
parent's one metrics port: sessions land on both workers, both spend CPU under a bounded load (printed per worker),
Prometheus's sums across the `worker` label equal what each worker logged, and SIGTERM drains both.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from relay.fake.server import FakeRealtimeServer
from relay.workers.cores import available_cores, cgroup_cpu_limit, worker_count, workers_problem
from relay.workers.fanin import merge, render
from tests.conftest import ProxiedRelay
from tests.harness import REPO, RelayProcess
from tests.redis_server import RedisServer, redis_server_fixture  # noqa: F401
from tests.test_access import refused
from tests.test_metrics import RealtimeClient, parse_exposition, value
from tests.test_prometheus import Prometheus, prometheus, tool  # noqa: F401

RelayFactory = Callable[..., Awaitable[ProxiedRelay[RelayProcess]]]
DRAIN_SECONDS = 2.0
#: Sessions each worker must have served before the load starts; opening stops after `MAX_OPENED` in all.
PER_WORKER = 2
MAX_OPENED = 30
LOAD_SECONDS = 4.0
#: CPU a worker streaming real-time 48 kHz audio for LOAD_SECONDS certainly spends, and an idle one does not reach.
MIN_LOAD_CPU_SECONDS = 0.05


# -- how many ------------------------------------------------------------------------------------------------


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_caps_the_worker_count(tmp_path: Path) -> None:
    write(tmp_path / "cpu.max", "max 100000\n")
    write(tmp_path / "kubepods" / "pod1" / "cpu.max", "150000 100000\n")
    assert cgroup_cpu_limit(tmp_path, "0::/kubepods/pod1\n") == 1.5
    # A tighter limit further up wins.
    write(tmp_path / "kubepods" / "cpu.max", "100000 100000\n")
    assert cgroup_cpu_limit(tmp_path, "0::/kubepods/pod1\n") == 1.0
    assert available_cores(tmp_path, "0::/kubepods/pod1\n") == 1
    # No quota: the affinity decides.
    assert cgroup_cpu_limit(tmp_path, "0::/\n") is None
    assert available_cores(tmp_path, "0::/\n") == len(os.sched_getaffinity(0))


def test_cgroup_v1_quota_and_none(tmp_path: Path) -> None:
    write(tmp_path / "cpu" / "cpu.cfs_quota_us", "250000\n")
    write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(tmp_path, "4:cpu,cpuacct:/\n") == 2.5
    write(tmp_path / "cpu" / "cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_limit(tmp_path, "4:cpu,cpuacct:/\n") is None
    assert worker_count(3) == 3
    assert worker_count(None) == available_cores()


def test_more_than_one_worker_needs_redis() -> None:
    assert workers_problem(1, "") is None
    assert workers_problem(4, "redis://redis:6379/0") is None
    problem = workers_problem(2, "")
    assert problem is not None and "RELAY_REDIS_URL" in problem and "2 times the limits" in problem
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    done = subprocess.run(
        [sys.executable, "-m", "relay", "--demo", "--workers", "2"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "RELAY_WORKERS=2 needs RELAY_REDIS_URL" in done.stderr


def test_expositions_are_merged_with_a_worker_label() -> None:
    def exposition(sessions: int, cpu: float) -> str:
        return (
            "# HELP relay_sessions_total Relay sessions ended, by outcome.\n"
            "# TYPE relay_sessions_total counter\n"
            f'relay_sessions_total{{outcome="client_closed"}} {sessions}\n'
            "# HELP process_cpu_seconds_total CPU.\n# TYPE process_cpu_seconds_total counter\n"
            f"process_cpu_seconds_total {cpu}\n"
        )

    merged = parse_exposition(render(merge({"0": exposition(3, 1.5), "1": exposition(4, 2.0)})).decode())
    assert value(merged, "relay_sessions_total", outcome="client_closed", worker="0") == 3
    assert value(merged, "relay_sessions_total", outcome="client_closed", worker="1") == 4
    assert value(merged, "process_cpu_seconds_total", worker="1") == 2.0
    assert len(merged) == 4


# -- two workers, end to end -----------------------------------------------------------------------------------


def load_audio(seconds: float, rate: int = 48000) -> bytes:
    """A loud voiced signal without pauses: the model hears speech for the whole load."""
    t = np.arange(int(seconds * rate)) / rate
    voice = np.zeros_like(t)
    for i, f in enumerate((180, 360, 540, 720)):
        voice += np.sin(2 * np.pi * f * t) / (i + 1)
    return (6000 * voice).astype("<i2").tobytes()


def opened_per_worker(relay: Any) -> Counter[int]:
    return Counter(
        line["worker"] for line in relay.inner.log_lines() if line.get("event") == "session_opened"
    )


async def worker_cpu(relay: Any) -> dict[str, float]:
    async with httpx.AsyncClient() as http:
        samples = parse_exposition((await http.get(relay.inner.metrics_url, timeout=5)).text)
    return {
        dict(labels)["worker"]: v
        for (name, labels), v in samples.items()
        if name == "process_cpu_seconds_total"
    }


@pytest.mark.slow
async def test_two_workers_share_one_port_sum_in_prometheus_and_drain_together(
    start_relay: RelayFactory,
    fake_upstream: FakeRealtimeServer,
    redis_server: RedisServer,
    prometheus: Callable[[str], Awaitable[Prometheus]],  # noqa: F811
) -> None:
    relay = await start_relay(
        "--workers",
        "2",
        upstream_url=fake_upstream.url,
        redis_url=redis_server.url,
        max_sessions_per_identity="50",
        drain_seconds=str(DRAIN_SECONDS),
    )
    prom = await prometheus(f"127.0.0.1:{relay.inner.metrics_port}")
    await prom.wait_for('up{job="relay"}', lambda v: v == 1)
    url = relay.ws_url + "?input_rate=48000"

    # Sessions opened one after another on the one port; the kernel hands each to a worker waiting in accept.
    clients: list[RealtimeClient] = []
    workers: list[int] = []
    while min(opened_per_worker(relay).get(w, 0) for w in (0, 1)) < PER_WORKER:
        assert len(clients) < MAX_OPENED, f"sessions by worker after {MAX_OPENED}: {opened_per_worker(relay)}"
        before = opened_per_worker(relay)
        clients.append(await RealtimeClient.open(url))
        (worker,) = (opened_per_worker(relay) - before).elements()
        workers.append(worker)
    by_worker = Counter(workers)
    print(f"sessions per worker: {dict(sorted(by_worker.items()))}")

    # Bounded load: every session streams real-time 48 kHz audio for a few seconds.
    cpu_before = await worker_cpu(relay)
    await asyncio.gather(*(c.send_audio(load_audio(LOAD_SECONDS), 48000, paced=True) for c in clients))
    cpu_after = await worker_cpu(relay)
    used = {w: cpu_after[w] - cpu_before[w] for w in ("0", "1")}
    print(
        "CPU per worker during the load: "
        + ", ".join(f"worker {w}: {s:.2f} s" for w, s in sorted(used.items()))
    )
    assert all(s >= MIN_LOAD_CPU_SECONDS for s in used.values()), used

    # Prometheus sees each worker's series and sums them.
    await prom.wait_for("sum(relay_sessions_active)", lambda v: v == len(clients))
    for w in (0, 1):
        assert await prom.scalar(f'relay_sessions_active{{worker="{w}"}}') == by_worker[w]
    assert await prom.scalar("count(count by (worker) (process_cpu_seconds_total))") == 2
    # The merged exposition is valid as a whole (one HELP and TYPE per family, whatever the number of workers).
    async with httpx.AsyncClient() as http:
        merged = (await http.get(relay.inner.metrics_url, timeout=5)).text
    checked = await asyncio.to_thread(
        subprocess.run,
        [tool("promtool"), "check", "metrics"],
        input=merged.encode(),
        capture_output=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    # One session of each worker ends; the rest stay open for the drain.
    closing = [clients[workers.index(0)], clients[workers.index(1)]]
    for client in closing:
        await client.close()
    await prom.wait_for('sum(relay_sessions_total{outcome="client_closed"})', lambda v: v == 2)
    assert await prom.scalar('relay_sessions_total{outcome="client_closed", worker="0"}') == 1
    assert await prom.scalar('relay_sessions_total{outcome="client_closed", worker="1"}') == 1
    await prom.wait_for("sum(relay_sessions_active)", lambda v: v == len(clients) - 2)
    held = [c for c in clients if c not in closing]

    # SIGTERM: readiness off at once on every worker, new sessions refused, open ones on both get the drain time.
    relay.inner.process.send_signal(15)
    signalled = time.monotonic()
    async with httpx.AsyncClient() as http:
        while (await http.get(f"{relay.base_url}/readyz", timeout=2)).status_code != 503:
            assert time.monotonic() - signalled < 2, "readiness still on"
            await asyncio.sleep(0.05)
        for _ in range(4):  # whichever worker answers
            assert (await http.get(f"{relay.base_url}/readyz", timeout=2)).status_code == 503
    draining = await refused(relay.ws_url)
    assert draining.status == 503 and draining.body["error"]["code"] == "relay_shutting_down"
    for client in held:
        await client.wait_for("error", timeout=DRAIN_SECONDS + 5)
        error = next(e for _, e in client.events if e["type"] == "error")["error"]
        assert error["code"] == "relay_shutting_down"
        async with asyncio.timeout(5):
            await client.ws.wait_closed()
        assert client.ws.close_code == 1001
    closed_after = time.monotonic() - signalled
    assert DRAIN_SECONDS - 0.5 <= closed_after <= DRAIN_SECONDS + 4, closed_after
    await asyncio.to_thread(relay.inner.process.wait, 15)
    relay.inner.stopped = True
    lines = relay.inner.log_lines()
    assert {line.get("worker") for line in lines if line["event"] == "draining"} == {0, 1}
    stopped = {line["worker"]: line["exit_code"] for line in lines if line["event"] == "worker_stopped"}
    assert stopped == {0: 0, 1: 0}, "both workers drained and exited by themselves"
    assert relay.inner.process.returncode == 0
    assert not [line for line in lines if line["event"] in ("worker_killed", "worker_exited")]
    for client in held:
        await client.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def started_workers(relay: Any, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        started = [line for line in relay.inner.log_lines() if line.get("event") == "worker_started"]
        if len(started) >= count:
            return started
        assert time.monotonic() < deadline, f"{len(started)} workers started, expected {count}"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_a_dead_worker_is_replaced_and_orphaned_workers_stop(
    start_relay: RelayFactory, fake_upstream: FakeRealtimeServer, redis_server: RedisServer
) -> None:
    relay = await start_relay(
        "--workers", "2", upstream_url=fake_upstream.url, redis_url=redis_server.url, drain_seconds="1"
    )
    first = await started_workers(relay, 2)
    os.kill(first[0]["pid"], 9)
    replaced = (await started_workers(relay, 3))[2]
    assert replaced["worker"] == first[0]["worker"] and replaced["pid"] != first[0]["pid"]
    exited = [line for line in relay.inner.log_lines() if line.get("event") == "worker_exited"]
    assert [(e["worker"], e["exit_code"]) for e in exited] == [(first[0]["worker"], -9)]
    async with httpx.AsyncClient() as http:
        deadline = time.monotonic() + 20
        while True:
            samples = parse_exposition((await http.get(relay.inner.metrics_url, timeout=5)).text)
            workers = {
                dict(labels).get("worker") for (name, labels) in samples if name == "relay_sessions_active"
            }
            if workers == {"0", "1"}:
                break
            assert time.monotonic() < deadline, workers
            await asyncio.sleep(0.2)
        assert value(samples, "relay_worker_restarts_total") == 1
        assert (await http.get(f"{relay.base_url}/readyz", timeout=2)).status_code == 200

    # The parent dies without a word: its workers notice, drain and exit instead of holding the port.
    pids = [replaced["pid"], first[1]["pid"]]
    relay.inner.process.kill()
    relay.inner.process.wait(5)
    relay.inner.stopped = True
    deadline = time.monotonic() + 15
    while any(pid_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "orphaned workers still running"
        await asyncio.sleep(0.2)
    assert sum(1 for line in relay.inner.log_lines() if line.get("event") == "worker_orphaned") == 2
