"""``realtime-relay bench relay``: how much CPU the relay spends per live voice session.

Starts the simulated model and the relay as separate processes on 127.0.0.1, then drives N clients that each stream
48 kHz PCM in real-time 20 ms binary frames (speech-like bursts and pauses, so the model takes turns and streams
audio back). Prints the machine, the relay process's CPU time over the run as a share of one core, per session, and
the relay's own forwarding time from its Prometheus histogram. Bounded in sessions and seconds; loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import websockets

from relay.bench import machine_lines
from relay.cli_args import StrictParser

RATE = 48000
FRAME = RATE // 50  # 20 ms
MAX_SESSIONS = 200
MAX_SECONDS = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _speech_like(seconds: float, seed: int) -> bytes:
    """Voiced bursts of 1.0 s with 0.8 s pauses: enough for a voice-activity detector to take turns."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = 120 + 60 * rng.random()
    voiced = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 6))
    gate = (t % 1.8) < 1.0
    return (5000 * voiced * gate).astype("<i2").tobytes()


async def _client(url: str, audio: bytes, stop_at: float, counts: dict[str, int]) -> None:
    async with websockets.connect(url, max_size=None, compression=None) as ws:

        async def drain() -> None:
            async for message in ws:
                counts["received"] += 1
                counts["received_bytes"] += len(message)

        reader = asyncio.create_task(drain())
        frame_bytes = FRAME * 2
        next_send = time.monotonic()
        offset = 0
        while time.monotonic() < stop_at:
            await ws.send(audio[offset : offset + frame_bytes])
            counts["sent"] += 1
            offset = (offset + frame_bytes) % (len(audio) - frame_bytes)
            next_send += 0.02
            await asyncio.sleep(max(0.0, next_send - time.monotonic()))
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


def _histogram_mean(text: str, name: str, label: str) -> tuple[float, float]:
    total = re.search(rf"^{name}_sum{{{label}}} (\S+)$", text, re.MULTILINE)
    count = re.search(rf"^{name}_count{{{label}}} (\S+)$", text, re.MULTILINE)
    if not total or not count or float(count.group(1)) == 0:
        return 0.0, 0.0
    return float(total.group(1)) / float(count.group(1)), float(count.group(1))


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (a loopback URL built here)
        return str(response.read().decode())


def _wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError("the relay exited during start-up")
        with contextlib.suppress(OSError):
            _get(url)
            return
        time.sleep(0.05)
    raise TimeoutError("the relay did not become healthy")


async def _drive(url: str, sessions: int, seconds: float, counts: dict[str, int]) -> None:
    audio = [_speech_like(9.0, seed) for seed in range(8)]
    stop_at = time.monotonic() + seconds
    await asyncio.gather(*(_client(url, audio[n % len(audio)], stop_at, counts) for n in range(sessions)))


def run(sessions: int, seconds: float) -> int:
    """Run the benchmark and print its figures."""
    key = "bench-" + secrets.token_hex(8)
    fake_port, port, metrics_port = _free_port(), _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(
        {
            "OPENAI_API_KEY": key,
            "RELAY_UPSTREAM_URL": f"ws://127.0.0.1:{fake_port}/v1/realtime",
            "RELAY_PORT": str(port),
            "RELAY_METRICS_PORT": str(metrics_port),
            "RELAY_MAX_SESSIONS": str(sessions),
            "RELAY_MAX_SESSIONS_PER_IDENTITY": str(sessions),
            "RELAY_LOG_LEVEL": "warning",
        }
    )
    command = [sys.executable, "-m", "relay"]
    quiet = subprocess.DEVNULL
    fake = subprocess.Popen(  # noqa: S603 (this interpreter, fixed arguments)
        [*command, "fake-upstream", "--port", str(fake_port), "--api-key", key],
        env=env,
        stdout=quiet,
        stderr=quiet,
    )
    relay = subprocess.Popen(command, env=env, stdout=quiet, stderr=quiet)  # noqa: S603
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/healthz", relay)
        counts = {"sent": 0, "received": 0, "received_bytes": 0}
        cpu_before, wall_before = _cpu_seconds(relay.pid), time.monotonic()
        asyncio.run(_drive(f"ws://127.0.0.1:{port}/v1/realtime?input_rate={RATE}", sessions, seconds, counts))
        cpu = _cpu_seconds(relay.pid) - cpu_before
        wall = time.monotonic() - wall_before
        exposition = _get(f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        for process in (relay, fake):
            process.terminate()
        for process in (relay, fake):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
    up_mean, up_n = _histogram_mean(exposition, "relay_forward_latency_seconds", 'direction="to_upstream"')
    down_mean, down_n = _histogram_mean(exposition, "relay_forward_latency_seconds", 'direction="to_client"')
    share = cpu / wall
    for line in machine_lines():
        print(line)
    print(
        f"sessions: {sessions}, each 48 kHz PCM16 in 20 ms binary frames for {wall:.1f} s, model replies "
        "streamed back"
    )
    print(
        f"frames sent: {counts['sent']} ({counts['sent'] / wall:.0f}/s); events received by clients: "
        f"{counts['received']} ({counts['received_bytes'] / wall / 1e6:.2f} MB/s)"
    )
    print(
        f"relay process CPU: {100 * share:.1f}% of one core; {100 * share / sessions:.2f}% per session; "
        f"~{sessions / share:.0f} sessions per core at this load"
    )
    print(
        f"relay forwarding time (mean, from its histogram): to upstream {up_mean * 1e6:.0f} us over "
        f"{up_n:.0f} frames; to client {down_mean * 1e6:.0f} us over {down_n:.0f} events"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``bench relay [--sessions N] [--seconds S]``."""
    parser = StrictParser(
        prog="realtime-relay bench relay", description="CPU per live voice session, on 127.0.0.1."
    )
    parser.add_argument("--sessions", type=int, default=50, help=f"concurrent sessions (1-{MAX_SESSIONS})")
    parser.add_argument("--seconds", type=float, default=20.0, help=f"streaming time (1-{MAX_SECONDS})")
    args = parser.parse_args(argv)
    if not 1 <= args.sessions <= MAX_SESSIONS or not 1 <= args.seconds <= MAX_SECONDS:
        parser.error(f"--sessions must be 1-{MAX_SESSIONS} and --seconds 1-{MAX_SECONDS}")
    return run(args.sessions, args.seconds)


if __name__ == "__main__":
    sys.exit(main())
