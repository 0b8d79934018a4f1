"""RFC 6455 frames without I/O: a scanner that finds whole frames in a byte stream, and the builders of new ones.

The scanner checks what a conforming endpoint must check (reserved bits, opcodes, masking direction, control-frame
rules, fragmentation order) and hands out each data frame's unmasked payload together with the frame's bytes as
they arrived, so that a frame which needs no change is forwarded without being built again.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

try:  # the C implementation that ships with `websockets`
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - only without the compiled extension
    from websockets.utils import apply_mask

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_DATA_OPCODES = frozenset({OP_CONT, OP_TEXT, OP_BINARY})
_CONTROL_OPCODES = frozenset({OP_CLOSE, OP_PING, OP_PONG})
#: Close codes a peer may send (RFC 6455 §7.4; 1004-1006 and 1015 are never sent on the wire).
_SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
_MASK_POOL_BYTES = 4096


class ProtocolViolation(Exception):
    """The peer broke RFC 6455: close with `code` (1002 protocol error, 1007 bad UTF-8, 1009 too big)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class Frame:
    """One frame: its opcode, FIN bit, unmasked payload, and the frame's bytes exactly as received."""

    opcode: int
    fin: bool
    #: Unmasked payload (a view of the received bytes when the peer does not mask).
    payload: bytes | memoryview
    #: The whole frame as received (a view; valid as long as the caller keeps it).
    raw: memoryview


@dataclass(slots=True)
class Oversized:
    """A data frame whose payload is over the message limit: its payload is skipped, never buffered."""

    opcode: int
    size: int


class MaskSource:
    """Masking keys from the system's strong random source, fetched 1024 keys per system call."""

    __slots__ = ("_pool", "_pos")

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0

    def next(self) -> bytes:
        """Four fresh random bytes."""
        if self._pos >= len(self._pool):
            self._pool, self._pos = os.urandom(_MASK_POOL_BYTES), 0
        key = self._pool[self._pos : self._pos + 4]
        self._pos += 4
        return key


def _header(opcode: int, length: int, fin: bool, masked: bool) -> bytes:
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return struct.pack("!BB", first, mask_bit | length)
    if length < 65536:
        return struct.pack("!BBH", first, mask_bit | 126, length)
    return struct.pack("!BBQ", first, mask_bit | 127, length)


def build_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """A whole frame carrying `payload`, masked with `mask` when given (frames from a client must be)."""
    if mask is None:
        return _header(opcode, len(payload), True, False) + payload
    return _header(opcode, len(payload), True, True) + mask + apply_mask(payload, mask)


def close_payload(code: int, reason: str) -> bytes:
    """The payload of a close frame; the reason is cut to fit a control frame on a character boundary."""
    return struct.pack("!H", code) + reason.encode()[:123].decode(errors="ignore").encode()


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a received close frame (1005 when it has none); raise ProtocolViolation if invalid."""
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise ProtocolViolation(1002, "close frame of one byte")
    (code,) = struct.unpack("!H", payload[:2])
    if code not in _SENDABLE_CLOSE_CODES and not 3000 <= code <= 4999:
        raise ProtocolViolation(1002, f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise ProtocolViolation(1007, "close reason is not UTF-8") from None
    return code, reason


class FrameScanner:
    """Finds whole frames in the bytes one peer sends.

    `masked` is what the peer's frames must be: True for a client's, False for a server's. Data frames over
    `max_payload` bytes come out as `Oversized` and their payload is skipped as it arrives; over `hard_limit`,
    reading stops with a 1009 violation (a peer sending that much is not speaking this protocol).
    """

    __slots__ = (
        "_buf",
        "_fragmented",
        "_hard_limit",
        "_masked",
        "_max_payload",
        "_need",
        "_parts",
        "_parts_size",
        "_pos",
        "_skip",
    )

    def __init__(self, *, masked: bool, max_payload: int, hard_limit: int) -> None:
        self._masked = masked
        self._max_payload = max_payload
        self._hard_limit = hard_limit
        # Frames are handed out as views of the bytes of one read (never copied); only the unfinished tail of a
        # read is joined with the next one.
        self._buf = b""
        self._pos = 0
        self._parts: list[
            bytes
        ] = []  # reads after `_buf`, not joined until the frame they belong to is whole
        self._parts_size = 0
        self._need = 0  # bytes from `_pos` that the next frame needs, once its header is known (0: unknown)
        self._skip = 0  # payload bytes of an oversized frame still to discard
        self._fragmented = False  # a fragmented message is open (continuations expected)

    @property
    def fragmented(self) -> bool:
        """A fragmented message has begun and not ended."""
        return self._fragmented

    def feed(self, data: bytes) -> None:
        """Add bytes received from the peer."""
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
            if not data:
                return
        have = len(self._buf) - self._pos + self._parts_size
        if self._need and have + len(data) < self._need:
            # Still short of the frame that is arriving: keep the pieces, join them once when it is whole.
            self._parts.append(data)
            self._parts_size += len(data)
            return
        if self._pos >= len(self._buf) and not self._parts:
            self._buf, self._pos = data, 0
        else:
            self._buf = b"".join((memoryview(self._buf)[self._pos :], *self._parts, data))
            self._pos, self._parts, self._parts_size = 0, [], 0
        self._need = 0

    def next(self) -> Frame | Oversized | None:
        """The next whole frame, or None until more bytes arrive. Raises ProtocolViolation."""
        buf, start = self._buf, self._pos
        size = len(buf) - start
        if self._skip or size < 2:
            return None
        first, second = buf[start], buf[start + 1]
        opcode = first & 0x0F
        fin = first >= 0x80
        if first & 0x70:
            raise ProtocolViolation(1002, "reserved bits set (no extension was negotiated)")
        if (second >= 0x80) != self._masked:
            raise ProtocolViolation(1002, "frame masked wrongly for its direction")
        length = second & 0x7F
        head = 2
        if length == 126:
            if size < 4:
                return None
            (length,) = struct.unpack_from("!H", buf, start + 2)
            head = 4
        elif length == 127:
            if size < 10:
                return None
            (length,) = struct.unpack_from("!Q", buf, start + 2)
            head = 10
        if opcode in _CONTROL_OPCODES:
            if not fin or length > 125:
                raise ProtocolViolation(1002, "fragmented or oversized control frame")
        elif opcode in _DATA_OPCODES:
            if (opcode == OP_CONT) != self._fragmented:
                raise ProtocolViolation(1002, "fragments out of order")
            self._fragmented = not fin
        else:
            raise ProtocolViolation(1002, f"unknown opcode {opcode}")
        if length > self._hard_limit:
            raise ProtocolViolation(1009, f"frame of {length} bytes")
        body = start + head + (4 if self._masked else 0)
        if length > self._max_payload and opcode in _DATA_OPCODES:
            if len(buf) < body:
                return None
            available = min(length, len(buf) - body)
            self._skip = length - available
            self._pos = body + available
            return Oversized(opcode, length)
        end = body + length
        if len(buf) < end:
            self._need = end - start
            return None
        view = memoryview(buf)
        payload = apply_mask(view[body:end], bytes(view[body - 4 : body])) if self._masked else view[body:end]
        self._pos = end
        return Frame(opcode, fin, payload, view[start:end])
