"""Frames on their way to one client: written at once to its link, with bounds on what it has not taken yet.

The upstream side never waits on the client: a frame is written to the client's transport as soon as it is decided
(no queue of our own, no writer task), and what the client has not read stays in the transport's buffer. That
buffer is bounded in bytes and in seconds of audio, and a client that takes nothing for `client_stall_seconds`
while bytes wait for it is found by a timer. Either way the session is told (`on_overflow`) and ends; the socket is
aborted rather than flushed to a peer that does not read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from relay.bounds import ClientBacklog, SessionBounds
from relay.wire.link import FrameLink

#: Close reasons are at most 123 bytes (RFC 6455 §5.5: a control frame's payload is at most 125 bytes).
MAX_CLOSE_REASON_BYTES = 123


def close_reason(reason: str) -> str:
    """`reason` cut to what a close frame can carry, on a UTF-8 character boundary."""
    return reason.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")


class ClientOutbox:
    """What goes to one client, and the bounds on what it has not read (see the module docstring)."""

    def __init__(self, link: FrameLink, bounds: SessionBounds, *, on_overflow: Callable[[str], None]) -> None:
        self._link = link
        self._stall_seconds = bounds.client_stall_seconds
        self._backlog = ClientBacklog(bounds.client_buffer_bytes, bounds.client_buffer_seconds)
        self._on_overflow = on_overflow
        self._stall_timer: asyncio.TimerHandle | None = None
        self._taken_when_armed = 0
        #: Why the client counts as too slow (it is then aborted, never flushed), or None.
        self.overflow: str | None = None

    @property
    def open(self) -> bool:
        """True while frames can still reach the client."""
        link = self._link
        return self.overflow is None and link.close_sent is None and not link.lost

    def put(self, text: str, *, audio_seconds: float = 0.0) -> bool:
        """Send a text frame built from `text`; False if it can no longer reach the client."""
        if not self.open:
            return False
        self._link.send_text(text)
        return self._written(audio_seconds)

    def put_raw(self, frame: bytes | memoryview, *, audio_seconds: float = 0.0) -> bool:
        """Send a whole frame as it came from the upstream (unmasked, as frames to a client must be)."""
        if not self.open:
            return False
        self._link.write_raw(frame)
        return self._written(audio_seconds)

    def _written(self, audio_seconds: float) -> bool:
        link = self._link
        buffered = link.buffered
        if not buffered:
            if self._backlog.audio_seconds:
                self._backlog.check(link.written, 0)
            return True
        self._backlog.sent(link.written, audio_seconds)
        over = self._backlog.check(link.written, buffered)
        if over is not None:
            self._too_slow(over)
            return False
        if self._stall_timer is None:
            self._arm_stall_timer()
        return True

    def _arm_stall_timer(self) -> None:
        link = self._link
        self._taken_when_armed = link.written - link.buffered
        self._stall_timer = asyncio.get_running_loop().call_later(self._stall_seconds, self._check_stall)

    def _check_stall(self) -> None:
        self._stall_timer = None
        link = self._link
        if not self.open or not link.buffered:
            return
        if link.written - link.buffered == self._taken_when_armed:
            self._too_slow(f"it read nothing for {self._stall_seconds:g} s (RELAY_CLIENT_STALL_SECONDS)")
            return
        self._arm_stall_timer()

    async def finish(self, code: int, reason: str, grace: float) -> None:
        """Give the client up to `grace` seconds to take what is buffered and the close frame; else abort."""
        self._cancel_stall_timer()
        link = self._link
        if self.overflow is not None:
            link.abort()
            return
        if link.lost:
            return
        link.close(
            code, close_reason(reason)
        )  # the link drops the connection if it is not closed within grace
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace + 0.5):
                await link.wait_closed()
                return
        link.abort()

    def abort(self) -> None:
        """Drop the client's connection now (a peer that does not read will not take a close frame either)."""
        self._cancel_stall_timer()
        self._link.abort()

    def _cancel_stall_timer(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _too_slow(self, why: str) -> None:
        if self.overflow is None:
            self.overflow = why
            self._cancel_stall_timer()
            self._on_overflow(why)
