"""Moving a running session to a new upstream socket: the I/O half of `Rollover`, used by `RelaySession`.

`take_over()` runs on the new upstream before the session's pumps use it: it waits for the new `session.created`
(which the client never sees), sends the replay, reads the answers to it (swallowed; a refused item is logged),
then sends the audio the old upstream had not committed. The session then forwards as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from relay import protocol
from relay.conversations.items import Item
from relay.conversations.metrics import HistoryMetrics
from relay.conversations.rollover import REPLAY_SESSION_EVENT, Rollover
from relay.wire.awaitable import AwaitableLink

_log = structlog.get_logger("relay.session")
#: Longest wait for the new upstream to answer the replay.
TAKE_OVER_SECONDS = 10.0


class RenewalFailed(Exception):
    """The new upstream did not take the replay (it closed, or did not answer in time)."""


class UpstreamRenewal:
    """One session's roll-over: the decisions (`rollover`), the items to replay, and the replay handshake."""

    def __init__(self, rollover: Rollover, items: Callable[[], list[Item]], metrics: HistoryMetrics) -> None:
        self.rollover = rollover
        self._items = items
        self._metrics = metrics
        #: Set while a proactive roll-over closes the old upstream on purpose.
        self.requested = False

    def sent(self, text: str) -> None:
        """A frame reached the upstream socket."""
        self.rollover.sent(text)

    def reason_after_close(self) -> str | None:
        """Why the upstream's clean close means a roll-over (None: the session ends as the upstream said)."""
        if self.requested:
            return "age"
        if self.rollover.expired and self.rollover.may_retry():
            return "expired"
        return None

    async def take_over(self, upstream: AwaitableLink, reason: str, gap_started: float) -> str:
        """Bring `upstream` to where the old one was; return the notice for the client."""
        replay = self.rollover.replay(self._items())
        try:
            async with asyncio.timeout(TAKE_OVER_SECONDS):
                await self._until_created(upstream)
                for frame in replay.frames:
                    await upstream.send(frame)
                await self._acknowledged(upstream, replay.items_by_event)
                for frame in replay.audio:
                    await upstream.send(frame)
                    self.rollover.sent(frame)
        except TimeoutError:
            raise RenewalFailed("the new upstream did not answer the replay in time") from None
        self.requested = False
        self.rollover.renewed()
        self._metrics.rollovers.labels(reason).inc()
        gap = time.monotonic() - gap_started
        _log.info(
            "upstream_renewed", reason=reason, gap_ms=round(gap * 1000), items=len(replay.items_by_event),
            audio_frames=len(replay.audio),
        )  # fmt: skip
        return self.rollover.notice(reason, gap, len(replay.items_by_event))

    @staticmethod
    async def _until_created(upstream: AwaitableLink) -> None:
        async for message in upstream:
            if protocol.loads(message).get("type") == "session.created":
                return
        raise RenewalFailed("the new upstream closed before session.created")

    @staticmethod
    async def _acknowledged(upstream: AwaitableLink, items_by_event: dict[str, str]) -> None:
        waiting = set(items_by_event.values())
        session_updated = False
        while waiting or not session_updated:
            try:
                message = await upstream.recv()
            except Exception as exc:
                raise RenewalFailed(
                    f"the new upstream closed during the replay ({type(exc).__name__})"
                ) from None
            event = protocol.loads(message)
            kind = event.get("type")
            if kind == "session.updated":
                session_updated = True
            elif kind == "conversation.item.done":
                item = event.get("item")
                waiting.discard(str(item.get("id")) if isinstance(item, dict) else "")
            elif kind == "error":
                error = event.get("error") if isinstance(event.get("error"), dict) else {}
                refused = str(error.get("event_id"))
                _log.warning("replay_refused", event_id=refused, code=error.get("code"))
                if refused == REPLAY_SESSION_EVENT:
                    session_updated = True
                # A refused item is left out; the rest of the conversation goes on.
                waiting.discard(items_by_event.get(refused, ""))
