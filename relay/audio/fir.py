"""Polyphase windowed-sinc filter banks for the low-latency resampler.

A continuous Kaiser-windowed sinc low-pass is sampled at every fractional position an output sample can fall
on between two input samples, so one table serves the anti-alias (downsampling) and anti-imaging (upsampling)
jobs with exact timing. Tables depend only on the rate pair and are shared by all streams through a cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from relay.audio.pcm import Float32Array

#: Stop-band attenuation the low-pass is designed for (dB). The measured alias rejection must stay >= 60 dB.
DESIGN_ATTENUATION_DB = 80.0

#: Above this many phases the table is quantised to this many fractional positions (timing error <= 1/8192
#: input sample, i.e. < -85 dB error at 8 kHz), so that odd rate pairs do not need huge tables.
MAX_PHASES = 4096

#: Outputs whose positions and coefficient rows are precomputed past one phase cycle (covers typical frames).
PRECOMPUTED_OUTPUTS = 4096

#: Largest precomputed coefficient sequence (floats) kept per rate pair; beyond it rows are gathered per call.
MAX_PRECOMPUTED_COEFS = 1 << 20

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class LowPassSpec:
    """Band edges (Hz) and stop-band attenuation (dB) of the resampling low-pass."""

    passband_hz: float
    stopband_hz: float
    attenuation_db: float

    @property
    def cutoff_hz(self) -> float:
        """The -6 dB point of the windowed sinc: midway between the band edges."""
        return (self.passband_hz + self.stopband_hz) / 2

    @property
    def half_length_seconds(self) -> float:
        """Half the kernel duration (= its group delay), from Kaiser's length formula for this transition."""
        transition = 2 * math.pi * (self.stopband_hz - self.passband_hz)
        return (self.attenuation_db - 7.95) / (2.285 * transition) / 2


def low_latency_spec(in_rate: int, out_rate: int) -> LowPassSpec:
    """Band edges for a rate pair.

    Downsampling keeps 0..0.375*out (9 kHz at 24 kHz) and stops everything from the output Nyquist up, so
    nothing above it can alias. Upsampling keeps 0..0.4*in and stops from the first image edge (or the output
    Nyquist, whichever is lower), so images of pass-band content are removed.
    """
    if in_rate > out_rate:
        return LowPassSpec(0.375 * out_rate, 0.5 * out_rate, DESIGN_ATTENUATION_DB)
    return LowPassSpec(0.4 * in_rate, min(0.6 * in_rate, 0.5 * out_rate), DESIGN_ATTENUATION_DB)


def kaiser_beta(attenuation_db: float) -> float:
    """Kaiser's window shape parameter for a given stop-band attenuation."""
    if attenuation_db > 50:
        return 0.1102 * (attenuation_db - 8.7)
    if attenuation_db >= 21:
        return float(0.5842 * (attenuation_db - 21) ** 0.4 + 0.07886 * (attenuation_db - 21))
    return 0.0


@dataclass(frozen=True)
class FilterBank:
    """Everything a stream needs for one rate pair; immutable and shared.

    Output sample k sits at input position p = k*down/up. It is the dot product of ``rows[row[k]]`` with the
    ``taps`` input samples starting at ``floor(p) - half + 1``. ``pos[k]`` is ``floor(p)``.
    """

    in_rate: int
    out_rate: int
    up: int
    down: int
    half: int
    taps: int
    spec: LowPassSpec
    rows: Float32Array
    pos: IntArray
    row: IntArray
    coefs: Float32Array | None

    def positions(self, k0: int, k1: int) -> tuple[IntArray, IntArray, Float32Array]:
        """Integer input positions, phase rows and coefficient rows of outputs k0..k1-1."""
        if k1 <= len(self.pos):
            row = self.row[k0:k1]
            coefs = self.rows[row] if self.coefs is None else self.coefs[k0:k1]
            return self.pos[k0:k1], row, coefs
        pos, row = _sequence(k0, k1, self.up, self.down, len(self.rows) - 1)
        return pos, row, self.rows[row]

    def next_position(self, k: int) -> int:
        """floor(k*down/up): the integer input position of output k."""
        return (k * self.down) // self.up


def _sequence(k0: int, k1: int, up: int, down: int, phases: int) -> tuple[IntArray, IntArray]:
    num = np.arange(k0, k1, dtype=np.int64) * down
    pos = num // up
    frac = num - pos * up
    if phases == up:
        return pos, frac
    # Quantised phases: round to the nearest of ``phases`` positions; row ``phases`` is the kernel at 1.0.
    return pos, (frac * (2 * phases) + up) // (2 * up)


def _kernel_rows(spec: LowPassSpec, in_rate: int, half: int, phases: int) -> Float32Array:
    fc = spec.cutoff_hz / in_rate  # cycles per input sample
    beta = kaiser_beta(spec.attenuation_db)
    frac = np.arange(phases + 1, dtype=np.float64)[:, None] / phases
    tau = frac + (half - 1) - np.arange(2 * half, dtype=np.float64)[None, :]
    window = np.i0(beta * np.sqrt(np.clip(1.0 - (tau / half) ** 2, 0.0, None))) / np.i0(beta)
    kernel = 2 * fc * np.sinc(2 * fc * tau) * window
    # Exact unity DC gain on every phase, so no phase-dependent ripple reaches the output.
    kernel /= kernel.sum(axis=1, keepdims=True)
    rows = kernel.astype(np.float32)
    rows.flags.writeable = False
    return rows


@lru_cache(maxsize=32)
def filter_bank(in_rate: int, out_rate: int) -> FilterBank:
    """Build (once per rate pair) the polyphase table and the precomputed output positions."""
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    spec = low_latency_spec(in_rate, out_rate)
    half = max(math.ceil(spec.half_length_seconds * in_rate), math.ceil(down / up) + 1)
    phases = up if up <= MAX_PHASES else MAX_PHASES
    rows = _kernel_rows(spec, in_rate, half, phases)
    pos, row = _sequence(0, up + PRECOMPUTED_OUTPUTS, up, down, phases)
    coefs = None
    if len(row) * 2 * half <= MAX_PRECOMPUTED_COEFS:
        # A contiguous per-output copy lets a frame use a slice instead of a gather.
        coefs = np.ascontiguousarray(rows[row])
        coefs.flags.writeable = False
    pos.flags.writeable = False
    row.flags.writeable = False
    return FilterBank(in_rate, out_rate, up, down, half, 2 * half, spec, rows, pos, row, coefs)
