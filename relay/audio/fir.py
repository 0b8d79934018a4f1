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

#: Largest one-cycle matrix (floats) for which a rate pair is run as one matrix product per frame; rarer rate
#: pairs with longer phase cycles gather each output's window instead.
MAX_CYCLE_MATRIX = 1 << 17

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

    Output k sits at input position p = k*down/up. It is the dot product of ``rows[row(k)]`` with the ``taps``
    input samples starting at ``floor(p) - half + 1``. Outputs repeat their phases every ``up`` outputs, during
    which the input advances by ``down`` samples; ``cycle`` (``span`` x ``up``), when present, holds one whole
    cycle as a banded matrix acting on the ``span`` input samples that start at ``-half + 1``.
    """

    in_rate: int
    out_rate: int
    up: int
    down: int
    half: int
    taps: int
    spec: LowPassSpec
    rows: Float32Array
    cycle: Float32Array | None

    @property
    def span(self) -> int:
        """Input samples one phase cycle reads, counted from the first tap of its first output."""
        return self.position(self.up - 1) + self.taps

    @property
    def delay_seconds(self) -> float:
        """Design group delay: the look-ahead of the linear-phase kernel."""
        return self.half / self.in_rate

    def position(self, k: int) -> int:
        """floor(k*down/up): the integer input position of output k."""
        return (k * self.down) // self.up

    def windows(self, k0: int, k1: int) -> tuple[IntArray, Float32Array]:
        """Integer input positions and coefficient rows of outputs k0..k1-1."""
        num = np.arange(k0, k1, dtype=np.int64) * self.down
        pos = num // self.up
        frac = num - pos * self.up
        phases = len(self.rows) - 1
        if phases != self.up:
            # Quantised phases: nearest of ``phases`` positions; row ``phases`` is the kernel at 1.0.
            frac = (frac * (2 * phases) + self.up) // (2 * self.up)
        return pos, self.rows[frac]


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


def _cycle_matrix(rows: Float32Array, up: int, down: int, taps: int) -> Float32Array:
    span = ((up - 1) * down) // up + taps
    cycle = np.zeros((span, up), dtype=np.float32)
    for r in range(up):
        pos, phase = divmod(r * down, up)
        cycle[pos : pos + taps, r] = rows[phase]
    cycle.flags.writeable = False
    return cycle


@lru_cache(maxsize=32)
def filter_bank(in_rate: int, out_rate: int) -> FilterBank:
    """Build (once per rate pair) the polyphase table and, when small enough, the one-cycle matrix."""
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    spec = low_latency_spec(in_rate, out_rate)
    # At least enough look-ahead that one output step never skips past the retained history.
    half = max(math.ceil(spec.half_length_seconds * in_rate), math.ceil(down / up) + 1)
    taps = 2 * half
    phases = up if up <= MAX_PHASES else MAX_PHASES
    rows = _kernel_rows(spec, in_rate, half, phases)
    span = ((up - 1) * down) // up + taps
    small = phases == up and span * up <= MAX_CYCLE_MATRIX
    cycle = _cycle_matrix(rows, up, down, taps) if small else None
    return FilterBank(in_rate, out_rate, up, down, half, taps, spec, rows, cycle)
