"""Streaming PCM16 mono resamplers: a low-latency polyphase path, soxr for quality, and a pass-through.

Every resampler keeps its output on the input's time axis: output sample k is the signal at time k/out_rate.
"Held back" audio is input whose effect has not yet been emitted. ``flush()`` (end of turn, commit, rate
change) emits every output sample that lies before the end of the input received, taking what would follow as
silence, so after it the output length is round(n_in * out_rate / in_rate) +- 1. What happens next:

- low-latency: the stream goes on, on the same time axis and sample count. The last input samples stay as
  filter history, so a next turn starts without a click; only the output of the last half filter length
  before the flush point (under 1 ms at 44.1/48 kHz) was computed without the audio that followed it.
- hq / vhq: soxr cannot continue after its final call, so its stream is cleared and the next chunk starts a
  fresh segment at time zero, as after ``reset()``.

``reset()`` (input_audio_buffer.clear) drops everything held back and all history in every case.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import soxr

from relay.audio.fir import FilterBank, filter_bank
from relay.audio.pcm import Float32Array, Int16Array, float_to_pcm16, pcm16_to_array, validate_rate

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
        """Emit everything held back, as if silence followed; what comes next depends on the class (module doc)."""
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
    input that later outputs still need is carried across calls, so any chunking gives the same samples as one
    pass (to rounding of the float32 sums).
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._bank: FilterBank = filter_bank(in_rate, out_rate)
        self.reset()

    @property
    def bank(self) -> FilterBank:
        """The shared filter bank (design figures, for measurement and documentation)."""
        return self._bank

    def reset(self) -> None:
        """Forget all input: zero history before the next sample, output index back to 0."""
        half = self._bank.half
        # Positions are counted from the start of the current phase cycle: output k (0 <= k < up) sits at
        # input position k*down/up, and self._hist[0] is input position self._hist0.
        self._hist: Float32Array = np.zeros(half - 1, dtype=np.float32)
        self._hist0 = -(half - 1)
        self._k = 0

    def process(self, pcm: bytes) -> bytes:
        """Resample a chunk; returns every output sample whose input window is complete."""
        if not pcm:
            return b""
        return self._run(pcm16_to_array(pcm), 0)

    def flush(self) -> bytes:
        """Emit the held-back outputs by padding with silence; the real history stays for the next chunk."""
        return self._run(np.zeros(0, dtype=np.int16), self._bank.half)

    def _run(self, x: Int16Array, pad: int) -> bytes:
        bank = self._bank
        half, up, down = bank.half, bank.up, bank.down
        n_real = len(self._hist) + len(x)
        end = self._hist0 + n_real + pad
        # Output k is ready once its last tap, position(k) + half, has arrived.
        k0 = self._k
        k1 = max(k0, -((-(end - half) * up) // down))
        if bank.cycle is not None:
            # Whole phase cycles from the current cycle's start; outputs before k0 or from k1 on are discarded.
            cycles = -(-k1 // up)
            size = max(n_real + pad, (cycles - 1) * down + bank.span)
        else:
            cycles = 0
            size = n_real + pad
        buf = np.zeros(size, dtype=np.float32)
        buf[: len(self._hist)] = self._hist
        buf[len(self._hist) : n_real] = x
        out = b""
        if k1 > k0:
            y = self._cycles(buf, cycles) if bank.cycle is not None else self._gather(buf, k0, k1)
            out = float_to_pcm16(y[k0:k1] if bank.cycle is not None else y)
        # Keep input from the first tap of output k1 (cycle mode: of its cycle's first output), then rebase.
        done = k1 // up
        first = done * down - (half - 1) if bank.cycle is not None else bank.position(k1) - (half - 1)
        self._hist = buf[first - self._hist0 : n_real]
        self._hist0 = first - done * down
        self._k = k1 - done * up
        return out

    def _cycles(self, buf: Float32Array, cycles: int) -> Float32Array:
        bank = self._bank
        cycle = bank.cycle
        assert cycle is not None
        item = buf.itemsize
        # Overlapping rows: row c is the span of input that cycle c reads (a view, no copy).
        view = np.ndarray((cycles, bank.span), np.float32, buf, 0, (bank.down * item, item))
        if bank.up == 1:
            # einsum walks the overlapping view directly; matmul would first copy it.
            y: Float32Array = np.einsum("ij,j->i", view, cycle[:, 0])
            return y
        return (np.ascontiguousarray(view) @ cycle).reshape(-1)

    def _gather(self, buf: Float32Array, k0: int, k1: int) -> Float32Array:
        bank = self._bank
        pos, coefs = bank.windows(k0, k1)
        item = buf.itemsize
        view = np.ndarray((len(buf) - bank.taps + 1, bank.taps), np.float32, buf, 0, (item, item))
        y: Float32Array = np.einsum("ij,ij->i", view[pos - (bank.half - 1) - self._hist0], coefs)
        return y


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
