"""Streaming PCM16 mono resamplers: a low-latency polyphase path, soxr for quality, and a pass-through.

Every resampler keeps its output on the input's time axis: output sample k is the signal at time k/out_rate.
"Held back" audio is input whose effect has not yet been emitted; ``flush()`` emits it as if silence followed.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import soxr
from numpy.lib.stride_tricks import sliding_window_view

from relay.audio.fir import FilterBank, filter_bank
from relay.audio.pcm import Float32Array, float_to_pcm16, pcm16_to_array, validate_rate

#: Values of the RELAY_RESAMPLER setting, default first.
RESAMPLER_QUALITIES: tuple[str, ...] = ("low-latency", "hq", "vhq")

_SOXR_QUALITY = {"hq": "HQ", "vhq": "VHQ"}


@runtime_checkable
class Resampler(Protocol):
    """A streaming PCM16LE mono resampler, one per audio direction of a session."""

    in_rate: int
    out_rate: int

    def process(self, pcm: bytes) -> bytes:
        """Resample the next chunk (even byte count); return whatever output is ready (may be empty)."""
        ...

    def flush(self) -> bytes:
        """Emit everything held back, as if silence followed; the stream then goes on (see module doc)."""
        ...

    def reset(self) -> None:
        """Drop held-back audio and history: the next chunk starts a new stream at time zero."""
        ...


class PassThrough:
    """Equal rates: returns input unchanged and holds nothing back."""

    def __init__(self, rate: int) -> None:
        self.in_rate = rate
        self.out_rate = rate

    def process(self, pcm: bytes) -> bytes:
        """Return ``pcm`` itself."""
        return pcm

    def flush(self) -> bytes:
        """Nothing is ever held back."""
        return b""

    def reset(self) -> None:
        """Nothing to drop."""


class PolyphaseResampler:
    """Low-latency resampler: a short linear-phase Kaiser windowed sinc, taken at each output's exact phase.

    It holds back only the filter's half length (its group delay, under 1 ms for 44.1/48 kHz to 24 kHz). The
    last ``taps`` input samples are carried across calls, so any chunking gives the same samples as one pass.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._bank: FilterBank = filter_bank(in_rate, out_rate)
        self._windows = self._bank.taps
        self.reset()

    @property
    def bank(self) -> FilterBank:
        """The shared filter bank (design figures, for measurement and documentation)."""
        return self._bank

    def reset(self) -> None:
        """Forget all input: zero history before the next sample, output index back to 0."""
        bank = self._bank
        self._buf = np.zeros(bank.half - 1, dtype=np.float32)
        # Input position (relative to the current phase cycle) of self._buf[0].
        self._buf0 = -(bank.half - 1)
        # Index of the next output sample within the current phase cycle (0 <= _k < up).
        self._k = 0

    def process(self, pcm: bytes) -> bytes:
        """Resample a chunk; returns every output sample whose input window is complete."""
        if not pcm:
            return b""
        buf = np.concatenate((self._buf, pcm16_to_array(pcm)), dtype=np.float32)
        return self._run(buf, len(buf))

    def flush(self) -> bytes:
        """Emit the held-back outputs by padding with silence; the real history stays for the next chunk."""
        pad = np.zeros(self._bank.half, dtype=np.float32)
        return self._run(np.concatenate((self._buf, pad)), len(self._buf))

    def _run(self, buf: np.ndarray, n_real: int) -> bytes:
        bank = self._bank
        half = bank.half
        end = self._buf0 + len(buf)
        # Output k is ready when its last tap, pos[k] + half, has arrived: pos[k] <= end - 1 - half.
        k1 = -((-(end - half) * bank.up) // bank.down)
        k0 = self._k
        out = b""
        if k1 > k0:
            pos, _, coefs = bank.positions(k0, k1)
            starts = pos - (half - 1 + self._buf0)
            windows = sliding_window_view(buf, self._windows)[starts]
            out = float_to_pcm16(np.einsum("ij,ij->i", windows, coefs))
        else:
            k1 = k0
        first_needed = bank.next_position(k1) - (half - 1)
        self._buf = buf[first_needed - self._buf0 : n_real]
        # Rebase to the start of the current phase cycle so that indices stay small forever.
        cycles = k1 // bank.up
        self._k = k1 - cycles * bank.up
        self._buf0 = first_needed - cycles * bank.down
        return out


class SoxrResampler:
    """soxr ``ResampleStream`` at HQ or VHQ: better stop-band and wider pass-band, but holds back 20-40 ms."""

    def __init__(self, in_rate: int, out_rate: int, quality: str) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        # float32 in int16 scale, rounded here: soxr's own int16 output adds random dither, which would make
        # the output depend on chunking and on the run.
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)

    def process(self, pcm: bytes) -> bytes:
        """Resample a chunk; soxr returns what its filter has completed."""
        if not pcm:
            return b""
        out: Float32Array = self._stream.resample_chunk(pcm16_to_array(pcm).astype(np.float32))
        return float_to_pcm16(out)

    def flush(self) -> bytes:
        """Drain soxr, then restart its stream: the next chunk begins a fresh segment at time zero."""
        out: Float32Array = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._stream.clear()
        return float_to_pcm16(out)

    def reset(self) -> None:
        """Drop everything soxr holds."""
        self._stream.clear()


def make_resampler(in_rate: int, out_rate: int, quality: str = "low-latency") -> Resampler:
    """Build a streaming PCM16LE mono resampler for one direction of one session.

    ``quality`` is one of RESAMPLER_QUALITIES. Rates are integers in 8000..192000 Hz; anything else raises
    ValueError. Equal rates give a pass-through whatever the quality.
    """
    in_rate = validate_rate(in_rate, "input sample rate")
    out_rate = validate_rate(out_rate, "output sample rate")
    if quality not in RESAMPLER_QUALITIES:
        choices = ", ".join(RESAMPLER_QUALITIES)
        raise ValueError(f"resampler quality must be one of {choices}; got {quality!r}")
    if in_rate == out_rate:
        return PassThrough(in_rate)
    if quality == "low-latency":
        return PolyphaseResampler(in_rate, out_rate)
    return SoxrResampler(in_rate, out_rate, _SOXR_QUALITY[quality])
