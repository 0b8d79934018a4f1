"""The Gemini Live upstream as the session's pumps see it: OpenAI events in, OpenAI events out.

`GeminiUpstream` has the small interface of a `websockets` client connection (`send(text)`, async iteration of
text frames, `close()`, `close_code`, `close_reason`, `transport.abort()`); underneath it is one
`BidiGenerateContent` socket at a time. What to send is decided by `GeminiTranslator`; this module only moves
frames, holds Gemini-bound messages until `setupComplete`, and bridges a `goAway` (or a setup change) by opening a
new socket with the newest session resumption handle, so that the client sees one session with a short gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from relay import protocol
from relay.bounds import END_GRACE_SECONDS
from relay.providers.gemini.translate import UNSUPPORTED, GeminiTranslator, Translation
from relay.providers.metrics import OneProvider
from relay.providers.profiles import Profile
from relay.upstream import UpstreamFailure, open_message_socket

_log = structlog.get_logger("relay.providers.gemini")

#: Gemini-bound frames held while a (new) connection waits for setupComplete; beyond this they are dropped.
HELD_BYTES_LIMIT = 8 * 1024 * 1024
#: Close codes that end a Gemini session normally; others carry Gemini's error in the close reason.
_NORMAL_CLOSES = (1000, 1001)


@dataclass(frozen=True)
class _Closed:
    code: int | None
    reason: str | None
    error: ConnectionClosed | None = None


class GeminiUpstream:
    """One translated session to Gemini Live."""

    def __init__(
        self,
        profile: Profile,
        model: str,
        timeout: float,
        heartbeat: float,
        metrics: OneProvider | None = None,
    ) -> None:
        self._profile = profile
        self._metrics = metrics
        self._timeout = timeout
        self._heartbeat = heartbeat
        voice = profile.voice or profile.voices[0]
        self.translator = GeminiTranslator(model, voice, profile.voices, "low-latency")
        self._events: asyncio.Queue[str | _Closed] = asyncio.Queue()
        self._ws: ClientConnection | None = None
        self._ready = False
        self._held: deque[str] = deque()
        self._held_bytes = 0
        self._dropped = False
        self._reader: asyncio.Task[None] | None = None
        self._resuming: asyncio.Task[None] | None = None
        self._closed: _Closed | None = None
        #: Resumptions done (goAway or a setup change), and the longest pause each caused in milliseconds.
        self.resumptions = 0
        self.resume_gaps_ms: list[float] = []

    # -- the interface the session uses ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the first socket (the setup follows the client's first events) and queue `session.created`."""
        self._ws = await self._handshake()
        for event in self.translator.opening():
            self._events.put_nowait(protocol.dumps(event))
        self._reader = asyncio.create_task(self._read(self._ws), name="gemini-reader")

    async def send(self, message: str) -> None:
        """Take one OpenAI client event."""
        await self._apply(self.translator.from_client(message))

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            item = await self._events.get()
            if isinstance(item, _Closed):
                self._closed = item
                if item.error is not None:
                    raise item.error
                return
            yield item

    async def close(self) -> None:
        """Close the current socket (and stop any resumption in progress)."""
        if self._resuming is not None:
            self._resuming.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                async with asyncio.timeout(END_GRACE_SECONDS):
                    await self._reader

    @property
    def close_code(self) -> int | None:
        if self._closed is not None:
            return self._closed.code
        return self._ws.close_code if self._ws is not None else None

    @property
    def close_reason(self) -> str | None:
        if self._closed is not None:
            return self._closed.reason
        return self._ws.close_reason if self._ws is not None else None

    @property
    def transport(self) -> asyncio.Transport:
        assert self._ws is not None
        return self._ws.transport

    # -- moving frames ---------------------------------------------------------------------------------------

    async def _handshake(self) -> ClientConnection:
        return await open_message_socket(
            self._profile.url,
            self._timeout,
            self._heartbeat,
            headers={"x-goog-api-key": self._profile.credential},
            credential_name=self._profile.credential_env,
        )

    async def _apply(self, translation: Translation) -> None:
        for message in translation.to_gemini:
            text = protocol.dumps(message)
            if "setup" in message and self._ws is not None:
                await self._ws.send(text)  # the first message of its connection, ahead of anything held
            elif self._ready and self._ws is not None:
                await self._ws.send(text)
            else:
                self._hold(text)
        refused = 0
        for event in translation.to_client:
            refused += event.get("type") == "error" and event["error"].get("code") == UNSUPPORTED
            self._events.put_nowait(protocol.dumps(event))
        if refused and self._metrics is not None:
            self._metrics.refused(refused)
        if translation.setup_complete and not self._ready:
            await self._release()
        if (translation.go_away or translation.resetup) and (self._resuming is None or self._resuming.done()):
            why = "go_away" if translation.go_away else "setup_changed"
            self._resuming = asyncio.create_task(self._resume(why), name="gemini-resume")

    def _hold(self, text: str) -> None:
        if self._held_bytes + len(text) > HELD_BYTES_LIMIT:
            if not self._dropped:
                self._dropped = True
                _log.warning("gemini_held_frames_dropped", held_bytes=self._held_bytes)
            return
        self._held.append(text)
        self._held_bytes += len(text)

    async def _release(self) -> None:
        self._ready = True
        while self._held and self._ws is not None:
            text = self._held.popleft()
            self._held_bytes -= len(text)
            await self._ws.send(text)

    async def _read(self, ws: ClientConnection) -> None:
        error: ConnectionClosed | None = None
        try:
            async for raw in ws:
                await self._apply(self.translator.from_gemini(raw))
        except ConnectionClosed as closed:
            error = closed
        if self._resuming is not None and not self._resuming.done():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._resuming
        if ws is not self._ws:
            return  # replaced by a resumed connection: its end is not the session's
        code, reason = ws.close_code, ws.close_reason
        if error is not None and error.rcvd is None:
            self._events.put_nowait(_Closed(None, None, error))
            return
        if code is not None and code not in _NORMAL_CLOSES:
            # Gemini reports refusals (bad setup, quota, policy) in the close frame: tell the client in words.
            said = (reason or "no reason given")[:200]
            if self._profile.credential:
                said = said.replace(self._profile.credential, "[redacted]")
            message = (
                f"{self._profile.name} (Gemini Live) closed the session with code {code}: {said}. Check the "
                "session's settings (and the operator the profile's key), then connect again."
            )
            event = protocol.error_event(protocol.UPSTREAM_PROTOCOL_ERROR, message, error_type="server_error")
            self._events.put_nowait(protocol.dumps(event))
            code = 1000
        self._events.put_nowait(_Closed(code, reason))

    async def _resume(self, why: str) -> None:
        handle = self.translator.resumption_handle
        if handle is None:
            _log.warning("gemini_resume_impossible", why=why)
            return
        started = time.perf_counter()
        self._ready = False
        try:
            fresh = await self._handshake()
            await fresh.send(protocol.dumps(self.translator.setup(handle)))
            async with asyncio.timeout(self._timeout):
                first = await fresh.recv()
            if "setupComplete" not in protocol.loads(first):
                raise ValueError("no setupComplete")
        except (UpstreamFailure, ConnectionClosed, TimeoutError, ValueError) as exc:
            _log.warning("gemini_resume_failed", why=why, problem=type(exc).__name__)
            await self._release()  # the old connection carries on while it lasts
            return
        old, self._ws = self._ws, fresh
        self._reader = asyncio.create_task(self._read(fresh), name="gemini-reader")
        await self._release()
        gap_ms = (time.perf_counter() - started) * 1000
        self.resumptions += 1
        self.resume_gaps_ms.append(gap_ms)
        _log.info("gemini_resumed", why=why, gap_ms=round(gap_ms, 1))
        if self._metrics is not None:
            self._metrics.resumed(why, gap_ms / 1000)
        if old is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(END_GRACE_SECONDS):
                    await old.close()


async def open_gemini(
    profile: Profile, model: str, timeout: float, heartbeat: float, metrics: OneProvider | None = None
) -> GeminiUpstream:
    """Open a translated Gemini Live session for `profile` on `model`; raises `UpstreamFailure` on failure."""
    upstream = GeminiUpstream(profile, model, timeout, heartbeat, metrics)
    await upstream.start()
    return upstream
