"""Runs one session's server tool calls off the forwarding path: a task per call, a bound on how many run at
once, a timeout, and the output sent upstream whatever the tool did. The pumps never wait for a tool."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from relay.tools.calls import CallRequest, ToolCalls
from relay.tools.hub import ToolHub, ToolOutcome
from relay.tools.metrics import ToolMetrics
from relay.tools.output import error_output

_log = structlog.get_logger("relay.tools")


@dataclass(frozen=True)
class RunnerLimits:
    """How long a call may take, how many of a session's calls run at once, and when the model says it is looking."""

    timeout: float
    concurrency: int
    #: Seconds after which the model is asked to say it is still looking (0: never).
    waiting_after: float


class ToolRunner:
    """A session's running server calls. `start()` returns at once; `close()` cancels what still runs."""

    def __init__(
        self,
        hub: ToolHub,
        calls: ToolCalls,
        limits: RunnerLimits,
        metrics: ToolMetrics,
        *,
        debug: bool = False,
    ) -> None:
        self._hub = hub
        self._calls = calls
        self._limits = limits
        self._metrics = metrics
        self._send: Callable[[str], Awaitable[None]] | None = None
        self._debug = debug
        self._slots = asyncio.Semaphore(limits.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self, send_upstream: Callable[[str], Awaitable[None]]) -> None:
        """Where outputs go: the session's upstream socket."""
        self._send = send_upstream

    def start(self, requests: list[CallRequest]) -> None:
        """Run each call in its own task."""
        for request in requests:
            task = asyncio.create_task(self._run(request), name=f"tool-{request.name}-{request.call_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @property
    def running(self) -> int:
        """Calls started and not yet answered."""
        return len(self._tasks)

    async def _run(self, request: CallRequest) -> None:
        started = time.perf_counter()
        waiting = asyncio.create_task(self._say_waiting(request)) if self._limits.waiting_after > 0 else None
        outcome = "cancelled"
        try:
            result = await self._execute(request)
            outcome = result.status
            await self._deliver(request, result.output)
        finally:
            if waiting is not None:
                waiting.cancel()
            seconds = time.perf_counter() - started
            self._metrics.observe(request.name, outcome, seconds)
            fields = {"arguments": request.arguments} if self._debug else {}
            _log.info(
                "tool_call",
                tool=request.name,
                call_id=request.call_id,
                outcome=outcome,
                seconds=round(seconds, 3),
                **fields,
            )

    async def _execute(self, request: CallRequest) -> ToolOutcome:
        async with self._slots:
            try:
                async with asyncio.timeout(self._limits.timeout):
                    return await self._hub.call(request.name, request.arguments)
            except TimeoutError:
                return ToolOutcome(
                    "timeout",
                    error_output(
                        f"The {request.name} tool did not answer within {self._limits.timeout:g} seconds; "
                        "tell the user it is not available right now."
                    ),
                )
            except Exception as exc:  # whatever a tool does costs that call only, never the session
                return ToolOutcome(
                    "error", error_output(f"The {request.name} tool failed ({type(exc).__name__}).")
                )

    async def _deliver(self, request: CallRequest, output: str) -> None:
        await self._send_all(self._calls.finished(request.call_id, output))

    async def _say_waiting(self, request: CallRequest) -> None:
        await asyncio.sleep(self._limits.waiting_after)
        await self._send_all(self._calls.still_running(request.call_id))

    async def _send_all(self, frames: list[str]) -> None:
        if self._send is not None:
            for frame in frames:
                await self._send(frame)

    async def close(self) -> None:
        """Cancel the calls still running (the session is over)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
