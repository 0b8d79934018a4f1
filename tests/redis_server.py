"""A real `redis-server` (Debian package `redis-server`) for tests: a free loopback port, a temporary directory,
no persistence; it can be stopped and started again on the same port, and is stopped at teardown."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from tests.harness import free_port, stop_process


@dataclass
class RedisServer:
    """One redis-server process on 127.0.0.1:`port`."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed (Debian package `redis-server`)"
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                *(binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory)),
                *("--save", "", "--appendonly", "no", "--protected-mode", "yes"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        client = self.client()
        try:
            while True:
                assert self.process.poll() is None, (self.directory / "redis.log").read_text()
                try:
                    if await client.ping():
                        return
                except (RedisError, OSError):
                    pass
                assert time.monotonic() < deadline, "redis-server did not answer within 10 s"
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 10)
        self.process = None

    def client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.url, decode_responses=True, socket_timeout=2)


@pytest.fixture(name="redis_server")
async def redis_server_fixture(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A running redis-server for one test (import this into a test module to use `redis_server`)."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    await server.start()
    try:
        yield server
    finally:
        server.stop()
