"""What the bench's own servers share: their command line, the key from the environment, uvloop, a clean stop.

Each reference relay and the echo upstream runs as its own process (`python -m relay.bench.NAME --port P
[--upstream URL]`), started, pinned and stopped by `bench relay`. The key comes from OPENAI_API_KEY, never from the
command line, where a process list would show it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

from relay.cli_args import StrictParser

READY_PATH = "/readyz"
T = TypeVar("T")


def server_arguments(prog: str, description: str, *, upstream: bool) -> argparse.Namespace:
    """`--port` (and `--upstream URL` for a relay), loopback only."""
    parser = StrictParser(prog=prog, description=description)
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    if upstream:
        parser.add_argument("--upstream", required=True, help="ws:// URL of the upstream")
    return parser.parse_args()


def api_key() -> str:
    """The key to send upstream (or, for the echo upstream, to require)."""
    key = os.environ.get("OPENAI_API_KEY", "")
    if not key:
        raise SystemExit("OPENAI_API_KEY must be set")
    return key


def run_on_uvloop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop, as every bench server and the load generator do."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def until_signalled() -> None:
    """Return on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_aiohttp(app: web.Application, port: int) -> None:
    """Serve an aiohttp application on 127.0.0.1:`port` until signalled."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    try:
        await until_signalled()
    finally:
        await runner.cleanup()


def ready_route() -> tuple[str, Callable[[web.Request], Awaitable[web.Response]]]:
    """GET /readyz → 200, so that cold start is measured alike for every system."""

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ready\n")

    return READY_PATH, ready
