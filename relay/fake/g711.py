"""G.711 μ-law / A-law at 8 kHz, the two telephony formats a Realtime session may choose instead of PCM.

The simulated model works on 24 kHz PCM16 inside. 8 kHz G.711 is widened by sample repetition, and narrowed
back by taking every third sample, so that audio played back to the caller is bit-identical to what it sent.
The codec follows the ITU-T G.711 segment tables (as in the classic Sun reference implementation).
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from relay.protocol import API_RATE

G711_RATE = 8000
_WIDEN = API_RATE // G711_RATE
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159
_ULAW_SEGMENTS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_ALAW_SEGMENTS = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _segment(value: int, ends: tuple[int, ...]) -> int:
    for index, end in enumerate(ends):
        if value <= end:
            return index
    return len(ends)


def _ulaw_to_linear(code: int) -> int:
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + _ULAW_BIAS) << ((code & 0x70) >> 4)
    return _ULAW_BIAS - magnitude if code & 0x80 else magnitude - _ULAW_BIAS


def _alaw_to_linear(code: int) -> int:
    code ^= 0x55
    magnitude = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    if segment == 0:
        magnitude += 8
    elif segment == 1:
        magnitude += 0x108
    else:
        magnitude = (magnitude + 0x108) << (segment - 1)
    return magnitude if code & 0x80 else -magnitude


def _linear_to_ulaw(sample: int) -> int:
    value = sample >> 2
    if value < 0:
        value, mask = -value, 0x7F
    else:
        mask = 0xFF
    value = min(value, _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    segment = _segment(value, _ULAW_SEGMENTS)
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


def _linear_to_alaw(sample: int) -> int:
    value = sample >> 3
    if value >= 0:
        mask = 0xD5
    else:
        mask, value = 0x55, -value - 1
    segment = _segment(value, _ALAW_SEGMENTS)
    if segment >= 8:
        return 0x7F ^ mask
    shift = 1 if segment < 2 else segment
    return ((segment << 4) | ((value >> shift) & 0x0F)) ^ mask


@functools.cache
def _tables(kind: str) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.uint8]]:
    to_linear, to_code = (
        (_ulaw_to_linear, _linear_to_ulaw) if kind == "audio/pcmu" else (_alaw_to_linear, _linear_to_alaw)
    )
    decode = np.array([to_linear(code) for code in range(256)], dtype=np.int16)
    encode = np.array([to_code(sample) for sample in range(-32768, 32768)], dtype=np.uint8)
    return decode, encode


def is_g711(format_type: str) -> bool:
    """Whether a session audio format is one of the G.711 variants."""
    return format_type in ("audio/pcmu", "audio/pcma")


def to_pcm24k(data: bytes, format_type: str) -> bytes:
    """Decode G.711 bytes to 24 kHz PCM16LE (each 8 kHz sample held for three output samples)."""
    decode, _ = _tables(format_type)
    linear = decode[np.frombuffer(data, dtype=np.uint8)]
    pcm: bytes = np.repeat(linear, _WIDEN).astype("<i2").tobytes()
    return pcm


def from_pcm24k(pcm: bytes, format_type: str) -> bytes:
    """Encode 24 kHz PCM16LE as 8 kHz G.711 (every third sample; the inverse of `to_pcm24k`)."""
    _, encode = _tables(format_type)
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")[::_WIDEN]
    codes: bytes = encode[samples.astype(np.int32) + 32768].tobytes()
    return codes
