"""One relay session: the client socket, the upstream socket, two pumps between them, and an orderly end.

The pumps only move frames; what to send where is decided by `SessionState`, and every bound they respect is in
`relay.bounds`. Nothing here waits on a peer without a deadline: frames for the client go through a `ClientOutbox`,
and ending a session (by either side, a timer, a limit or a shutdown) takes at most `END_GRACE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import structlog
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed

from relay import protocol
from relay.bounds import (
    END_GRACE_SECONDS,
    USAGE_GRACE_SECONDS,
    ClientPace,
    PendingLedger,
    SessionBounds,
    payload_bytes,
)
from relay.client_outbox import ClientOutbox, close_reason
from relay.limits import SessionTimers
from relay.metrics import TO_CLIENT, TO_UPSTREAM, RelayMetrics
from relay.protocol import CloseCode
from relay.providers.openers import Opener, UpstreamSocket
from relay.session_state import Actions, SessionState
from relay.upstream import UpstreamFailure, lost_connection, open_upstream

_log = structlog.get_logger("relay.session")

# Wake a little after a timer's deadline rather than a little before it.
_TIMER_SLACK = 0.01


def _passes_through(code: int) -> bool:
    """Upstream close codes a client gets as they are: normal ends and application codes (3000-4999)."""
    return code in (CloseCode.NORMAL, CloseCode.GOING_AWAY) or 3000 <= code <= 4999


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
        bounds: SessionBounds,
        metrics: RelayMetrics,
        opener: Opener | None = None,
    ) -> None:
        self.session_id = session_id
        self.identity = identity
        self.state = state
        self._ws = websocket
        self._url = upstream_url
        self._api_key = api_key
        #: How this session's provider opens its upstream (None: the OpenAI socket at `upstream_url`).
        self._opener = opener
        self._connect_timeout = connect_timeout
        self._metrics = metrics
        #: The upstream socket once it is open; `_upstream` is set only after the held events went out.
        self._opened: UpstreamSocket | None = None
        self._upstream: UpstreamSocket | None = None
        self._bounds = bounds
        self._pending: deque[str] = deque()
        self._pending_ledger = PendingLedger(bounds.pending_events, bounds.pending_bytes)
        self._upstream_ready = asyncio.Event()
        self._pace = ClientPace(bounds.audio_ahead_seconds, 2 * bounds.max_message_bytes, time.monotonic)
        self._outbox = ClientOutbox(
            websocket, bounds, forward_latency=metrics.forward_to_client, on_overflow=self._client_too_slow
        )
        self._end: SessionEnd | None = None
        #: The client is gone; the upstream is read only until the responses in progress are done.
        self._client_left = False
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
        writer_task = asyncio.create_task(self._outbox.run(), name=f"{self.session_id}-writer")
        self._tasks = (client_task, upstream_task)
        try:
            await asyncio.wait({client_task, upstream_task, writer_task}, return_when=asyncio.FIRST_COMPLETED)
            if client_task.done() and not upstream_task.done() and self.state.responses_in_progress:
                # The client left mid-response: read the (cancelled) response's usage before closing upstream.
                self._client_left = True
                await asyncio.wait({upstream_task}, timeout=USAGE_GRACE_SECONDS)
        finally:
            for task in (client_task, upstream_task):
                task.cancel()
            for task in (client_task, upstream_task):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if writer_task.done() and self._end is None:
                self._set_end("client_closed", CloseCode.NORMAL, "client gone")
            end = self._end or SessionEnd("error", CloseCode.INTERNAL, "relay error")
            # A client that left must not keep a paid upstream session open, nor wait for its close handshake;
            # both sides are closed at once, each within END_GRACE_SECONDS.
            await asyncio.gather(
                self._close_upstream(), self._outbox.finish(end.close_code, end.reason, END_GRACE_SECONDS)
            )
            writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer_task
            duration = time.monotonic() - started
            self._metrics.sessions_active.dec()
            self._metrics.sessions_total.labels(end.outcome).inc()
            self._metrics.session_duration.observe(duration)
            self._log_summary(end, duration)
            self._done.set()
        return end

    def terminate(self, code: str, message: str, close_code: int, outcome: str) -> None:
        """End the session from outside (shutdown, limits): queue an error event, then close both sides.

        Returns at once; `wait_closed()` waits for the end, which takes at most END_GRACE_SECONDS.
        """
        self._end_with_error(code, message, close_code, outcome)

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
        self.terminate(protocol.LIMIT_EXCEEDED, expiry.message, CloseCode.POLICY, "limit")

    # -- client → upstream -----------------------------------------------------------------------------------

    async def _client_pump(self) -> None:
        receive = self._ws.receive
        forward_latency = self._metrics.forward_to_upstream
        pace = self._pace
        while True:
            wait = pace.wait_before()
            if wait > 0:
                # Far ahead of real time: read this client no faster than its pace (TCP holds the rest).
                await asyncio.sleep(wait)
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
                size = len(text)
            else:
                data = message.get("bytes") or b""
                actions = self.state.from_client_bytes(data)
                size = len(data)
            pace.received(size, actions.audio_from_client)
            for out in actions.to_client:
                self._outbox.put(out)
            # Frames held while the upstream connects are not the relay's overhead: only direct sends count.
            direct = self._upstream is not None
            for out in actions.to_upstream:
                await self._send_upstream(out)
            if actions.to_upstream and direct:
                forward_latency.observe(time.perf_counter() - received)
            if actions.more is not None:
                await self._carry_out(actions.more)
            if actions.close is not None:
                self._set_end("policy", *actions.close)
                return

    async def _carry_out(self, steps: Iterator[Actions]) -> None:
        # A large input is decoded and resampled a slice at a time, letting other sessions run between slices.
        for step in steps:
            await asyncio.sleep(0)
            for out in step.to_client:
                self._outbox.put(out)
            for out in step.to_upstream:
                await self._send_upstream(out)

    async def _send_upstream(self, text: str) -> None:
        upstream = self._upstream
        if upstream is None:
            # Held in order until the upstream is open; a client beyond the count or byte bound waits
            # (backpressure: its frames stay in its own TCP connection, not in the relay's memory).
            nbytes = payload_bytes(text)
            while not self._pending_ledger.has_room(nbytes) and self._upstream is None:
                await self._upstream_ready.wait()
            if self._upstream is None:
                self._pending.append(text)
                self._pending_ledger.add(nbytes)
                return
            upstream = self._upstream
        await upstream.send(text)

    # -- upstream → client -----------------------------------------------------------------------------------

    async def _upstream_pump(self) -> None:
        connect_started = time.perf_counter()
        try:
            if self._opener is not None:
                upstream = self._opened = await self._opener()
            else:
                upstream = self._opened = await open_upstream(
                    self._url, self._api_key, self._connect_timeout, self._bounds.heartbeat_seconds
                )
        except UpstreamFailure as failure:
            self.log.warning("upstream_connect_failed", reason=failure.reason, code=failure.code)
            self._end_with_error(failure.code, failure.message, failure.close_code, "upstream_failed")
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
            outbox = self._outbox
            async for message in upstream:
                received = time.perf_counter()
                if isinstance(message, bytes):
                    message = message.decode("utf-8", errors="replace")
                actions = self.state.from_upstream_text(message)
                to_client = actions.to_client
                last = len(to_client) - 1
                for index, out in enumerate(to_client):
                    if index < last:
                        outbox.put(out)
                    else:  # the frame whose hand-off ends this event's forwarding (and perhaps a first-audio wait)
                        outbox.put(
                            out,
                            audio_seconds=actions.audio_to_client,
                            received=received,
                            on_sent=self.state.first_audio_forwarded if actions.first_audio else None,
                        )
                for out in actions.to_upstream:
                    await upstream.send(out)
                if actions.close is not None:
                    self._set_end("limit", *actions.close)
                    return
                if self._client_left and not self.state.responses_in_progress:
                    return
            # Iteration ends only on a clean close from the upstream.
            self._upstream_closed(upstream.close_code, upstream.close_reason)
        except ConnectionClosed as closed:
            if closed.rcvd is not None and _passes_through(closed.rcvd.code):
                self._upstream_closed(closed.rcvd.code, closed.rcvd.reason)
                return
            lost = lost_connection(self._url)
            self.log.warning("upstream_lost", code=closed.rcvd.code if closed.rcvd else None)
            self._end_with_error(lost.code, lost.message, lost.close_code, "upstream_lost")

    def _upstream_closed(self, code: int | None, reason: str | None) -> None:
        if code is None or not _passes_through(code):
            code = CloseCode.NORMAL
        reason = reason or "upstream closed the session"
        if self._api_key:
            reason = reason.replace(self._api_key, "[redacted]")
        self._set_end("upstream_closed", code, close_reason(reason))

    # -- ending ----------------------------------------------------------------------------------------------

    def _end_with_error(self, code: str, message: str, close_code: int, outcome: str) -> None:
        if self._end is not None:
            return
        self._set_end(outcome, close_code, code)
        self._metrics.count_error(code)
        error_type = "server_error" if code.startswith("relay_upstream") else "invalid_request_error"
        self._outbox.put(protocol.dumps(protocol.error_event(code, message, error_type=error_type)))
        # Wake run(), which closes both sides.
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    def _client_too_slow(self, why: str) -> None:
        if self._end is None:
            self.log.warning("client_too_slow", problem=why)
        self._end_with_error(
            protocol.CLIENT_TOO_SLOW,
            f"This client fell too far behind: {why}. Check the network and connect again.",
            CloseCode.TRY_AGAIN_LATER,
            "client_slow",
        )

    def _set_end(self, outcome: str, close_code: int, reason: str) -> None:
        if self._end is None:
            self._end = SessionEnd(outcome, int(close_code), reason)

    async def _close_upstream(self) -> None:
        upstream = self._opened
        if upstream is None:
            return
        try:
            async with asyncio.timeout(END_GRACE_SECONDS):
                await upstream.close()
        except Exception:
            # An upstream that does not complete the closing handshake in time is dropped.
            upstream.transport.abort()

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
