"""Reference relay (c), the floor: a TCP splice after the WebSocket handshakes.

The relay completes the client's handshake and its own to the upstream (with the key), both checked by the
`websockets` sans-I/O layer, then copies bytes both ways, one write per read, never looking at a frame. That is
correct WebSocket forwarding only because each direction's framing already fits the next hop: a client's frames are
masked, as frames to an upstream must be; an upstream's are not, as frames to a client must not be. It is the
system-call floor of any relay in Python: a read, a write and the event loop's poll per frame and direction.

The client's 101 is sent only once the upstream has accepted, so a refused upstream is a 502, not a dead socket.

Run: ``OPENAI_API_KEY=... python -m relay.bench.splice_relay --port P --upstream ws://127.0.0.1:U/v1/realtime``.
"""

from __future__ import annotations

import asyncio
import socket
from typing import cast
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from relay.bench.serving import READY_PATH, api_key, run_on_uvloop, server_arguments, until_signalled

_END_OF_HEAD = b"\r\n\r\n"
_MAX_HEAD_BYTES = 64 * 1024
_READY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\nConnection: close\r\n\r\nready\n"
)


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def split_head(buffer: bytearray) -> tuple[bytes, bytes] | None:
    """(HTTP head, bytes after it) once the head is complete, else None."""
    end = buffer.find(_END_OF_HEAD)
    if end < 0:
        return None
    end += len(_END_OF_HEAD)
    return bytes(buffer[:end]), bytes(buffer[end:])


class _Side(asyncio.Protocol):
    """One TCP connection of a pair: before the splice it collects a handshake; after it, it copies to its peer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
            return
        self.buffer += data
        if len(self.buffer) > _MAX_HEAD_BYTES:
            self.close()
            return
        self.handshake_data()

    def handshake_data(self) -> None:
        """More bytes arrived before the splice."""

    # Backpressure: a peer that cannot take more stops this side's reads (TCP holds the rest).
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.peer is not None:
            self.peer.close()

    def write(self, data: bytes) -> None:
        """Queue bytes on this side's connection (dropped if it is gone)."""
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        """Close this side (what is queued is still written)."""
        if self.transport is not None:
            self.transport.close()


class _UpstreamSide(_Side):
    def __init__(self) -> None:
        super().__init__()
        self.head: asyncio.Future[tuple[bytes, bytes]] = asyncio.get_running_loop().create_future()

    def handshake_data(self) -> None:
        parts = split_head(self.buffer)
        if parts is not None and not self.head.done():
            self.head.set_result(parts)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(ConnectionError("the upstream closed during its handshake"))
        super().connection_lost(exc)


class _ClientSide(_Side):
    def __init__(self, upstream_url: str, key: str) -> None:
        super().__init__()
        self._upstream_url = upstream_url
        self._key = key
        self._started = False
        self._opening: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference

    def handshake_data(self) -> None:
        parts = split_head(self.buffer)
        if parts is None or self._started:
            return
        self._started = True
        head, rest = parts
        if head.startswith(f"GET {READY_PATH} ".encode()):
            self.write(_READY)
            self.close()
            return
        server = ServerProtocol()
        server.receive_data(head)
        events = server.events_received()
        request = events[0] if events else None
        if not isinstance(request, Request):
            self._refuse(server, server.reject(400, "not a WebSocket handshake\n"))
            return
        response = server.accept(request)
        if response.status_code != 101:
            self._refuse(server, response)
            return
        self.buffer = bytearray(rest)
        self._opening = asyncio.get_running_loop().create_task(self._open_upstream(server, request, response))

    async def _open_upstream(self, server: ServerProtocol, request: Request, accepted: Response) -> None:
        query = urlsplit(request.path).query
        url = self._upstream_url + ("?" + query if query else "")
        wsuri = parse_uri(url)
        upstream = _UpstreamSide()
        try:
            await asyncio.get_running_loop().create_connection(lambda: upstream, wsuri.host, wsuri.port)
            handshake = ClientProtocol(wsuri)
            outgoing = handshake.connect()
            outgoing.headers["Authorization"] = f"Bearer {self._key}"
            handshake.send_request(outgoing)
            upstream.write(b"".join(handshake.data_to_send()))
            head, _ = await asyncio.wait_for(upstream.head, 10)
            handshake.receive_data(head)
            handshake.events_received()
            if handshake.handshake_exc is not None:
                raise handshake.handshake_exc
        except Exception:  # refused, unreachable, timed out or an invalid handshake: all a 502
            upstream.close()
            self._refuse(server, server.reject(502, "the upstream refused or did not answer\n"))
            return
        if self.transport is None:  # the client left meanwhile
            upstream.close()
            return
        server.send_response(accepted)
        self.write(b"".join(server.data_to_send()))
        # What either side sent after its handshake (more may have come while this task waited) goes first.
        early_from_upstream = bytes(upstream.buffer[len(head) :])
        early_from_client = bytes(self.buffer)
        self.buffer.clear()
        upstream.buffer.clear()
        self.peer, upstream.peer = upstream, self
        if early_from_upstream:
            self.write(early_from_upstream)
        if early_from_client:
            upstream.write(early_from_client)

    def _refuse(self, server: ServerProtocol, response: Response) -> None:
        response.headers = Headers([*response.headers.raw_items(), ("Connection", "close")])
        server.send_response(response)
        self.write(b"".join(server.data_to_send()))
        self.close()


async def serve(port: int, upstream_url: str, key: str) -> None:
    """Splice every client on 127.0.0.1:`port` to the upstream until signalled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _ClientSide(upstream_url, key), "127.0.0.1", port, backlog=1024, reuse_address=True
    )
    try:
        await until_signalled()
    finally:
        server.close()


def main() -> None:
    """Entry point of the splice relay process."""
    args = server_arguments("relay.bench.splice_relay", "Reference relay: TCP splice.", upstream=True)
    run_on_uvloop(serve(args.port, args.upstream, api_key()))


if __name__ == "__main__":
    main()
