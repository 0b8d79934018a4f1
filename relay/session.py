"""One relay session: the client socket, the upstream socket, two pumps between them, and an orderly end.

The pumps only move frames; what to send where is decided by `SessionState`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass

import structlog
from starlette.websockets import WebSocket, WebSocketState
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from relay import protocol
from relay.limits import SessionTimers
from relay.metrics import TO_CLIENT, TO_UPSTREAM, RelayMetrics
from relay.protocol import CloseCode
from relay.session_state import SessionState
from relay.upstream import UpstreamFailure, lost_connection, open_upstream

_log = structlog.get_logger("relay.session")

# Close codes a server may send as they are (1005/1006/1015 must never be sent on the wire).
_SENDABLE_CLOSE_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
_UPSTREAM_CLOSE_TIMEOUT = 2.0
# Wake a little after a timer's deadline rather than a little before it.
_TIMER_SLACK = 0.01


@dataclass
class SessionEnd:
    """How a session ended: a bounded outcome label, the close code sent to the client, and why."""

    outcome: str
    close_code: int
    reason: str


class RelaySession:
    """Relays one client WebSocket (already accepted) to one upstream socket until either side ends."""

    def __init__(
        self,
        websocket: WebSocket,
        state: SessionState,
        *,
        session_id: str,
        identity: str,
        upstream_url: str,
        api_key: str,
        connect_timeout: float,
        pending_limit: int,
        metrics: RelayMetrics,
    ) -> None:
        self.session_id = session_id
        self.identity = identity
        self.state = state
        self._ws = websocket
        self._url = upstream_url
        self._api_key = api_key
        self._connect_timeout = connect_timeout
        self._metrics = metrics
        #: The upstream socket once it is open; `_upstream` is set only after the held events went out.
        self._opened: ClientConnection | None = None
        self._upstream: ClientConnection | None = None
        self._pending: deque[str] = deque()
        self._pending_limit = pending_limit
        self._upstream_ready = asyncio.Event()
        self._end: SessionEnd | None = None
        self._done = asyncio.Event()
        #: When the client last sent a frame (time.monotonic), for the idle timer.
        self.last_client_activity = time.monotonic()
        self._tasks: tuple[asyncio.Task[None], ...] = ()
        self.log = _log.bind(session_id=session_id, identity=identity)
        state.identity_metrics = metrics.for_identity(identity)

    # -- public ----------------------------------------------------------------------------------------------

    async def run(self) -> SessionEnd:
        """Relay until one side ends, then close the other; return how the session ended."""
        # Bound in this task's context, so every line logged while the session runs (by the pump tasks created
        # below, and by libraries called from them) carries the session and identity.
        with structlog.contextvars.bound_contextvars(session_id=self.session_id, identity=self.identity):
            return await self._run()

    async def _run(self) -> SessionEnd:
        started = time.monotonic()
        self._metrics.sessions_active.inc()
        self.state.identity_metrics.session_opened()
        client_task = asyncio.create_task(self._client_pump(), name=f"{self.session_id}-client")
        upstream_task = asyncio.create_task(self._upstream_pump(), name=f"{self.session_id}-upstream")
        self._tasks = (client_task, upstream_task)
        try:
            await asyncio.wait({client_task, upstream_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (client_task, upstream_task):
                task.cancel()
            for task in (client_task, upstream_task):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            end = self._end or SessionEnd("error", CloseCode.INTERNAL, "relay error")
            # A client that left must not keep a paid upstream session open, nor wait for its close handshake.
            await asyncio.gather(self._close_upstream(), self._close_client(end.close_code, end.reason))
            duration = time.monotonic() - started
            self._metrics.sessions_active.dec()
            self._metrics.sessions_total.labels(end.outcome).inc()
            self._metrics.session_duration.observe(duration)
            self._log_summary(end, duration)
            self._done.set()
        return end

    async def terminate(self, code: str, message: str, close_code: int, outcome: str) -> None:
        """End the session from outside (shutdown, limits): send an error event, then close both sides."""
        await self._end_with_error(code, message, close_code, outcome)

    async def enforce_timers(self, timers: SessionTimers) -> None:
        """End the session when its length or idle limit runs out: relay_limit_exceeded, then close 1008."""
        while True:
            now = time.monotonic()
            expiry = timers.check(now, self.last_client_activity)
            if expiry is not None:
                break
            # A client event meanwhile only moves the idle deadline later, so this never wakes too late.
            await asyncio.sleep(timers.seconds_to_next_check(now, self.last_client_activity) + _TIMER_SLACK)
        self.log.info("session_limit_reached", limit=expiry.setting)
        await self.terminate(protocol.LIMIT_EXCEEDED, expiry.message, CloseCode.POLICY, "limit")

    # -- client → upstream -----------------------------------------------------------------------------------

    async def _client_pump(self) -> None:
        receive = self._ws.receive
        forward_latency = self._metrics.forward_to_upstream
        while True:
            message = await receive()
            self.last_client_activity = time.monotonic()
            kind = message["type"]
            if kind == "websocket.disconnect":
                self._set_end("client_closed", CloseCode.NORMAL, "client closed")
                # What the resampler still holds belongs to this session's audio.
                for flushed in self.state.finish():
                    await self._send_upstream(flushed)
                return
            received = time.perf_counter()
            text: str | None = message.get("text")
            if text is not None:
                actions = self.state.from_client_text(text)
            else:
                actions = self.state.from_client_bytes(message.get("bytes") or b"")
            for out in actions.to_client:
                await self._send_client(out)
            # Frames held while the upstream connects are not the relay's overhead: only direct sends count.
            direct = self._upstream is not None
            for out in actions.to_upstream:
                await self._send_upstream(out)
            if actions.to_upstream and direct:
                forward_latency.observe(time.perf_counter() - received)
            if actions.close is not None:
                self._set_end("policy", *actions.close)
                return

    async def _send_upstream(self, text: str) -> None:
        upstream = self._upstream
        if upstream is None:
            # Held in order until the upstream is open; a client that floods meanwhile waits (backpressure).
            while len(self._pending) >= self._pending_limit and self._upstream is None:
                await self._upstream_ready.wait()
            if self._upstream is None:
                self._pending.append(text)
                return
            upstream = self._upstream
        await upstream.send(text)

    # -- upstream → client -----------------------------------------------------------------------------------

    async def _upstream_pump(self) -> None:
        connect_started = time.perf_counter()
        try:
            upstream = self._opened = await open_upstream(self._url, self._api_key, self._connect_timeout)
        except UpstreamFailure as failure:
            self.log.warning("upstream_connect_failed", reason=failure.reason, code=failure.code)
            await self._end_with_error(failure.code, failure.message, failure.close_code, "upstream_failed")
            return
        self._metrics.upstream_connect.observe(time.perf_counter() - connect_started)
        self.log.info("upstream_connected", seconds=round(time.perf_counter() - connect_started, 4))
        try:
            for text in self.state.opening_events():
                await upstream.send(text)
            while self._pending:
                await upstream.send(self._pending.popleft())
            # No await between the last pending frame and this: the client pump now sends directly, in order.
            self._upstream = upstream
            self._upstream_ready.set()
            forward_latency = self._metrics.forward_to_client
            async for message in upstream:
                received = time.perf_counter()
                if isinstance(message, bytes):
                    message = message.decode("utf-8", errors="replace")
                actions = self.state.from_upstream_text(message)
                sent = True
                for out in actions.to_client:
                    sent = await self._send_client(out) and sent
                if actions.first_audio and sent:
                    self.state.first_audio_forwarded()
                for out in actions.to_upstream:
                    await upstream.send(out)
                if actions.close is not None:
                    self._set_end("limit", *actions.close)
                    return
                if actions.to_client:  # a held or dropped frame forwards nothing
                    forward_latency.observe(time.perf_counter() - received)
            # Iteration ends only on a clean close from the upstream.
            self._upstream_closed_cleanly(upstream)
        except ConnectionClosedOK:
            self._upstream_closed_cleanly(upstream)
        except ConnectionClosed:
            lost = lost_connection(self._url)
            self.log.warning("upstream_lost", code=upstream.close_code)
            await self._end_with_error(lost.code, lost.message, lost.close_code, "upstream_lost")

    def _upstream_closed_cleanly(self, upstream: ClientConnection) -> None:
        code = upstream.close_code or CloseCode.NORMAL
        if code not in _SENDABLE_CLOSE_CODES and not 3000 <= code <= 4999:
            code = CloseCode.NORMAL
        self._set_end("upstream_closed", code, (upstream.close_reason or "upstream closed the session")[:120])

    # -- ending ----------------------------------------------------------------------------------------------

    async def _end_with_error(self, code: str, message: str, close_code: int, outcome: str) -> None:
        if self._end is not None:
            return
        self._set_end(outcome, close_code, code)
        self._metrics.count_error(code)
        error_type = "server_error" if code.startswith("relay_upstream") else "invalid_request_error"
        await self._send_client(protocol.dumps(protocol.error_event(code, message, error_type=error_type)))
        # Wake run(), which closes both sides.
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    def _set_end(self, outcome: str, close_code: int, reason: str) -> None:
        if self._end is None:
            self._end = SessionEnd(outcome, int(close_code), reason)

    async def _send_client(self, text: str) -> bool:
        """Hand `text` to the client socket; False if the client is gone."""
        if self._ws.application_state != WebSocketState.CONNECTED:
            return False
        try:
            await self._ws.send_text(text)
        except Exception:  # the client went away; its pump sees the disconnect
            self._set_end("client_closed", CloseCode.NORMAL, "client gone")
            return False
        return True

    async def _close_upstream(self) -> None:
        upstream = self._opened
        if upstream is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_UPSTREAM_CLOSE_TIMEOUT):
                await upstream.close()

    async def _close_client(self, code: int, reason: str) -> None:
        if self._ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self._ws.close(code=code, reason=reason[:120])

    def _log_summary(self, end: SessionEnd, duration: float) -> None:
        waits = sorted(self.state.first_audio_waits)
        self.log.info(
            "session_closed",
            outcome=end.outcome,
            close_code=end.close_code,
            close_reason=end.reason,
            duration_s=round(duration, 3),
            audio_in_s=round(self.state.audio_seconds[TO_UPSTREAM], 3),
            audio_out_s=round(self.state.audio_seconds[TO_CLIENT], 3),
            turns=self.state.turns,
            first_audio_p50_ms=round(waits[len(waits) // 2] * 1000, 1) if waits else None,
            tokens=self.state.tokens_used,
        )

    async def wait_closed(self) -> None:
        """Wait until `run()` has finished closing both sides."""
        await self._done.wait()
