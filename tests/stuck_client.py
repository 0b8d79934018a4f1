"""A WebSocket client that completes the handshake, then may send but never reads: a phone on a dead link.

Its receive buffer is made tiny, so the relay's sends back up after a few kilobytes. Built on the websockets
sans-I/O client protocol over a plain socket, so nothing reads behind the test's back (no pong is ever sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from websockets.client import ClientProtocol
from websockets.http11 import Response
from websockets.uri import parse_uri


class StuckClient:
    """One connection that stops reading right after the upgrade."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._protocol = ClientProtocol(parse_uri(url))
        self._writer: asyncio.StreamWriter | None = None
        self.status: int | None = None

    async def connect(self) -> None:
        """Open the socket with a minimal receive buffer and complete the WebSocket handshake."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        uri = parse_uri(self.url)
        await asyncio.get_running_loop().sock_connect(sock, (uri.host, uri.port))
        # A tiny stream limit: the reader pauses the socket after a couple of kilobytes and never resumes it.
        reader, self._writer = await asyncio.open_connection(sock=sock, limit=1024)
        self._protocol.send_request(self._protocol.connect())
        self._flush()
        while self.status is None:
            data = await reader.read(1)  # byte by byte: nothing past the handshake is read
            if not data:
                raise ConnectionError("closed during the handshake")
            self._protocol.receive_data(data)
            for event in self._protocol.events_received():
                if isinstance(event, Response):
                    self.status = event.status_code
        if self.status != 101:
            raise ConnectionError(f"handshake answered {self.status}")

    def send_text(self, text: str) -> None:
        """Queue one text frame (never waits: the relay reads what it reads)."""
        self._protocol.send_text(text.encode())
        self._flush()

    async def drain(self) -> None:
        """Wait until what was sent has left this process."""
        assert self._writer is not None
        await self._writer.drain()

    def close(self) -> None:
        """Drop the socket."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.transport.abort()

    def _flush(self) -> None:
        assert self._writer is not None
        for chunk in self._protocol.data_to_send():
            if chunk:
                self._writer.write(chunk)
