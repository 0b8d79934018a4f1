"""An upstream that speaks in messages rather than frames (a translating connection), driven like a `FrameLink`.

Most upstreams speak the OpenAI protocol and their frames are forwarded as they come (`relay.wire`). A provider
whose protocol is translated (relay.providers) gives the session a socket that takes and yields OpenAI events as
text; this adapter reads it in one task and writes it from another, and reports to the session through the same
calls a `FrameLink` makes, so the session has one way to handle its upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

from websockets.exceptions import ConnectionClosed

from relay.wire.frames import OP_TEXT
from relay.wire.link import ABNORMAL_CLOSURE, LinkOwner


class Abortable(Protocol):
    """What is needed of a transport: dropping it at once."""

    def abort(self) -> None: ...


class MessageSocket(Protocol):
    """A socket that takes OpenAI client events and yields OpenAI server events, as JSON text."""

    async def send(self, message: str) -> None: ...

    def __aiter__(self) -> AsyncIterator[str | bytes]: ...

    async def close(self) -> None: ...

    @property
    def close_code(self) -> int | None: ...

    @property
    def close_reason(self) -> str | None: ...

    @property
    def transport(self) -> Abortable: ...


class MessageLink:
    """`socket` with the surface of a `FrameLink` that the session uses (see the module docstring)."""

    def __init__(self, socket: MessageSocket, owner: LinkOwner, close_grace: float) -> None:
        self._socket = socket
        self._owner = owner
        self._close_grace = close_grace
        self._outgoing: deque[str] = deque()
        self._wake = asyncio.Event()
        self._lost = asyncio.Event()
        self.close_sent: int | None = None
        self._reported = False
        self._reader = asyncio.create_task(self._read(), name="upstream-messages-in")
        self._writer = asyncio.create_task(self._write(), name="upstream-messages-out")

    def send_text(self, text: str) -> None:
        """Queue a client event for the socket, in order."""
        if self.close_sent is None:
            self._outgoing.append(text)
            self._wake.set()

    def write_raw(self, frame: bytes | memoryview) -> None:
        """Never called: a translating socket takes events, not frames (the session sends it text)."""
        raise RuntimeError("a translating upstream takes events, not frames")

    def close(self, code: int, reason: str = "") -> None:
        """Close the socket (dropped if that takes longer than the close grace)."""
        if self.close_sent is None:
            self.close_sent = code
            self._wake.set()

    async def wait_closed(self) -> None:
        """Wait until the socket is gone."""
        await self._lost.wait()

    @property
    def lost(self) -> bool:
        """True once the socket is gone."""
        return self._lost.is_set()

    def abort(self) -> None:
        """Drop the connection now."""
        with contextlib.suppress(Exception):
            self._socket.transport.abort()
        self._reader.cancel()
        self._writer.cancel()

    async def _read(self) -> None:
        code, reason = ABNORMAL_CLOSURE, "connection lost"
        try:
            async for message in self._socket:
                data = message.encode() if isinstance(message, str) else message
                self._owner.on_message(self, OP_TEXT, data, None)
            code, reason = self._socket.close_code or 1000, self._socket.close_reason or ""
        except ConnectionClosed as closed:
            if closed.rcvd is not None:
                code, reason = closed.rcvd.code, closed.rcvd.reason
        finally:
            if not self._reported:
                self._reported = True
                self._owner.on_closed(self, code, reason)
            self._lost.set()
            self._writer.cancel()

    async def _write(self) -> None:
        try:
            while True:
                while self._outgoing:
                    await self._socket.send(self._outgoing.popleft())
                if self.close_sent is not None:
                    break
                self._wake.clear()
                await self._wake.wait()
            async with asyncio.timeout(self._close_grace):
                await self._socket.close()
        except (ConnectionClosed, TimeoutError, OSError):
            self.abort()
