"""Twenty misbehaving clients (never reading, flooding, giant frames) beside five good ones, against the relay as a
process: the good ones lose no frame and keep p99 forward latency under 20 ms; the relay's memory stays bounded.

The good clients and the echo upstream run in this process; the misbehaving ones in another
(`tests/misbehaving_clients.py`). Forward latency is measured on one clock, from a good client's send to the
upstream's receipt of that frame.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from tests.harness import REPO
from tests.test_access import next_event, opened
from tests.test_hostile_clients import _rss_bytes

pytestmark = pytest.mark.slow

SECONDS = 10
GOOD = 5
FRAME = base64.b64encode(b"\1\0" * 480).decode()  # 20 ms at 24 kHz


async def test_good_clients_keep_their_latency_beside_twenty_misbehaving_ones(start_relay: Any) -> None:
    arrivals: dict[str, float] = {}
    sessions = 0

    async def echo(ws: ServerConnection) -> None:
        nonlocal sessions
        sessions += 1
        await ws.send(
            json.dumps({"type": "session.created", "event_id": "e", "session": {"type": "realtime"}})
        )
        async for message in ws:
            event = json.loads(message)
            if event.get("type") != "input_audio_buffer.append":
                continue
            if str(event.get("event_id", "")).startswith("good-"):
                arrivals[event["event_id"]] = time.perf_counter()
            await ws.send(
                json.dumps(
                    {
                        "type": "response.output_audio.delta",
                        "event_id": "e",
                        "response_id": "r",
                        "item_id": "i",
                        "output_index": 0,
                        "content_index": 0,
                        "delta": event.get("audio", ""),
                    }
                )
            )

    upstream = await serve(echo, "127.0.0.1", 0, max_size=None, compression=None)
    port = upstream.sockets[0].getsockname()[1]
    relay = await start_relay(
        upstream_url=f"ws://127.0.0.1:{port}/v1/realtime",
        instructions="",
        voice="",
        max_sessions="100",
        max_sessions_per_identity="100",
    )
    sent: dict[str, float] = {}
    rss: list[int] = [_rss_bytes(relay.inner.process.pid)]
    hostile = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.misbehaving_clients",
        relay.inner.ws_url,
        str(SECONDS),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )

    async def good(index: int) -> int:
        received = 0
        async with opened(relay.ws_url) as ws:
            await next_event(ws)

            async def read() -> None:
                nonlocal received
                async for _ in ws:
                    received += 1

            reader = asyncio.create_task(read())
            await asyncio.sleep(1)  # let the misbehaving ones get going
            start = time.perf_counter()
            for seq in range((SECONDS - 2) * 50):
                event_id = f"good-{index}-{seq}"
                sent[event_id] = time.perf_counter()
                await ws.send(
                    json.dumps({"type": "input_audio_buffer.append", "event_id": event_id, "audio": FRAME})
                )
                await asyncio.sleep(max(0.0, start + (seq + 1) * 0.02 - time.perf_counter()))
            await asyncio.sleep(0.5)
            reader.cancel()
        return received

    async def watch_memory() -> None:
        while hostile.returncode is None:
            rss.append(_rss_bytes(relay.inner.process.pid))
            await asyncio.sleep(0.25)

    watcher = asyncio.create_task(watch_memory())
    echoed = await asyncio.gather(*(good(i) for i in range(GOOD)))
    out, _ = await hostile.communicate()
    watcher.cancel()
    upstream.close()
    did = json.loads(out.decode().strip().splitlines()[-1])

    latencies = sorted((arrivals[k] - sent[k]) * 1000 for k in sent if k in arrivals)
    lost = [k for k in sent if k not in arrivals]
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    growth = (max(rss) - rss[0]) / 2**20
    print(
        f"\n[{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores] "
        f"{GOOD} good clients, {len(sent)} frames: forward latency p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
        f"max {latencies[-1]:.2f} ms; lost {len(lost)}; echoes back {sum(echoed)}; "
        f"relay RSS growth {growth:.1f} MiB (max {max(rss) / 2**20:.1f} MiB); misbehaving: {did}"
    )
    assert not lost, lost[:5]
    assert sum(echoed) >= len(sent)
    assert p99 < 20, latencies[-20:]
    # The bound: per misbehaving client one message being read (4 MiB) and a full client buffer (8 MiB).
    assert growth < 20 * (4 + 8), growth
    assert did["giant_frames"] > 0 and did["flood_frames"] > 0
