"""Frames on their way to one client: a bounded queue and the one task that writes it to the socket.

The upstream pump never waits on the client: it queues and goes on reading the upstream. The writer sends in order
and each send has a deadline, so a client that stops reading is found within `client_stall_seconds`, and one that
reads slower than the upstream sends is found when the queue outgrows its bounds (bytes, seconds of audio). Either
way the session is told (`on_overflow`) and ends; the socket is aborted rather than flushed to a peer that does
not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Histogram
from starlette.websockets import WebSocket, WebSocketState

from relay.bounds import OutboxLedger, SessionBounds, payload_bytes
from relay.client_socket import aborter

#: Close reasons are at most 123 bytes (RFC 6455 §5.5: a control frame's payload is at most 125 bytes).
MAX_CLOSE_REASON_BYTES = 123


def close_reason(reason: str) -> str:
    """`reason` cut to what a close frame can carry, on a UTF-8 character boundary."""
    return reason.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")


@dataclass(slots=True)
class _Frame:
    text: str
    nbytes: int
    audio_seconds: float
    #: perf_counter when the frame arrived from the upstream (for the forwarding-latency histogram), or None.
    received: float | None
    on_sent: Callable[[], None] | None


class ClientOutbox:
    """The bounded queue of frames for one client socket, and its writer (`run`)."""

    def __init__(
        self,
        websocket: WebSocket,
        bounds: SessionBounds,
        *,
        forward_latency: Histogram,
        on_overflow: Callable[[str], None],
    ) -> None:
        self._ws = websocket
        self._stall_seconds = bounds.client_stall_seconds
        self._ledger = OutboxLedger(bounds.client_buffer_bytes, bounds.client_buffer_seconds)
        self._latency = forward_latency
        self._on_overflow = on_overflow
        self._abort = aborter(websocket)
        self._queue: deque[_Frame] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        #: Why the client counts as too slow (it is then aborted, never flushed), or None.
        self.overflow: str | None = None
        #: The client socket is gone (closed by the client, or a send failed).
        self.gone = False

    @property
    def open(self) -> bool:
        """True while frames can still reach the client."""
        return not self.gone and self.overflow is None

    def put(
        self,
        text: str,
        *,
        audio_seconds: float = 0.0,
        received: float | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> bool:
        """Queue `text` for the client without waiting; False if it can no longer reach the client."""
        if not self.open:
            return False
        nbytes = payload_bytes(text)
        self._queue.append(_Frame(text, nbytes, audio_seconds, received, on_sent))
        self._drained.clear()
        self._wake.set()
        over = self._ledger.add(nbytes, audio_seconds)
        if over is not None:
            self._too_slow(over)
            return False
        return True

    async def run(self) -> None:
        """Write queued frames in order until the client is gone or too slow (then return)."""
        queue, ledger, latency, ws = self._queue, self._ledger, self._latency, self._ws
        while self.open:
            if not queue:
                self._drained.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            frame = queue[0]
            try:
                async with asyncio.timeout(self._stall_seconds):
                    await ws.send_text(frame.text)
            except TimeoutError:
                self._too_slow(f"it read nothing for {self._stall_seconds:g} s (RELAY_CLIENT_STALL_SECONDS)")
                return
            except Exception:  # the client went away; its receive side reports the disconnect
                self.gone = True
                return
            queue.popleft()
            ledger.remove(frame.nbytes, frame.audio_seconds)
            if frame.received is not None:
                latency.observe(time.perf_counter() - frame.received)
            if frame.on_sent is not None:
                frame.on_sent()

    async def finish(self, code: int, reason: str, grace: float) -> None:
        """Give the client up to `grace` seconds to take what is queued and the close frame; else abort."""
        if self.overflow is not None:
            self.abort()
            return
        if self.gone or self._ws.application_state != WebSocketState.CONNECTED:
            return
        deadline = asyncio.get_running_loop().time() + grace
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self._drained.wait()
        self.gone = True  # the writer stops; nothing more is queued
        self._wake.set()
        try:
            async with asyncio.timeout_at(max(deadline, asyncio.get_running_loop().time() + 0.1)):
                await self._ws.close(code=code, reason=close_reason(reason))
        except TimeoutError:
            self.abort()
        except Exception:  # noqa: S110 - the client left meanwhile: nothing to close
            pass

    def abort(self) -> None:
        """Drop the client's connection now (a peer that does not read will not take a close frame either)."""
        self.gone = True
        self._wake.set()
        if self._abort is not None:
            self._abort()

    def _too_slow(self, why: str) -> None:
        if self.overflow is None:
            self.overflow = why
            self._wake.set()
            self._on_overflow(why)
