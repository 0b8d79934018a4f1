"""The parent of `--workers N`: binds the ports, starts N relay processes, serves their merged /metrics, drains.

All workers accept from the one public socket the parent bound and they inherited (not SO_REUSEPORT): the port is
checked once with the usual one-line error, no other process can bind beside them and take a share of the
connections, a worker that dies leaves its waiting connections to the others instead of resetting them, and the
kernel hands a new connection to a worker that is waiting in accept, which is the least busy one.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import tempfile
from multiprocessing.process import BaseProcess
from pathlib import Path

import structlog
import uvicorn
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay.bounds import END_GRACE_SECONDS
from relay.config import Config
from relay.connection_guard import metrics_http_protocol
from relay.listeners import Sockets
from relay.workers.fanin import fetch_exposition, merge, render
from relay.workers.worker import WorkerRole, run_worker

_log = structlog.get_logger("relay.workers")

#: A worker that exits on its own is started again after this long (it may fail at once again).
RESTART_DELAY_SECONDS = 1.0
#: Beyond the drain and each session's closing grace: uvicorn's own graceful shutdown and process exit.
STOP_MARGIN_SECONDS = 4.0


def stop_deadline(config: Config) -> float:
    """Seconds from SIGTERM until every worker must have exited; workers still there are killed."""
    return config.drain_seconds + END_GRACE_SECONDS + STOP_MARGIN_SECONDS


class Supervisor:
    """Starts, restarts and stops the workers; merges their metrics."""

    def __init__(self, config: Config, sockets: Sockets, count: int) -> None:
        self._config = config
        self._sockets = sockets
        self._count = count
        self._dir = tempfile.mkdtemp(
            prefix="realtime-relay-"
        )  # mode 0700: only this user reaches the sockets
        self._processes: list[BaseProcess | None] = [None] * count
        self._context = multiprocessing.get_context("spawn")
        self._stopping = asyncio.Event()
        self._signals = 0
        self.registry = CollectorRegistry()
        Gauge("relay_workers", "Worker processes configured (RELAY_WORKERS).", registry=self.registry).set(
            count
        )
        running = Gauge("relay_workers_running", "Worker processes running now.", registry=self.registry)
        running.set_function(lambda: sum(1 for p in self._processes if p is not None and p.is_alive()))
        self._restarts = Counter(
            "relay_worker_restarts_total",
            "Workers that exited on their own and were started again.",
            registry=self.registry,
        )
        self._scrape_errors = Counter(
            "relay_worker_scrape_errors_total",
            "Worker expositions that could not be fetched for a scrape, by worker.",
            ["worker"],
            registry=self.registry,
        )
        for index in range(count):
            self._scrape_errors.labels(str(index))

    def metrics_path(self, index: int) -> str:
        """The unix socket worker `index` serves its /metrics on."""
        return str(Path(self._dir) / f"worker-{index}.sock")

    def _start(self, index: int) -> None:
        role = WorkerRole(index, self.metrics_path(index), os.getpid())
        process = self._context.Process(
            target=run_worker, args=(self._config, role, self._sockets.public), name=f"relay-worker-{index}"
        )
        process.start()
        self._processes[index] = process
        _log.info("worker_started", worker=index, pid=process.pid)

    async def exposition(self, request: Request) -> Response:
        """The parent's own metrics, then every worker's, labelled `worker`."""
        indexes = range(self._count)
        results = await asyncio.gather(
            *(fetch_exposition(self.metrics_path(i)) for i in indexes), return_exceptions=True
        )
        texts: dict[str, str] = {}
        for index, result in zip(indexes, results, strict=True):
            if isinstance(result, BaseException):
                self._scrape_errors.labels(str(index)).inc()
                continue
            texts[str(index)] = result
        body = generate_latest(self.registry) + render(merge(texts))
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals == 1:
            _log.info("shutdown_requested", signal=signum, workers=self._count)
            self._stopping.set()
        # A second signal is passed on too: each worker's own second signal stops it without waiting.
        self._signal_workers(signal.SIGTERM)

    def _signal_workers(self, signum: int) -> None:
        for process in self._processes:
            if process is not None and process.pid is not None and process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    async def _watch(self) -> None:
        """Start again any worker that exits while the relay is not stopping."""
        while not self._stopping.is_set():
            for index, process in enumerate(self._processes):
                if process is not None and not process.is_alive() and not self._stopping.is_set():
                    _log.warning("worker_exited", worker=index, pid=process.pid, exit_code=process.exitcode)
                    process.close()
                    self._processes[index] = None
                    self._restarts.inc()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESTART_DELAY_SECONDS):
                    await self._stopping.wait()
            if not self._stopping.is_set():
                for index, process in enumerate(self._processes):
                    if process is None:
                        self._start(index)

    async def _stop_workers(self) -> None:
        """Wait for every worker to drain and exit; kill those still there at the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + stop_deadline(self._config)
        while True:  # polled: process exits are not awaitable without a thread per worker
            alive = any(p is not None and p.is_alive() for p in self._processes)
            if not alive or loop.time() >= deadline:
                break
            await asyncio.sleep(0.1)
        for index, process in enumerate(self._processes):
            if process is None:
                continue
            if process.is_alive():
                _log.warning(
                    "worker_killed", worker=index, pid=process.pid, after_s=stop_deadline(self._config)
                )
                process.kill()
            await asyncio.to_thread(process.join, 5)
            _log.info("worker_stopped", worker=index, pid=process.pid, exit_code=process.exitcode)

    async def run(self) -> None:
        """Run until SIGTERM or SIGINT, then drain every worker and return."""
        from relay.cli import _CompanionServer

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        metrics_server = _CompanionServer(
            uvicorn.Config(
                Starlette(routes=[Route("/metrics", self.exposition)]),
                http=metrics_http_protocol(self._config),
                log_config=None,
                lifespan="off",
            )
        )
        metrics_task = asyncio.create_task(metrics_server.serve([self._sockets.metrics]))
        try:
            for index in range(self._count):
                self._start(index)
            await self._watch()
            await self._stop_workers()
        finally:
            metrics_server.should_exit = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await metrics_task
            shutil.rmtree(self._dir, ignore_errors=True)


async def supervise(config: Config, sockets: Sockets, count: int) -> None:
    """Run `count` workers behind `sockets` until told to stop."""
    await Supervisor(config, sockets, count).run()
