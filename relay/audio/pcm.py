"""PCM16LE mono helpers and the sample-rate range the relay accepts."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: Lowest and highest sample rate (Hz) accepted for client audio, in either direction.
MIN_RATE = 8000
MAX_RATE = 192000

#: Bytes per PCM16 mono sample.
SAMPLE_WIDTH = 2

Float32Array = npt.NDArray[np.float32]
Int16Array = npt.NDArray[np.int16]


def validate_rate(rate: int, what: str = "sample rate") -> int:
    """Return ``rate`` if it is an integer in [MIN_RATE, MAX_RATE], else raise ValueError naming the range."""
    if isinstance(rate, bool) or not isinstance(rate, int | np.integer):
        raise ValueError(f"{what} must be an integer number of Hz, got {rate!r}")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise ValueError(f"{what} must be between {MIN_RATE} and {MAX_RATE} Hz, got {rate}")
    return int(rate)


def pcm16_duration_seconds(nbytes: int, rate: int) -> float:
    """Duration in seconds of ``nbytes`` of PCM16 mono audio at ``rate`` Hz."""
    if rate <= 0:
        raise ValueError(f"sample rate must be positive, got {rate}")
    return nbytes / (SAMPLE_WIDTH * rate)


def pcm16_to_array(pcm: bytes) -> Int16Array:
    """View PCM16LE bytes as an int16 array (no copy). The byte count must be even."""
    return np.frombuffer(pcm, dtype="<i2")


def float_to_pcm16(samples: Float32Array) -> bytes:
    """Round float samples (int16 scale) to PCM16LE bytes, saturating at the int16 limits (in place)."""
    np.rint(samples, out=samples)
    np.clip(samples, -32768.0, 32767.0, out=samples)
    return samples.astype("<i2").tobytes()
