"""A `FrameLink` read and written with awaits, for the few exchanges that wait for an answer.

The data path never waits on a peer: links call the session back. Replaying a conversation to a new upstream
(relay.conversations.renewal) is a dialogue instead (send, then wait for the answers), so for that while the link
reports to this object, which queues what arrives; afterwards the link goes back to the session with
`hand_back`, and what arrived meanwhile and was not consumed is delivered to the session first, in order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from websockets.exceptions import ConnectionClosedError

from relay.wire.link import FrameLink, LinkOwner


class AwaitableLink:
    """Reads and writes `link` with awaits until `hand_back`."""

    def __init__(self, link: FrameLink) -> None:
        self._link = link
        self._messages: deque[tuple[int, bytes]] = deque()
        self._arrived = asyncio.Event()
        self._closed: tuple[int, str] | None = None
        link.rehome(self)

    async def send(self, text: str) -> None:
        """Send a text message (the link writes at once; nothing to wait for)."""
        self._link.send_text(text)

    async def recv(self) -> str:
        """The next text message; raises ConnectionClosedError once the connection is gone."""
        while not self._messages:
            if self._closed is not None:
                raise ConnectionClosedError(None, None)
            self._arrived.clear()
            await self._arrived.wait()
        return self._messages.popleft()[1].decode("utf-8", errors="replace")

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        while True:
            try:
                yield await self.recv()
            except ConnectionClosedError:
                return

    def hand_back(self, owner: LinkOwner) -> None:
        """Report to `owner` again, after delivering to it what is still queued (and a close that came)."""
        self._link.rehome(owner)
        while self._messages:
            opcode, payload = self._messages.popleft()
            owner.on_message(self._link, opcode, payload, None)
        if self._closed is not None:
            owner.on_closed(self._link, *self._closed)

    # -- LinkOwner -------------------------------------------------------------------------------------------

    def on_message(
        self, link: object, opcode: int, payload: bytes | memoryview, raw: memoryview | None
    ) -> bool:
        """Queue a message for `recv`."""
        self._messages.append((opcode, bytes(payload)))
        self._arrived.set()
        return True

    def on_oversized(self, link: object, opcode: int, size: int) -> None:
        """Never for an upstream link (its limit is its hard limit)."""

    def on_closed(self, link: object, code: int, reason: str) -> None:
        """The connection is gone: `recv` raises once the queue is empty."""
        self._closed = (code, reason)
        self._arrived.set()
