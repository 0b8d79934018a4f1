"""Misbehaving clients, run as their own process beside a load test: some never read, some flood audio, some send
giant frames. Each reconnects whenever the relay closes it, until the time is up; then it prints what it did.

    python -m tests.misbehaving_clients ws://127.0.0.1:8080/v1/realtime 10 --stuck 7 --flood 7 --giant 6
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import time
from collections import Counter

import websockets

from tests.stuck_client import StuckClient

_TWENTY_MS = json.dumps(
    {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\1\0" * 480).decode()}
)
_GIANT_TEXT = json.dumps({"type": "input_audio_buffer.append", "audio": "AAAA" * (4 * 1024 * 1024 // 4 - 64)})
_GIANT_BINARY = b"\0\1" * (2 * 1024 * 1024 - 16)


async def _stuck(url: str, until: float, done: Counter[str]) -> None:
    while time.monotonic() < until:
        client = StuckClient(url)
        try:
            await client.connect()
            while time.monotonic() < until:
                client.send_text(_TWENTY_MS)
                await asyncio.sleep(0.02)
        except (OSError, ConnectionError):
            done["stuck_reconnects"] += 1
            await asyncio.sleep(0.2)
        finally:
            client.close()


async def _sender(url: str, until: float, done: Counter[str], frames: list[str | bytes], kind: str) -> None:
    while time.monotonic() < until:
        with contextlib.suppress(OSError, websockets.WebSocketException):
            async with websockets.connect(url + "?input_rate=8000", max_size=None, max_queue=4) as ws:
                while time.monotonic() < until:
                    for frame in frames:
                        async with asyncio.timeout(max(0.1, until - time.monotonic())):
                            await ws.send(frame)
                        done[kind] += 1
        done[f"{kind}_reconnects"] += 1
        await asyncio.sleep(0.1)


async def main(url: str, seconds: float, stuck: int, flood: int, giant: int) -> Counter[str]:
    """Run the misbehaving clients for `seconds`; return counts of what they sent."""
    until = time.monotonic() + seconds
    done: Counter[str] = Counter()
    tasks = [_stuck(url, until, done) for _ in range(stuck)]
    tasks += [_sender(url, until, done, [_TWENTY_MS], "flood_frames") for _ in range(flood)]
    tasks += [_sender(url, until, done, [_GIANT_TEXT, _GIANT_BINARY], "giant_frames") for _ in range(giant)]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds + 5):
            await asyncio.gather(*tasks, return_exceptions=True)
    return done


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--stuck", type=int, default=7)
    parser.add_argument("--flood", type=int, default=7)
    parser.add_argument("--giant", type=int, default=6)
    args = parser.parse_args()
    print(
        json.dumps(asyncio.run(main(args.url, args.seconds, args.stuck, args.flood, args.giant))), flush=True
    )
