"""One relay session: the client's connection, the upstream's, the frames between them, and an orderly end.

Both connections are `FrameLink`s (relay.wire): each calls back here from its transport's `data_received` with a
whole message, the message is judged by `SessionState`, and the decision is written to the other side in the same
call, with no queue and no task in between. A frame that needs no change is forwarded as the bytes it came in:
a client's frames are masked, as frames to an upstream must be, and an upstream's are unmasked, as frames to a
client must be (docs/architecture.md, "The data path"). Every bound respected here is in `relay.bounds`; nothing
waits on a peer without a deadline, and ending a session (by either side, a timer, a limit or a shutdown) takes at
most `END_GRACE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, cast

import structlog
from starlette.websockets import WebSocket

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
from relay.client_socket import taker
from relay.conversations.recording import SessionRecorder
from relay.conversations.renewal import RenewalFailed, UpstreamRenewal
from relay.limits import SessionTimers
from relay.message_link import MessageLink, MessageSocket
from relay.metrics import TO_CLIENT, TO_UPSTREAM, RelayMetrics
from relay.protocol import CloseCode
from relay.session_state import Actions, SessionState
from relay.tools.runner import ToolRunner
from relay.upstream import UPSTREAM_MAX_MESSAGE_BYTES, UpstreamFailure, lost_connection, open_upstream
from relay.wire.awaitable import AwaitableLink
from relay.wire.dial import Dialled, take_over
from relay.wire.frames import OP_TEXT
from relay.wire.link import ABNORMAL_CLOSURE, NO_STATUS, FrameLink

_log = structlog.get_logger("relay.session")

# Wake a little after a timer's deadline rather than a little before it.
_TIMER_SLACK = 0.01
#: A client message over this many bytes ends the session with 1009 instead of being skipped with an error.
_MIN_HARD_LIMIT = 16 * 1024 * 1024
# Why the client's connection is not being read (see `_hold`).
_HOLD_PACE = "pace"
_HOLD_PENDING = "pending"
_HOLD_SLICING = "slicing"


#: How a session opens its upstream: a connection for frames to be forwarded as they come, or a translating socket.
Opener = Callable[[], Awaitable[Dialled | MessageSocket]]


class UpstreamLink(Protocol):
    """What the session uses of its upstream link (a `FrameLink`, or a `MessageLink` for a translating socket)."""

    close_sent: int | None

    def send_text(self, text: str) -> None: ...

    def write_raw(self, frame: bytes | memoryview) -> None: ...

    def close(self, code: int, reason: str = "") -> None: ...

    async def wait_closed(self) -> None: ...

    @property
    def lost(self) -> bool: ...

    def abort(self) -> None: ...


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
    """Relays one client WebSocket (its upgrade admitted, not yet accepted) to one upstream socket until either
    side ends."""

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
        subprotocol: str | None = None,
        opener: Opener | None = None,
        tool_runner: ToolRunner | None = None,
    ) -> None:
        self.session_id = session_id
        self.identity = identity
        self.state = state
        self._ws = websocket
        self._subprotocol = subprotocol
        #: How this session opens its upstream when it is not the OpenAI socket at `upstream_url`.
        self._opener = opener
        self._url = upstream_url
        self._api_key = api_key
        #: How this session's provider opens its upstream (None: the OpenAI socket at `upstream_url`).
        self._opener = opener
        self._connect_timeout = connect_timeout
        self._metrics = metrics
        self._bounds = bounds
        self._client: FrameLink | None = None
        self._outbox: ClientOutbox | None = None
        #: The upstream link once it is open; `_upstream` is set only after the held events went out.
        self._opened: UpstreamLink | None = None
        self._upstream: UpstreamLink | None = None
        #: The upstream takes frames (a `FrameLink`): a client's unchanged frame is forwarded as it came.
        self._frames_upstream = False
        self._connecting: asyncio.Task[None] | None = None
        self._slicing: asyncio.Task[None] | None = None
        self._pending: deque[str] = deque()
        self._pending_ledger = PendingLedger(bounds.pending_events, bounds.pending_bytes)
        self._holds: set[str] = set()
        self._pace = ClientPace(bounds.audio_ahead_seconds, 2 * bounds.max_message_bytes, time.monotonic)
        self._end: SessionEnd | None = None
        self._ended = asyncio.Event()
        #: The client is gone; the upstream is read only until the responses in progress are done.
        self._client_left = False
        self._usage_settled = asyncio.Event()
        self._done = asyncio.Event()
        #: When the client last sent a frame (time.monotonic), for the idle timer.
        self.last_client_activity = time.monotonic()
        self.log = _log.bind(session_id=session_id, identity=identity)
        #: Roll-over to a new upstream (relay.conversations.renewal); None: the session ends with its upstream.
        self.renewal: UpstreamRenewal | None = None
        #: Audio recording of the session (relay.conversations.recording), when the operator turned it on.
        self.recorder: SessionRecorder | None = None
        #: More fields for the session_closed line (the conversation's cost).
        self.summary_extra: Callable[[], dict[str, Any]] = dict
        self._renewal_watch: asyncio.Task[None] | None = None
        state.identity_metrics = metrics.for_identity(identity)
        # Bound once: the per-frame path reads them as locals.
        self._forward_to_upstream = metrics.forward_latency.labels(TO_UPSTREAM)
        self._forward_to_client = metrics.forward_latency.labels(TO_CLIENT)
        self._tool_runner = tool_runner
        if tool_runner is not None:
            tool_runner.attach(self._send_tool_frame)

    # -- public ----------------------------------------------------------------------------------------------

    async def run(self) -> SessionEnd:
        """Accept the client, relay until one side ends, then close the other; return how the session ended."""
        # Bound in this task's context, so every line logged while the session runs (and by the upstream
        # connection task it starts) carries the session and identity.
        with structlog.contextvars.bound_contextvars(session_id=self.session_id, identity=self.identity):
            return await self._run()

    async def _run(self) -> SessionEnd:
        started = time.monotonic()
        self._metrics.sessions_active.inc()
        self.state.identity_metrics.session_opened()
        try:
            self._accept()
            self._connecting = asyncio.create_task(
                self._connect_upstream(), name=f"{self.session_id}-upstream"
            )
            await self._ended.wait()
            if self._client_left and self._upstream is not None and self.state.responses_in_progress:
                # The client left mid-response: read the (cancelled) response's usage before closing upstream.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(USAGE_GRACE_SECONDS):
                        await self._usage_settled.wait()
        finally:
            for task in (self._connecting, self._slicing, self._renewal_watch):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            if self._tool_runner is not None:
                await self._tool_runner.close()
            end = self._end or SessionEnd("error", CloseCode.INTERNAL, "relay error")
            # A client that left must not keep a paid upstream session open, nor wait for its close handshake;
            # both sides are closed at once, each within END_GRACE_SECONDS.
            await asyncio.gather(self._close_upstream(), self._close_client(end))
            duration = time.monotonic() - started
            self._metrics.sessions_active.dec()
            self._metrics.sessions_total.labels(end.outcome).inc()
            self._metrics.session_duration.observe(duration)
            self._log_summary(end, duration)
            self._done.set()
        return end

    def _accept(self) -> None:
        take = taker(self._ws)
        if take is None:
            raise RuntimeError(
                "the server does not offer the relay's connection take-over (relay.client_socket)"
            )
        transport, attach = take(self._subprotocol)
        bounds = self._bounds
        self._client = FrameLink(
            transport,
            self,
            masking=False,
            max_message=bounds.max_message_bytes,
            hard_limit=max(4 * bounds.max_message_bytes, _MIN_HARD_LIMIT),
            heartbeat=bounds.heartbeat_seconds,
            close_grace=END_GRACE_SECONDS,
        )
        self._outbox = ClientOutbox(self._client, bounds, on_overflow=self._client_too_slow)
        attach(self._client)

    def terminate(self, code: str, message: str, close_code: int, outcome: str) -> None:
        """End the session from outside (shutdown, limits): send an error event, then close both sides.

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

    # -- what the links report (LinkOwner) -------------------------------------------------------------------

    def on_message(
        self, link: FrameLink | MessageLink, opcode: int, payload: bytes | memoryview, raw: memoryview | None
    ) -> bool:
        """A whole message from either side; False holds the client's link (the upstream's is never held)."""
        if link is self._client:
            # Once the session is ending, what a client still sends is not forwarded.
            return True if self._end is not None else self._from_client(opcode, payload, raw)
        if link is self._opened and (self._end is None or self._client_left):
            # (A client that left still pays for the response it heard.)
            self._from_upstream(opcode, payload, raw)
        return True

    def on_oversized(self, link: FrameLink | MessageLink, opcode: int, size: int) -> None:
        """A client message over RELAY_MAX_MESSAGE_BYTES was skipped unread: say so; the session goes on."""
        if self._end is not None or link is not self._client:
            return
        self.last_client_activity = time.monotonic()
        actions = self.state.refuse_oversized(size, binary=opcode != OP_TEXT)
        wait = self._pace.received(size, 0.0)
        self._to_client(actions)
        self._after_client_frame(wait)  # holds the link itself when the client is ahead of its pace

    def on_closed(self, link: FrameLink | MessageLink, code: int, reason: str) -> None:
        """Either side closed or was lost."""
        if link is self._client:
            self._client_closed()
        elif link is self._opened:
            self._upstream_ended(code, reason)

    # -- client → upstream -----------------------------------------------------------------------------------

    def _from_client(self, opcode: int, payload: bytes | memoryview, raw: memoryview | None) -> bool:
        self.last_client_activity = time.monotonic()
        received = time.perf_counter()
        state = self.state
        text: str | None = None
        if opcode == OP_TEXT:
            try:
                text = str(payload, "utf-8")
            except UnicodeDecodeError:
                self._end_with_error(
                    protocol.BAD_EVENT,
                    "A text frame was not valid UTF-8 (RFC 6455 requires it); send JSON events as UTF-8 text.",
                    1007,
                    "policy",
                )
                return True
            actions = state.from_client_text(text)
        else:
            actions = state.from_client_bytes(bytes(payload))
        wait = self._pace.received(len(payload), actions.audio_from_client)
        if actions.to_client:
            self._to_client(actions)
        upstream = self._upstream
        if upstream is not None:
            for out in actions.to_upstream:
                if out is text and raw is not None and self._frames_upstream:
                    upstream.write_raw(raw)  # judged and unchanged: the client's frame goes on as it came
                else:
                    upstream.send_text(out)
            if actions.to_upstream:
                self._forward_to_upstream.observe(time.perf_counter() - received)
                if self._taps:
                    for out in actions.to_upstream:
                        self._sent(out)
        else:
            for out in actions.to_upstream:
                self._hold_for_upstream(out)
        if actions.more is not None:
            self._hold(_HOLD_SLICING)
            self._slicing = asyncio.create_task(
                self._carry_out(actions.more), name=f"{self.session_id}-slices"
            )
        if actions.close is not None:
            self._set_end("policy", *actions.close)
            return True
        return self._after_client_frame(wait)

    def _after_client_frame(self, wait: float) -> bool:
        if wait > 0:
            # Far ahead of real time: read this client no faster than its pace (TCP holds the rest).
            self._hold(_HOLD_PACE)
            asyncio.get_running_loop().call_later(wait, self._unhold, _HOLD_PACE)
        return not self._holds

    def _hold_for_upstream(self, text: str) -> None:
        # Held in order until the upstream is open; past the count or byte bound the client is not read
        # (backpressure: its frames stay in its own TCP connection, not in the relay's memory).
        nbytes = payload_bytes(text)
        self._pending.append(text)
        self._pending_ledger.add(nbytes)
        if not self._pending_ledger.has_room(1):
            self._hold(_HOLD_PENDING)

    async def _carry_out(self, steps: Iterator[Actions]) -> None:
        # A large input is decoded and resampled a slice at a time, letting other sessions run between slices;
        # the client is not read meanwhile, so its later frames keep their order.
        try:
            for step in steps:
                await asyncio.sleep(0)
                if self._end is not None:
                    return
                self._to_client(step)
                for out in step.to_upstream:
                    if self._upstream is not None:
                        self._upstream.send_text(out)
                        self._sent(out)
                    else:
                        self._hold_for_upstream(out)
        finally:
            self._slicing = None
            self._unhold(_HOLD_SLICING)

    def _hold(self, reason: str) -> None:
        self._holds.add(reason)
        if self._client is not None:
            self._client.hold()

    def _unhold(self, reason: str) -> None:
        self._holds.discard(reason)
        if not self._holds and self._client is not None and self._end is None:
            self._client.release()

    def _client_closed(self) -> None:
        if self._end is None:
            self._set_end("client_closed", CloseCode.NORMAL, "client closed")
            # What the resampler still holds belongs to this session's audio; a response in progress is
            # cancelled, and its usage read before the upstream is closed.
            upstream = self._upstream
            if upstream is not None:
                for flushed in self.state.finish():
                    upstream.send_text(flushed)
                self._client_left = bool(self.state.responses_in_progress)
        self._ended.set()

    # -- upstream → client -----------------------------------------------------------------------------------

    @property
    def _taps(self) -> bool:
        return self.renewal is not None or self.recorder is not None

    def _sent(self, text: str) -> None:
        # A client frame reached the upstream: roll-over keeps uncommitted audio, recording keeps the user's audio.
        if self.renewal is not None:
            self.renewal.sent(text)
        if self.recorder is not None:
            self.recorder.to_upstream(text)

    async def _connect_upstream(self, renewing: str | None = None, gap_started: float = 0.0) -> None:
        """Open the upstream (the first one, or a replacement when `renewing` says why) and start forwarding."""
        connect_started = time.perf_counter()
        try:
            if self._opener is not None:
                opened = await self._opener()
            else:
                opened = await open_upstream(self._url, self._api_key, self._connect_timeout)
        except UpstreamFailure as failure:
            self.log.warning("upstream_connect_failed", reason=failure.reason, code=failure.code)
            if (
                renewing is not None
                and self.renewal is not None
                and self.renewal.rollover.may_retry(failure.code)
            ):
                self._renew(renewing, gap_started)
                return
            self._end_with_error(failure.code, failure.message, failure.close_code, "upstream_failed")
            return
        dialled = opened if isinstance(opened, Dialled) else None
        link: UpstreamLink
        if dialled is not None:
            link = FrameLink(
                dialled.transport,
                self,
                masking=True,
                max_message=UPSTREAM_MAX_MESSAGE_BYTES,
                hard_limit=UPSTREAM_MAX_MESSAGE_BYTES,
                heartbeat=self._bounds.heartbeat_seconds,
                close_grace=END_GRACE_SECONDS,
            )
        else:  # a translating connection: messages, not frames
            link = MessageLink(cast(MessageSocket, opened), self, END_GRACE_SECONDS)
        seconds = time.perf_counter() - connect_started
        self._metrics.upstream_connect.observe(seconds)
        self.log.info("upstream_connected", seconds=round(seconds, 4))
        if renewing is None:
            for text in self.state.opening_events():
                link.send_text(text)
            self._opened = link
            if dialled is not None:
                take_over(dialled, cast(FrameLink, link))
        elif not await self._replay_to(cast(FrameLink, link), dialled, renewing, gap_started):
            return
        while self._pending:
            held = self._pending.popleft()
            link.send_text(held)
            self._sent(held)
        # Nothing is awaited from here on: the client's frames now go straight up, after the held ones.
        self._frames_upstream = dialled is not None
        self._upstream = link
        if self._end is None:
            self._unhold(_HOLD_PENDING)
            if self.renewal is not None and self.renewal.rollover.age_seconds > 0:
                self._renewal_watch = asyncio.create_task(
                    self._renew_when_due(link), name=f"{self.session_id}-renewal"
                )

    async def _replay_to(
        self, link: FrameLink, dialled: Dialled | None, reason: str, gap_started: float
    ) -> bool:
        """Bring a replacement upstream to where the old one was; False if it could not be (then retried or lost)."""
        assert self.renewal is not None and dialled is not None
        dialogue = AwaitableLink(link)
        take_over(dialled, link)
        try:
            notice = await self.renewal.take_over(dialogue, reason, gap_started)
        except RenewalFailed as failed:
            self.log.warning("upstream_renewal_failed", problem=str(failed))
            link.abort()
            if self.renewal.rollover.may_retry():
                self._renew(reason, gap_started)
            else:
                self._lost()
            return False
        if self._outbox is not None:
            self._outbox.put(notice)
        self._opened = link
        dialogue.hand_back(self)
        return True

    def _renew(self, reason: str, gap_started: float) -> None:
        # Replace the upstream: the client's frames wait (bounded) in `_pending` until the new one has the
        # conversation.
        assert self.renewal is not None
        self._opened = self._upstream = None
        self._pending_ledger.events = self._pending_ledger.bytes = 0
        self.state.responses_in_progress.clear()
        if self._renewal_watch is not None:
            self._renewal_watch.cancel()
            self._renewal_watch = None
        self._connecting = asyncio.create_task(
            self._connect_after(self.renewal.rollover.next_delay(reason), reason, gap_started),
            name=f"{self.session_id}-upstream",
        )

    async def _connect_after(self, delay: float, reason: str, gap_started: float) -> None:
        await asyncio.sleep(delay)
        await self._connect_upstream(reason, gap_started)

    async def _renew_when_due(self, link: UpstreamLink) -> None:
        # Proactive roll-over: once the upstream is old enough, at the first moment between responses.
        assert self.renewal is not None
        rollover = self.renewal.rollover
        await asyncio.sleep(rollover.seconds_until_due())
        # Polled: "between responses and outside speech" is a state of SessionState that no event announces.
        while not rollover.due(len(self.state.responses_in_progress)):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        self._renewal_watch = None
        self.renewal.requested = True
        # Frames from now on wait for the new upstream; the old one's close starts the roll-over.
        self._upstream = None
        link.close(CloseCode.NORMAL)

    def _from_upstream(self, opcode: int, payload: bytes | memoryview, raw: memoryview | None) -> None:
        received = time.perf_counter()
        state = self.state
        try:
            text = str(payload, "utf-8")
        except UnicodeDecodeError:
            text, raw = bytes(payload).decode("utf-8", errors="replace"), None
        if opcode != OP_TEXT:
            raw = None  # a binary frame's text goes to the client as a text frame
        if self.recorder is not None:
            self.recorder.from_upstream(text)
        actions = state.from_upstream_text(text)
        outbox = self._outbox
        assert outbox is not None
        to_client = actions.to_client
        if to_client:
            last = len(to_client) - 1
            for index, out in enumerate(to_client):
                seconds = actions.audio_to_client if index == last else 0.0
                if out is text and raw is not None:
                    # Unchanged: the upstream's frame goes on as it came.
                    outbox.put_raw(raw, audio_seconds=seconds)
                else:
                    outbox.put(out, audio_seconds=seconds)
            # Frames are handed to the client's socket now: this ends forwarding, and perhaps a first-audio wait.
            self._forward_to_client.observe(time.perf_counter() - received)
            if actions.first_audio and outbox.open:
                state.first_audio_forwarded()
        upstream = self._opened
        if upstream is not None:
            for out in actions.to_upstream:
                upstream.send_text(out)
        if actions.tool_calls and self._tool_runner is not None:
            self._tool_runner.start(actions.tool_calls)  # each in its own task: nothing here waits for a tool
        if actions.close is not None:
            self._set_end("limit", *actions.close)
            self._ended.set()
        elif self._client_left and not state.responses_in_progress:
            self._usage_settled.set()

    def _to_client(self, actions: Actions) -> None:
        outbox = self._outbox
        if outbox is not None:
            for out in actions.to_client:
                outbox.put(out)

    def _upstream_ended(self, code: int, reason: str) -> None:
        self._usage_settled.set()
        if self._end is not None:
            return
        clean = code == NO_STATUS or (code != ABNORMAL_CLOSURE and _passes_through(code))
        renewal = self.renewal
        if renewal is not None and not self._client_left:
            renew = renewal.reason_after_close()
            if renew is None and not clean and renewal.rollover.may_retry():
                self.log.warning("upstream_lost", code=None if code == ABNORMAL_CLOSURE else code)
                renew = "dropped"
            if renew is not None:
                self._renew(renew, time.monotonic())
                return
        if clean:
            self._upstream_closed(code, reason)  # a close without a code is a normal end
            self._ended.set()
            return
        self.log.warning("upstream_lost", code=None if code == ABNORMAL_CLOSURE else code)
        self._lost()

    def _lost(self) -> None:
        lost = lost_connection(self._url)
        self._end_with_error(lost.code, lost.message, lost.close_code, "upstream_lost")

    async def _send_tool_frame(self, text: str) -> None:
        # A tool's output (or the request to go on) from its own task; a session already ending drops it.
        upstream = self._upstream
        if upstream is not None and self._end is None:
            upstream.send_text(text)

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
        if self._outbox is not None:
            self._outbox.put(protocol.dumps(protocol.error_event(code, message, error_type=error_type)))
        # Wake run(), which closes both sides.
        self._ended.set()

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
            self._ended.set()

    async def _close_upstream(self) -> None:
        upstream = self._opened
        if upstream is None or upstream.lost:
            return
        upstream.close(
            CloseCode.NORMAL
        )  # dropped if the closing handshake is not done within END_GRACE_SECONDS
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(END_GRACE_SECONDS + 0.5):
                await upstream.wait_closed()
                return
        upstream.abort()

    async def _close_client(self, end: SessionEnd) -> None:
        if self._outbox is not None:
            await self._outbox.finish(end.close_code, end.reason, END_GRACE_SECONDS)

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
            **self.summary_extra(),
        )

    async def wait_closed(self) -> None:
        """Wait until `run()` has finished closing both sides."""
        await self._done.wait()
