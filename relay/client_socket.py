"""uvicorn's sans-I/O WebSocket protocol, with a way to abort a client that no longer reads.

uvicorn waits for the transport to become writable before every send and close, and closes a socket by flushing
what is buffered first. A client that stops reading (a phone on a dead link, or an attacker) therefore holds any
send, any close and even a keepalive timeout forever. This subclass lets the relay abort such a socket: the
transport is dropped at once, uvicorn reports the disconnect to the app, and its waiting sends are released.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

#: Key of the abort callable in the ASGI scope's `extensions`.
ABORT_EXTENSION = "relay.abort"
#: Kernel send buffer of a client socket (Linux doubles it). Without it, loopback and LAN sockets autotune to
#: megabytes, so a client that stops reading would hold that much kernel memory and be noticed that much later.
#: 256 KiB is two seconds of 48 kHz base64 audio, and a full window for a 100 ms round trip at 20 Mbit/s.
CLIENT_SEND_BUFFER_BYTES = 256 * 1024


class RelayWebSocketProtocol(WebSocketsSansIOProtocol):
    """The protocol the relay's public listener uses for WebSockets (see the module docstring)."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: dict[str, Any] | None = getattr(self, "scope", None)
        if scope is not None:  # set only for an accepted upgrade; the app task has not run yet
            scope["extensions"][ABORT_EXTENSION] = self.abort
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CLIENT_SEND_BUFFER_BYTES)

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
