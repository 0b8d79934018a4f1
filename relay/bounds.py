"""Every bound on what one session may hold or cost, in one place, and the pure bookkeeping that enforces them.

A relay on the public internet must assume some clients stop reading, flood, or send giant frames. Each bound here
caps what such a client can cost the others: memory (bytes held for the client, bytes held for the upstream), loop
time (seconds of audio resampled per slice), and wall-clock time (how long ending a session may wait on a peer).
The asyncio layer (`relay.session`, `relay.client_outbox`) asks these classes and acts; nothing here does I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relay.config import Config

#: Ending a session (a timer, a limit, a budget, a shutdown) waits at most this long for the client to take the
#: last frames and the close frame; then the socket is aborted. Short, because a peer that does not read by then
#: will not read at all, and shutdown must not wait on it.
END_GRACE_SECONDS = 1.0
#: When a client leaves during a response, the upstream is kept open at most this long to read the response's
#: `response.done`, so that its usage is charged to the client's budget (the response is cancelled first).
USAGE_GRACE_SECONDS = 3.0
#: Large audio inputs are resampled in slices of at most this much audio, yielding to the loop between slices, so
#: that no single frame holds the event loop for more than a few milliseconds (measured in docs/hardening.md).
RESAMPLE_SLICE_SECONDS = 0.5


@dataclass(frozen=True)
class SessionBounds:
    """The limits of one session, from the relay's settings."""

    #: Largest client message, counted in bytes of its UTF-8 payload (not characters).
    max_message_bytes: int = 1024 * 1024
    #: How far a client's audio may run ahead of real time; beyond it the relay reads that client at real-time
    #: speed. Also the most audio one frame may carry.
    audio_ahead_seconds: float = 5.0
    #: Client events (and their bytes) held while the upstream connects; a client beyond either waits.
    pending_events: int = 1000
    pending_bytes: int = 16 * 1024 * 1024
    #: Frames queued for a client that reads slower than the upstream sends: bytes and seconds of audio.
    client_buffer_bytes: int = 8 * 1024 * 1024
    client_buffer_seconds: float = 60.0
    #: Longest a send to the client may wait for the client to read before the client counts as stalled.
    client_stall_seconds: float = 5.0
    #: WebSocket ping interval to both peers; a peer that does not answer within the same time is dead.
    heartbeat_seconds: float = 5.0

    @classmethod
    def from_config(cls, config: Config) -> SessionBounds:
        """The bounds a relay configured by `config` applies to every session."""
        return cls(
            max_message_bytes=config.max_message_bytes,
            audio_ahead_seconds=config.audio_ahead_seconds,
            pending_events=config.pending_events_limit,
            pending_bytes=config.pending_bytes_limit,
            client_buffer_bytes=config.client_buffer_bytes,
            client_buffer_seconds=config.client_buffer_seconds,
            client_stall_seconds=config.client_stall_seconds,
            heartbeat_seconds=config.heartbeat_seconds,
        )


def payload_bytes(text: str) -> int:
    """Bytes of `text` on the wire (UTF-8). O(1) for ASCII text, which every audio frame is."""
    return len(text) if text.isascii() else len(text.encode())


class ClientBacklog:
    """What one client has been sent and not yet taken, against the bounds of its buffer.

    Bytes are what the client's socket still buffers; seconds of audio are counted per frame that was still
    (partly) buffered when it was written, and leave the count once the bytes before its end have been taken.
    """

    def __init__(self, max_bytes: int, max_audio_seconds: float) -> None:
        self.max_bytes = max_bytes
        self.max_audio_seconds = max_audio_seconds
        self.audio_seconds = 0.0
        self._audio: deque[tuple[int, float]] = deque()  # (offset where the frame ends, its seconds)

    def sent(self, end: int, audio_seconds: float) -> None:
        """Count a frame that ends at byte `end` of everything written and is not all taken yet."""
        if audio_seconds:
            self._audio.append((end, audio_seconds))
            self.audio_seconds += audio_seconds

    def check(self, written: int, buffered: int) -> str | None:
        """Given bytes written so far and still buffered, what overflowed (for the client's error), if anything."""
        taken = written - buffered
        audio = self._audio
        while audio and audio[0][0] <= taken:
            self.audio_seconds -= audio.popleft()[1]
        if not audio:
            self.audio_seconds = 0.0
        if buffered > self.max_bytes:
            return f"more than {self.max_bytes} bytes (RELAY_CLIENT_BUFFER_BYTES) were waiting for this client to read"
        if self.audio_seconds > self.max_audio_seconds:
            return (
                f"more than {self.max_audio_seconds:g} s of audio (RELAY_CLIENT_BUFFER_SECONDS) were waiting for "
                "this client to read"
            )
        return None


class PendingLedger:
    """Client events held while the upstream connects: a count and a byte bound, both of which must hold."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.events = 0
        self.bytes = 0

    def has_room(self, nbytes: int) -> bool:
        """True if one more event of `nbytes` fits (a first event always fits, however large)."""
        if self.events == 0:
            return True
        return self.events < self.max_events and self.bytes + nbytes <= self.max_bytes

    def add(self, nbytes: int) -> None:
        """Count a held event."""
        self.events += 1
        self.bytes += nbytes


#: Bytes per second a client may send on average (twice base64 audio at the highest accepted rate, 192 kHz), with
#: bursts up to two of the largest messages. Frames beyond it wait in the client's own TCP connection, so that a
#: client sending giant or refused frames costs the loop no more than a fast honest one.
CLIENT_BYTES_PER_SECOND = 1024 * 1024
#: Frames per second a client may send on average, with bursts of twice as many: a browser sends 50-100; a flood
#: of tiny frames would otherwise cost the loop per frame what the byte pace never sees.
CLIENT_FRAMES_PER_SECOND = 1000


class ClientPace:
    """How far a client runs ahead of real time, in audio and in bytes, and how long to wait before reading more.

    Audio sent at real time never waits. A client may send up to `ahead_seconds` of audio at once (a recording, a
    backlog after a network hiccup); beyond that the relay stops reading from it until real time catches up, so a
    client flooding audio costs the upstream and the loop no more than a real-time one. Bytes are paced the same
    way at `CLIENT_BYTES_PER_SECOND`, and frames at `CLIENT_FRAMES_PER_SECOND`, whatever they carry. Idle time
    earns no credit beyond the burst.
    """

    def __init__(self, ahead_seconds: float, burst_bytes: int, clock: Callable[[], float]) -> None:
        self.ahead_seconds = ahead_seconds
        self.burst_bytes = burst_bytes
        self._clock = clock
        self._audio_ahead = 0.0
        self._bytes_ahead = 0.0
        self._frames_ahead = 0.0
        self._at = clock()

    def _catch_up(self) -> None:
        now = self._clock()
        elapsed, self._at = now - self._at, now
        self._audio_ahead = max(0.0, self._audio_ahead - elapsed)
        self._bytes_ahead = max(0.0, self._bytes_ahead - elapsed * CLIENT_BYTES_PER_SECOND)
        self._frames_ahead = max(0.0, self._frames_ahead - elapsed * CLIENT_FRAMES_PER_SECOND)

    def wait_before(self) -> float:
        """Seconds to wait before reading the next frame (0 when the client is within its margins)."""
        self._catch_up()
        return self._wait()

    def received(self, nbytes: int, audio_seconds: float) -> float:
        """Count a frame of `nbytes` from the client that carried `audio_seconds` of audio upstream; return the
        seconds to wait before reading the next one (as `wait_before`, without reading the clock twice)."""
        self._catch_up()
        self._bytes_ahead += nbytes
        self._frames_ahead += 1
        self._audio_ahead += audio_seconds
        return self._wait()

    def _wait(self) -> float:
        audio_wait = self._audio_ahead - self.ahead_seconds
        bytes_wait = (self._bytes_ahead - self.burst_bytes) / CLIENT_BYTES_PER_SECOND
        frames_wait = (self._frames_ahead - 2 * CLIENT_FRAMES_PER_SECOND) / CLIENT_FRAMES_PER_SECOND
        return max(0.0, audio_wait, bytes_wait, frames_wait)
