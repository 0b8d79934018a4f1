"""Opening the upstream WebSocket on a plain asyncio connection, so that its frames can then be forwarded as bytes.

The handshake is the `websockets` sans-I/O client's: it writes the request and validates the response
(Sec-WebSocket-Accept, Upgrade, extensions). Whatever the upstream sent after its response (often its first event,
in the same TCP segment) is kept for the link that takes over the connection.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import cast

from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidMessage, InvalidStatus
from websockets.http11 import Response
from websockets.uri import parse_uri

from relay.client_socket import ByteSink

_HEAD_END = b"\r\n\r\n"
#: A response head longer than this is not a WebSocket handshake response.
_MAX_HEAD_BYTES = 64 * 1024


@dataclass
class Dialled:
    """An upstream connection whose handshake succeeded, and the bytes that followed the response."""

    transport: asyncio.Transport
    leftover: bytearray = field(default_factory=bytearray)


class _Handshake(asyncio.Protocol):
    def __init__(self, client: ClientProtocol, request: bytes, done: asyncio.Future[Response]) -> None:
        self._client = client
        self._request = request
        self._done = done
        self._head = bytearray()
        self.leftover = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but they are transports all the same.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self._done.done():
            self.leftover += data  # the link that takes over reads these first
            return
        self._head += data
        end = self._head.find(_HEAD_END)
        if end < 0:
            if len(self._head) > _MAX_HEAD_BYTES:
                self._done.set_exception(InvalidMessage("response head too long"))
            return
        head, self.leftover = bytes(self._head[: end + 4]), bytearray(self._head[end + 4 :])
        self._head.clear()
        try:
            self._done.set_result(self._parse(head))
        except Exception as exc:
            self._done.set_exception(exc)

    def _parse(self, head: bytes) -> Response:
        status_line = head.split(b"\r\n", 1)[0].split(b" ", 2)
        try:
            status = int(status_line[1])
        except (IndexError, ValueError):
            raise InvalidMessage("not an HTTP response") from None
        if status != 101:
            # The sans-I/O client would wait for the body; the status is all that is needed to say what failed.
            raise InvalidStatus(Response(status, "", Headers(), b""))
        self._client.receive_data(head)
        events = self._client.events_received()
        if self._client.handshake_exc is not None:
            raise self._client.handshake_exc
        if not events or not isinstance(events[0], Response):
            raise InvalidMessage("incomplete handshake response")
        return events[0]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_exception(exc or ConnectionResetError("the upstream closed during the handshake"))


async def dial(url: str, headers: dict[str, str], timeout: float) -> Dialled:
    """Connect to the WebSocket at `url` (ws or wss) with `headers`; raise on any failure or after `timeout` s.

    No extension is offered (audio is base64 and barely compresses; frames are forwarded as they are).
    """
    uri = parse_uri(url)
    client = ClientProtocol(uri, extensions=None)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Response] = loop.create_future()
    context = ssl.create_default_context() if uri.secure else None
    request = client.connect()
    request.headers["User-Agent"] = "realtime-relay"
    for name, value in headers.items():
        request.headers[name] = value
    client.send_request(request)
    handshake = _Handshake(client, b"".join(client.data_to_send()), done)
    transport: asyncio.Transport | None = None
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(
                lambda: handshake,
                uri.host,
                uri.port,
                ssl=context,
                server_hostname=uri.host if context is not None else None,
            )
            await done
    except BaseException:
        if transport is not None:
            transport.abort()
        raise
    assert transport is not None
    return Dialled(transport, handshake.leftover)


def take_over(dialled: Dialled, protocol: ByteSink) -> None:
    """Give the connection to `protocol`: it gets the bytes that followed the handshake, then every later byte."""
    dialled.transport.set_protocol(protocol)  # type: ignore[arg-type]
    if dialled.leftover:
        protocol.data_received(bytes(dialled.leftover))
        dialled.leftover.clear()
