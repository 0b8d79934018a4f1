"""uvicorn's sans-I/O WebSocket protocol, with a way to take the connection over after the handshake.

uvicorn (with Starlette) answers HTTP and the upgrade request, where every admission decision is made. Once the
relay accepts a session, it takes the connection over (`TAKEOVER_EXTENSION`): the 101 response is written exactly as
uvicorn would write it, and every later byte goes to the relay's own frame link (`relay.wire.link`), which forwards
frames as they came instead of parsing them into ASGI messages and building them again.

uvicorn waits for the transport to become writable before every send and close, and closes a socket by flushing
what is buffered first. A client that stops reading (a phone on a dead link, or an attacker) therefore holds any
send, any close and even a keepalive timeout forever. This subclass lets the relay abort such a socket: the
transport is dropped at once, uvicorn reports the disconnect to the app, and its waiting sends are released.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any, Protocol

from starlette.websockets import WebSocket
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

#: Key of the abort callable in the ASGI scope's `extensions`.
ABORT_EXTENSION = "relay.abort"
#: Key of the take-over callable in the ASGI scope's `extensions` (see `RelayWebSocketProtocol.take_over`).
TAKEOVER_EXTENSION = "relay.takeover"
#: Kernel send buffer of a client socket (Linux doubles it). Without it, loopback and LAN sockets autotune to
#: megabytes, so a client that stops reading would hold that much kernel memory and be noticed that much later.
#: 256 KiB is two seconds of 48 kHz base64 audio, and a full window for a 100 ms round trip at 20 Mbit/s.
CLIENT_SEND_BUFFER_BYTES = 256 * 1024


class ByteSink(Protocol):
    """Where the bytes of a connection go once it is taken over (a `relay.wire.link.FrameLink`)."""

    def data_received(self, data: bytes) -> None: ...

    def connection_lost(self, exc: BaseException | None) -> None: ...


class RelayWebSocketProtocol(WebSocketsSansIOProtocol):
    """The protocol the relay's public listener uses for WebSockets (see the module docstring)."""

    _taken = False
    _sink: ByteSink | None = None
    _early: bytes = b""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: dict[str, Any] | None = getattr(self, "scope", None)
        if scope is not None:  # set only for an accepted upgrade; the app task has not run yet
            scope["extensions"][ABORT_EXTENSION] = self.abort
            scope["extensions"][TAKEOVER_EXTENSION] = self.take_over
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CLIENT_SEND_BUFFER_BYTES)

    def take_over(self, subprotocol: str | None) -> tuple[asyncio.Transport, Callable[[ByteSink], None]]:
        """Accept the upgrade (101, as uvicorn's `websocket.accept` would) and stop handling frames.

        Returns the transport and `attach`: call it with the sink that gets every byte from now on (bytes that
        arrive before it is attached are kept for it). uvicorn's own keepalive is not started: the link pings.
        """
        self.logger.info(
            '%s - "WebSocket %s" [accepted]',
            get_client_addr(self.scope),
            get_path_with_query_string(self.scope),
        )
        headers = [
            (name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in self.default_headers
        ]
        if subprotocol:
            headers.append(("Sec-WebSocket-Protocol", subprotocol))
        del self.response.headers["Date"]
        self.response.headers.update(headers)
        self.handshake_complete = True
        self._taken = True
        self.conn.send_response(self.response)
        self.transport.write(b"".join(self.conn.data_to_send()))
        return self.transport, self._attach

    def _attach(self, sink: ByteSink) -> None:
        self._sink = sink
        early, self._early = self._early, b""
        if early:
            sink.data_received(early)

    def data_received(self, data: bytes) -> None:
        if not self._taken:
            super().data_received(data)
        elif self._sink is not None:
            self._sink.data_received(data)
        else:
            self._early += data

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._sink is not None:
            self._sink.connection_lost(exc)

    def shutdown(self) -> None:
        if not self._taken:
            super().shutdown()
            return
        # The server is exiting with this session still open (its drain is over): drop it.
        self.abort()

    def abort(self) -> None:
        """Drop the connection now, without flushing or a closing handshake."""
        # Also when close() was called already: it may be waiting to flush to a peer that does not read.
        if self.transport is not None:
            self.transport.abort()

    def keepalive_timeout(self) -> None:
        # The peer did not answer a ping: it is gone or not reading, so flushing the close frame would never end.
        super().keepalive_timeout()
        self.abort()


def aborter(websocket: WebSocket) -> Callable[[], None] | None:
    """The callable that aborts `websocket`'s connection, when the server provides one."""
    extensions = websocket.scope.get("extensions") or {}
    found = extensions.get(ABORT_EXTENSION)
    return found if callable(found) else None


def taker(
    websocket: WebSocket,
) -> Callable[[str | None], tuple[asyncio.Transport, Callable[[ByteSink], None]]] | None:
    """The callable that takes `websocket`'s connection over (see `RelayWebSocketProtocol.take_over`), if any."""
    extensions = websocket.scope.get("extensions") or {}
    found = extensions.get(TAKEOVER_EXTENSION)
    return found if callable(found) else None
