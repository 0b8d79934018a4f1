"""One WebSocket connection after its handshake, on an asyncio transport: frames in, frames out, no tasks.

The link calls its owner back for every complete data message, from the transport's own `data_received`, so a
frame is read, judged and written on in one call with no queue and no task switch. It answers pings, keeps the
connection alive with its own pings, runs the closing handshake, and turns every protocol violation into a close
with the code RFC 6455 names. The owner may hold the link (stop reading) and release it later: that is how a
client's pace and the bounds on held work are kept, with the unread bytes left in the peer's TCP window.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from relay.wire.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameScanner,
    MaskSource,
    Oversized,
    ProtocolViolation,
    build_frame,
    close_payload,
    parse_close,
)

#: Close code when the connection dropped without a close frame (never sent on the wire).
ABNORMAL_CLOSURE = 1006
#: Close code reported for a close frame without a code (never sent on the wire).
NO_STATUS = 1005


class LinkOwner(Protocol):
    """What a link reports to whoever drives it."""

    def on_message(self, link: Any, opcode: int, payload: bytes | memoryview, raw: memoryview | None) -> bool:
        """A whole message (`raw` is its one frame as received, None if it came in fragments). Return False to
        hold the link: nothing more is read until `release()`."""

    def on_oversized(self, link: Any, opcode: int, size: int) -> None:
        """A message over the link's limit was skipped without being read into memory."""

    def on_closed(self, link: Any, code: int, reason: str) -> None:
        """The peer closed (its code and reason), or the connection failed (1006). Called once."""


class FrameLink:
    """A post-handshake WebSocket on `transport`. `masking` is True on the side that dialled (it masks)."""

    def __init__(
        self,
        transport: asyncio.Transport,
        owner: LinkOwner,
        *,
        masking: bool,
        max_message: int,
        hard_limit: int,
        heartbeat: float,
        close_grace: float,
    ) -> None:
        self.transport = transport
        self._owner = owner
        self._masks = MaskSource() if masking else None
        self._scanner = FrameScanner(masked=not masking, max_payload=max_message, hard_limit=hard_limit)
        self._max_message = max_message
        self._close_grace = close_grace
        self._loop = asyncio.get_running_loop()
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0
        self._fragment_size = 0
        self._held = False
        self._processing = False
        self._reading_paused = False
        #: The close frame the link sent (code), or None; and whether the peer's came.
        self.close_sent: int | None = None
        self.close_received = False
        self._reported = False
        self._lost = asyncio.Event()
        self._close_timer: asyncio.TimerHandle | None = None
        #: Bytes handed to the transport so far (the part still buffered is `transport.get_write_buffer_size()`).
        self.written = 0
        self._heartbeat = heartbeat
        self._ping_payload: bytes | None = None
        self._pings = 0
        self._ping_timer: asyncio.TimerHandle | None = (
            self._loop.call_later(heartbeat, self._keepalive) if heartbeat > 0 else None
        )

    # -- transport callbacks (the link is the transport's protocol, or its protocol forwards to it) ------------

    def data_received(self, data: bytes) -> None:
        """Bytes from the peer."""
        self._scanner.feed(data)
        self._process()

    def eof_received(self) -> bool:
        """The peer shut its sending side: nothing more will come (the transport then closes)."""
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        """The connection is gone."""
        self._stop_timers()
        self._report(ABNORMAL_CLOSURE, "connection lost")
        self._lost.set()

    def pause_writing(self) -> None:
        """Flow control from the transport: the owner watches the buffer size itself."""

    def resume_writing(self) -> None:
        """Flow control from the transport: the owner watches the buffer size itself."""

    def rehome(self, owner: LinkOwner) -> None:
        """Report to `owner` from now on."""
        self._owner = owner

    # -- reading ---------------------------------------------------------------------------------------------

    def hold(self) -> None:
        """Stop reading until `release()`: frames already received wait too."""
        self._held = True
        if not self._reading_paused and not self.transport.is_closing():
            self._reading_paused = True
            self.transport.pause_reading()

    def release(self) -> None:
        """Go on reading after `hold()` (or after an owner returned False)."""
        if not self._held:
            return
        self._held = False
        if self._reading_paused:
            self._reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()
        self._process()

    def _process(self) -> None:
        if self._processing:  # released from inside an owner's callback: the running loop carries on
            return
        self._processing = True
        try:
            while not self._held and not self._reported:
                try:
                    frame = self._scanner.next()
                except ProtocolViolation as violation:
                    self._fail(violation.code, violation.reason)
                    return
                if frame is None:
                    return
                if isinstance(frame, Oversized):
                    self._on_oversized(frame)
                    continue
                opcode = frame.opcode
                if opcode in (OP_TEXT, OP_BINARY):
                    if frame.fin:
                        if not self._owner.on_message(self, opcode, frame.payload, frame.raw):
                            self.hold()
                        continue
                    self._fragment_opcode, self._fragment_size = opcode, len(frame.payload)
                    self._fragments = [bytes(frame.payload)]
                elif opcode == OP_CONT:
                    self._on_continuation(frame.payload, frame.fin)
                elif opcode == OP_PING:
                    self._write_frame(OP_PONG, bytes(frame.payload))
                elif opcode == OP_PONG:
                    if self._ping_payload is not None and bytes(frame.payload) == self._ping_payload:
                        self._ping_payload = None
                elif opcode == OP_CLOSE:
                    self._on_close(bytes(frame.payload))
        finally:
            self._processing = False

    def _on_continuation(self, payload: bytes | memoryview, fin: bool) -> None:
        self._fragment_size += len(payload)
        if self._fragment_size > self._max_message:
            self._fragments = []  # past the limit: the rest is counted, not kept
        else:
            self._fragments.append(bytes(payload))
        if fin:
            self._end_fragments()

    def _on_oversized(self, frame: Oversized) -> None:
        if frame.opcode == OP_CONT or self._scanner.fragmented:
            # Part of a fragmented message: counted, dropped as it comes, reported when the message ends.
            if frame.opcode != OP_CONT:
                self._fragment_opcode, self._fragment_size = frame.opcode, 0
            self._fragment_size += frame.size
            self._fragments = []
            if not self._scanner.fragmented:
                self._end_fragments()
            return
        self._owner.on_oversized(self, frame.opcode, frame.size)

    def _end_fragments(self) -> None:
        opcode, size, parts = self._fragment_opcode, self._fragment_size, self._fragments
        self._fragments, self._fragment_size = [], 0
        if size > self._max_message:
            self._owner.on_oversized(self, opcode, size)
        elif not self._owner.on_message(self, opcode, b"".join(parts), None):
            self.hold()

    # -- writing ---------------------------------------------------------------------------------------------

    def write_raw(self, frame: bytes | memoryview) -> None:
        """Send a whole frame exactly as it is (one that came from the other side, already framed right)."""
        if self.close_sent is None:
            self.written += len(frame)
            self.transport.write(frame)

    def send_text(self, text: str) -> None:
        """Send a text message."""
        self._write_frame(OP_TEXT, text.encode())

    def _write_frame(self, opcode: int, payload: bytes) -> None:
        if self.close_sent is not None or self.transport.is_closing():
            return
        frame = build_frame(opcode, payload, self._masks.next() if self._masks is not None else None)
        self.written += len(frame)
        self.transport.write(frame)

    @property
    def buffered(self) -> int:
        """Bytes written and not yet taken by the kernel (the peer is not reading them yet)."""
        return self.transport.get_write_buffer_size()

    # -- closing ---------------------------------------------------------------------------------------------

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake; the connection is dropped if it is not done within the close grace."""
        if self.close_sent is not None or self.transport.is_closing():
            return
        self._write_frame(OP_CLOSE, close_payload(code, reason))
        self.close_sent = code
        if self._held:  # the peer's close frame must be read
            self._held = False
            if self._reading_paused:
                self._reading_paused = False
                self.transport.resume_reading()
        self._close_timer = self._loop.call_later(self._close_grace, self.abort)

    async def wait_closed(self) -> None:
        """Wait until the connection is gone."""
        await self._lost.wait()

    @property
    def lost(self) -> bool:
        """True once the connection is gone."""
        return self._lost.is_set()

    def abort(self) -> None:
        """Drop the connection now, without a closing handshake or flushing."""
        self._stop_timers()
        self.transport.abort()

    def _on_close(self, payload: bytes) -> None:
        self.close_received = True
        try:
            code, reason = parse_close(payload)
        except ProtocolViolation as violation:
            self._fail(violation.code, violation.reason)
            return
        if self.close_sent is None:
            # Echo the peer's code (RFC 6455 §5.5.1); none when it sent none.
            echo = b"" if code == 1005 else close_payload(code, "")
            self._write_frame(OP_CLOSE, echo)
            self.close_sent = code
        self._report(code, reason)
        if self._masks is None:
            # The server side closes the TCP connection once the handshake is done (RFC 6455 §7.1.1).
            self.transport.close()
        elif self._close_timer is None:
            self._close_timer = self._loop.call_later(self._close_grace, self.abort)

    def _fail(self, code: int, reason: str) -> None:
        self._write_frame(OP_CLOSE, close_payload(code, reason))
        self.close_sent = code
        self._report(code, reason)
        self.transport.close()
        self._close_timer = self._loop.call_later(self._close_grace, self.abort)

    def _report(self, code: int, reason: str) -> None:
        if not self._reported:
            self._reported = True
            self._owner.on_closed(self, code, reason)

    # -- keepalive -------------------------------------------------------------------------------------------

    def _keepalive(self) -> None:
        if self._ping_payload is not None:
            # No pong for a whole interval: the peer is gone or not reading; a close frame would not get through.
            self._report(ABNORMAL_CLOSURE, "keepalive ping timeout")
            self.abort()
            return
        self._pings += 1
        self._ping_payload = self._pings.to_bytes(4, "big")
        self._write_frame(OP_PING, self._ping_payload)
        self._ping_timer = self._loop.call_later(self._heartbeat, self._keepalive)

    def _stop_timers(self) -> None:
        for timer in (self._ping_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._close_timer = None
