"""The load of `bench relay`: N sessions, each streaming a 20 ms 24 kHz append 50 times a second, every answer
matched to its request.

Each append is the text frame the SDK sends (``{"type":"input_audio_buffer.append","audio":"<base64>"}``). The
first 6 bytes of its audio carry the session's index and the frame's sequence number; the rest is the session's own
fixed noise. The echo upstream answers with the same audio, so an answer tells which frame it answers and whether it
arrived intact and in order. aiohttp on uvloop: a cheap client, so that the load side is not what is measured.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import math
import random
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
import orjson

FRAME_SECONDS = 0.02
#: 20 ms of 24 kHz PCM16 mono.
FRAME_BYTES = 960
_TAG = struct.Struct(">HI")  # session index, sequence number
_TAG_CHARS = 8  # base64 of the 6 tag bytes; 6 is a multiple of 3, so the rest of the audio encodes on its own
#: Handshakes in flight at once while sessions open (a listen backlog is finite).
_OPENING_AT_ONCE = 32
OPEN_TIMEOUT_SECONDS = 15.0
#: A send this much behind its schedule counts as late: the load side was short of CPU.
LATE_SECONDS = 0.005


def client_session() -> aiohttp.ClientSession:
    """An HTTP client without aiohttp's default cap of 100 connections (each session holds one)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


class LoadError(RuntimeError):
    """The load could not be applied: a session was refused, or did not open in time."""


@dataclass
class Tally:
    """What one session sent and what came back."""

    sent: int = 0
    ok: int = 0  # answers intact and in order
    disordered: int = 0
    corrupted: int = 0
    errors: int = 0  # `error` events
    late_sends: int = 0
    closed_early: int = 0  # sessions the other side closed before the load ended
    first_error: str | None = None

    def add(self, other: Tally) -> None:
        """Add another session's counts to these."""
        for name in ("sent", "ok", "disordered", "corrupted", "errors", "late_sends", "closed_early"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.first_error = self.first_error or other.first_error

    @property
    def unanswered(self) -> int:
        """Appends that got no answer at all."""
        return max(0, self.sent - self.ok - self.disordered - self.corrupted)

    @property
    def lost(self) -> int:
        """Appends without an answer, plus answers out of order or corrupted."""
        return self.unanswered + self.disordered + self.corrupted


class LoadSession:
    """One client session: its frames, its reader, its counts and its round-trip times."""

    def __init__(self, index: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.index = index
        self.ws = ws
        noise = random.Random(index).randbytes(FRAME_BYTES - _TAG.size)
        self._body = base64.b64encode(noise).decode()
        self._sent_at: list[float] = []
        self._expected = 0  # one past the latest frame answered
        self.window = (math.inf, -math.inf)
        self.round_trips: list[float] = []
        self.tally = Tally()
        self.created = asyncio.Event()
        self._sending = True
        self._closing = False
        self._settled = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    def frame(self, seq: int) -> str:
        """The append carrying frame `seq`."""
        tag = base64.b64encode(_TAG.pack(self.index, seq)).decode()
        return '{"type":"input_audio_buffer.append","audio":"' + tag + self._body + '"}'

    def _check_settled(self) -> None:
        t = self.tally
        if not self._sending and t.ok + t.disordered + t.corrupted >= t.sent:
            self._settled.set()

    async def settled(self) -> None:
        """Return once sending has stopped and every frame sent has been answered (well or badly)."""
        await self._settled.wait()

    async def send_until(self, first: float, stop: float) -> None:
        """Send a frame every 20 ms from `first` until `stop` (perf_counter times), catching up when late."""
        due = first
        ws, sent_at, tally, clock = self.ws, self._sent_at, self.tally, time.perf_counter
        while due < stop:
            now = clock()
            if due > now:
                await asyncio.sleep(due - now)
                now = clock()
            if now - due > LATE_SECONDS:
                tally.late_sends += 1
            sent_at.append(now)
            tally.sent += 1
            try:
                await ws.send_str(self.frame(len(sent_at) - 1))
            except (aiohttp.ClientError, ConnectionError):
                break  # closed by the other side: the reader has counted it, and the frames sent are lost
            due += FRAME_SECONDS
        self._sending = False
        self._check_settled()

    async def _read(self) -> None:
        clock = time.perf_counter
        with contextlib.suppress(aiohttp.ClientError, asyncio.CancelledError, ConnectionError):
            async for message in self.ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self._on_event(message.data, clock())
                    self._check_settled()
        if not self._closing:
            self.tally.closed_early += 1
            if self.tally.first_error is None:
                self.tally.first_error = (
                    f"session {self.index} closed by the other side (code {self.ws.close_code})"
                )
        # Closed: nothing more will come, so nothing may be waited for.
        self.created.set()
        self._settled.set()

    def _on_event(self, data: str, now: float) -> None:
        event = orjson.loads(data)
        kind = event.get("type")
        if kind == "response.output_audio.delta":
            self._on_answer(event.get("delta"), now)
        elif kind == "session.created":
            self.created.set()
        elif kind == "error":
            self.tally.errors += 1
            if self.tally.first_error is None:
                self.tally.first_error = "error event: " + str(event.get("error"))[:300]

    def _on_answer(self, delta: object, now: float) -> None:
        tally = self.tally
        if not isinstance(delta, str):
            tally.corrupted += 1
            return
        try:
            index, seq = _TAG.unpack(base64.b64decode(delta[:_TAG_CHARS], validate=True))
        except (binascii.Error, struct.error, ValueError):
            tally.corrupted += 1
            return
        if index != self.index or seq >= len(self._sent_at) or delta[_TAG_CHARS:] != self._body:
            tally.corrupted += 1
            return
        if seq < self._expected:
            # It came after the answer to a later frame (or twice). A gap the other way is no fault of this
            # answer: the frames skipped count as unanswered unless they come later (then: disordered).
            tally.disordered += 1
            return
        self._expected = seq + 1
        tally.ok += 1
        sent = self._sent_at[seq]
        if self.window[0] <= sent < self.window[1]:
            self.round_trips.append(now - sent)

    async def close(self) -> None:
        """Close the socket and stop reading."""
        self._closing = True
        with contextlib.suppress(aiohttp.ClientError, ConnectionError, asyncio.TimeoutError):
            await asyncio.wait_for(self.ws.close(), 5)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@dataclass
class LoadResult:
    """The whole load's counts and the round trips of frames sent inside the measured window."""

    tally: Tally
    round_trips: list[float] = field(default_factory=list)


async def open_sessions(
    http: aiohttp.ClientSession, url: str, headers: Mapping[str, str], count: int
) -> list[LoadSession]:
    """Open `count` sessions and wait for each one's `session.created`."""
    gate = asyncio.Semaphore(_OPENING_AT_ONCE)

    async def one(index: int) -> LoadSession:
        async with gate:
            try:
                ws = await http.ws_connect(
                    url, headers=dict(headers), compress=0, max_msg_size=16 * 1024 * 1024
                )
            except aiohttp.ClientError as exc:
                raise LoadError(f"session {index} was not opened: {exc}") from exc
            session = LoadSession(index, ws)
            await session.created.wait()
            if session.ws.closed:
                raise LoadError(f"session {index} closed before session.created (code {ws.close_code})")
            return session

    tasks = [asyncio.create_task(one(index)) for index in range(count)]
    try:
        async with asyncio.timeout(OPEN_TIMEOUT_SECONDS):
            return list(await asyncio.gather(*tasks))
    except (LoadError, TimeoutError) as exc:
        for task in tasks:
            task.cancel()
        opened = [t.result() for t in tasks if t.done() and not t.cancelled() and t.exception() is None]
        await asyncio.gather(*(s.close() for s in opened))
        if isinstance(exc, TimeoutError):
            raise LoadError(f"{count} sessions did not all open within {OPEN_TIMEOUT_SECONDS:g} s") from exc
        raise


async def stream(
    sessions: list[LoadSession],
    warmup: float,
    seconds: float,
    drain: float,
    marks: tuple[Callable[[], None], Callable[[], None]],
) -> LoadResult:
    """Stream for `warmup` + `seconds`, call `marks` at the measured window's start and end, then wait up to
    `drain` seconds for the last answers."""
    start = time.perf_counter() + 0.05
    window = (start + warmup, start + warmup + seconds)
    for session in sessions:
        session.window = window
    # Sessions start evenly spread over one frame period, as independent clients would be.
    spread = FRAME_SECONDS / max(1, len(sessions))
    senders = [
        asyncio.create_task(s.send_until(start + i * spread, window[1])) for i, s in enumerate(sessions)
    ]

    async def at(when: float, mark: Callable[[], None]) -> None:
        await asyncio.sleep(max(0.0, when - time.perf_counter()))
        mark()

    await asyncio.gather(at(window[0], marks[0]), at(window[1], marks[1]), *senders)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(s.settled() for s in sessions)), drain)
    total = Tally()
    round_trips: list[float] = []
    for session in sessions:
        total.add(session.tally)
        round_trips.extend(session.round_trips)
    return LoadResult(total, round_trips)
