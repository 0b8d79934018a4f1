"""Audio the simulated model produces, and the arithmetic of 24 kHz PCM16 buffers."""

from __future__ import annotations

import numpy as np

from relay.protocol import API_RATE

BYTES_PER_SAMPLE = 2
BYTES_PER_MS = API_RATE * BYTES_PER_SAMPLE // 1000
#: Audio deltas carry 100 ms each, like the real service's typical chunking.
CHUNK_MS = 100


def duration_ms(pcm: bytes | bytearray) -> float:
    """Length of 24 kHz PCM16 audio in milliseconds."""
    return len(pcm) / BYTES_PER_MS


def ms_to_bytes(ms: float) -> int:
    """Byte offset of a millisecond position in 24 kHz PCM16 audio (whole samples)."""
    return round(ms * API_RATE / 1000) * BYTES_PER_SAMPLE


def chunks(pcm: bytes, chunk_ms: int = CHUNK_MS) -> list[bytes]:
    """Split audio into deltas of `chunk_ms` (the last may be shorter)."""
    size = chunk_ms * BYTES_PER_MS
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def speech_like(text: str, *, seconds_per_word: float = 0.28, max_seconds: float = 8.0) -> bytes:
    """A voiced, syllable-modulated signal as long as `text` would take to say (24 kHz PCM16).

    It is not speech, but it has speech's energy envelope and pitch range, so meters, VADs and players treat
    it like a voice.
    """
    words = max(1, len(text.split()))
    seconds = min(max_seconds, 0.2 + words * seconds_per_word)
    t = np.arange(int(seconds * API_RATE)) / API_RATE
    pitch = 140.0 + 25.0 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / API_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t), 0.0, None) ** 0.6
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
    signal = 0.18 * voiced * syllables * fade
    pcm: bytes = (np.clip(signal, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    return pcm
