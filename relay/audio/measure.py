"""Measuring a resampler from real signals: shared by the tests and by ``realtime-relay bench resample``.

Every figure is computed by running a resampler, never taken from its design. Definitions:

- Buffering delay: at a frame boundary, how far the content of the output emitted so far lags behind the input
  received so far. Output sample k carries the signal of input time k/out_rate - alignment, where alignment is
  where an impulse's centre emerges relative to where it entered (a filter that does not compensate its group
  delay shows it here). So the lag at a boundary is ``n_in/in_rate - (n_out/out_rate - alignment)``: the group
  delay of a linear-phase filter plus anything held in buffers. It is sampled at 20 ms frame boundaries placed
  at random phases of the stream, and reported as mean and max.
- Flatness: the largest deviation (dB) of a tone's gain from 0 dB over the pass band tested.
- Alias rejection (downsampling): input tones from the output Nyquist to the input Nyquist, i.e. everything
  that would alias; the smallest ratio of input to output power (dB). An int16 output cannot show less than
  its rounding noise, so about 98 dB is the most this can report. For upsampling the input holds nothing
  that can alias, so the same column reports image rejection: a pass-band tone's power over the power of
  everything else in the output (dB, smallest over the tones).
- SNR: a 1 kHz tone at -1 dBFS; power of the fitted tone over the power of everything else (dB).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from relay.audio.pcm import Int16Array
from relay.audio.resampler import Resampler

ResamplerFactory = Callable[[], Resampler]
FloatArray = npt.NDArray[np.float64]

FULL_SCALE = 32767.0
#: RMS of int16 rounding noise (1/sqrt(12) LSB): an output quieter than this cannot be told from silence, so
#: rejections are reported against at least this level (about 98 dB for a -1 dBFS tone).
ROUNDING_RMS = 1 / np.sqrt(12)
#: Output trimmed at each end before fitting, so that start-up and flush edges do not count.
EDGE_SECONDS = 0.02
TONE_SECONDS = 0.25


def tone(freq: float, rate: int, seconds: float, level_dbfs: float = -1.0, phase: float = 0.0) -> Int16Array:
    """A sine at ``level_dbfs`` (peak, relative to int16 full scale), rounded to int16."""
    t = np.arange(round(rate * seconds)) / rate
    x = FULL_SCALE * 10 ** (level_dbfs / 20) * np.sin(2 * np.pi * freq * t + phase)
    return np.rint(x).astype(np.int16)


def run_stream(resampler: Resampler, samples: Int16Array, chunks: int | Iterable[int] = 0) -> Int16Array:
    """Feed ``samples`` in chunks (an int size, sizes that sum to the length, or 0 for one call), then flush."""
    n = len(samples)
    if isinstance(chunks, int):
        size = chunks or max(n, 1)
        sizes: Iterable[int] = [size] * (n // size) + ([n % size] if n % size else [])
    else:
        sizes = chunks
    out: list[bytes] = []
    i = 0
    for size in sizes:
        out.append(resampler.process(samples[i : i + size].tobytes()))
        i += size
    if i != n:
        raise ValueError(f"chunk sizes sum to {i}, not {n}")
    out.append(resampler.flush())
    return np.frombuffer(b"".join(out), dtype=np.int16)


def fit_tone(y: npt.ArrayLike, freq: float, rate: int) -> tuple[float, float]:
    """Least-squares fit of a sine at ``freq`` (plus DC): returns (amplitude, rms of what is left)."""
    y = np.asarray(y, dtype=np.float64)
    w = 2 * np.pi * freq * np.arange(len(y)) / rate
    basis = np.column_stack((np.sin(w), np.cos(w), np.ones_like(w)))
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    residual = y - basis @ coef
    return float(np.hypot(coef[0], coef[1])), float(np.sqrt(np.mean(residual**2)))


def _steady(y: Int16Array, rate: int) -> Int16Array:
    edge = round(EDGE_SECONDS * rate)
    return y[edge : len(y) - edge]


def _db(ratio: float) -> float:
    return float(20 * np.log10(max(ratio, 1e-12)))


def tone_gain_db(make: ResamplerFactory, freq: float, level_dbfs: float = -3.0) -> float:
    """Gain (dB) of a steady tone through a fresh resampler."""
    r = make()
    x = tone(freq, r.in_rate, TONE_SECONDS, level_dbfs)
    y = _steady(run_stream(r, x, r.in_rate // 50), r.out_rate)
    amp, _ = fit_tone(y, freq, r.out_rate)
    return _db(amp / (FULL_SCALE * 10 ** (level_dbfs / 20)))


def flat_band_hz(in_rate: int, out_rate: int, max_hz: float = 8000.0) -> float:
    """Upper edge of the band checked for flatness: 8 kHz, or 0.4 of the lower rate when that is less."""
    return min(max_hz, 0.4 * min(in_rate, out_rate))


def flatness_db(make: ResamplerFactory, max_hz: float = 8000.0, points: int = 16) -> float:
    """Largest |gain| (dB) over tones from 50 Hz to ``flat_band_hz`` (log spaced, both ends included)."""
    probe = make()
    top = flat_band_hz(probe.in_rate, probe.out_rate, max_hz)
    freqs = np.geomspace(50.0, top, points)
    return max(abs(tone_gain_db(make, float(f))) for f in freqs)


def alias_rejection_db(make: ResamplerFactory, points: int = 12) -> float:
    """Smallest rejection (dB) of what would alias (downsampling) or of images (upsampling); see module doc."""
    probe = make()
    in_rate, out_rate = probe.in_rate, probe.out_rate
    level = -1.0
    worst = np.inf
    if in_rate > out_rate:
        for f in np.linspace(out_rate / 2, 0.98 * in_rate / 2, points):
            r = make()
            x = tone(float(f), in_rate, TONE_SECONDS, level)
            y = _steady(run_stream(r, x, in_rate // 50), out_rate).astype(np.float64)
            x_rms = FULL_SCALE * 10 ** (level / 20) / np.sqrt(2)
            worst = min(worst, _db(x_rms / max(float(np.sqrt(np.mean(y**2))), ROUNDING_RMS)))
    else:
        for f in np.linspace(1000.0, 0.4 * in_rate, points):
            worst = min(worst, tone_snr_db(make, float(f), level))
    return float(worst)


def tone_snr_db(make: ResamplerFactory, freq: float = 1000.0, level_dbfs: float = -1.0) -> float:
    """Fitted tone power over the power of everything else in the output (dB)."""
    r = make()
    x = tone(freq, r.in_rate, TONE_SECONDS, level_dbfs)
    y = _steady(run_stream(r, x, r.in_rate // 50), r.out_rate)
    amp, resid = fit_tone(y, freq, r.out_rate)
    return _db(amp / np.sqrt(2) / max(resid, 1e-9))


def pulse(rate: int, centre: float, band_hz: float, length: int, amplitude: float = 16000.0) -> Int16Array:
    """A band-limited impulse: a Hann-windowed sinc of bandwidth ``band_hz`` centred at sample ``centre``.

    Band-limiting lets even a resampler without an anti-alias filter carry it (a one-sample click could fall
    between the samples a decimator keeps); the pulse is symmetric about ``centre``, fractional or not.
    """
    n = np.arange(length) - centre
    width = 4.0 / band_hz * rate  # +-2 cycles of the band edge
    window = np.where(np.abs(n) < width / 2, 0.5 + 0.5 * np.cos(2 * np.pi * n / width), 0.0)
    out: Int16Array = np.rint(amplitude * np.sinc(2 * band_hz / rate * n) * window).astype(np.int16)
    return out


def impulse_alignment_seconds(make: ResamplerFactory, count: int = 8, seed: int = 0) -> float:
    """Where pulses' centres (energy centroid) emerge relative to where they entered, averaged (seconds)."""
    r = make()
    in_rate, out_rate = r.in_rate, r.out_rate
    rng = np.random.default_rng(seed)
    spacing = round(0.05 * in_rate)
    band = 0.2 * min(in_rate, out_rate)
    x = np.zeros(spacing * (count + 1), dtype=np.int16)
    centres = []
    for i in range(count):
        centre = i * spacing + spacing / 2 + float(rng.uniform(0, 64))
        x += pulse(in_rate, centre, band, len(x))
        centres.append(centre / in_rate)
    y = run_stream(r, x, in_rate // 50).astype(np.float64) ** 2
    half_window = round(0.02 * out_rate)
    offsets = []
    for t_in in centres:
        c = round(t_in * out_rate)
        lo, hi = max(c - half_window, 0), min(c + half_window, len(y))
        seg = y[lo:hi]
        energy = float(np.sum(seg))
        if energy == 0:
            raise ValueError(f"no pulse came out near {t_in:.3f} s: the resampler lost it")
        centre_out = (lo + float(np.sum(np.arange(len(seg)) * seg)) / energy) / out_rate
        offsets.append(centre_out - t_in)
    return float(np.mean(offsets))


@dataclass(frozen=True)
class DelayStats:
    """Buffering delay over random frame boundaries (seconds) and the impulse alignment it includes."""

    mean: float
    max: float
    min: float
    alignment: float
    boundaries: int


def buffering_delay(
    make: ResamplerFactory,
    frame_seconds: float = 0.02,
    trials: int = 20,
    frames_per_trial: int = 12,
    seed: int = 0,
) -> DelayStats:
    """Content lag of the output behind the input at frame boundaries (see module doc)."""
    probe = make()
    in_rate, out_rate = probe.in_rate, probe.out_rate
    alignment = impulse_alignment_seconds(make, seed=seed)
    rng = np.random.default_rng(seed)
    frame = max(round(frame_seconds * in_rate), 1)
    warmup = round(0.1 * in_rate)
    lags: list[float] = []
    for _ in range(trials):
        r = make()
        # Random first chunk: later boundaries fall at a random phase of the output sample grid.
        sizes = [int(rng.integers(1, frame + 1)), *([frame] * frames_per_trial)]
        signal = rng.normal(0.0, 3000.0, sum(sizes)).astype(np.int16)
        n_in = n_out = 0
        for size in sizes:
            n_out += len(r.process(signal[n_in : n_in + size].tobytes())) // 2
            n_in += size
            if n_in >= warmup:
                lags.append(n_in / in_rate - (n_out / out_rate - alignment))
    arr = np.asarray(lags)
    return DelayStats(float(arr.mean()), float(arr.max()), float(arr.min()), alignment, len(lags))


def frame_cost_us(
    make: ResamplerFactory, frames: int = 2000, frame_seconds: float = 0.02, seed: int = 0
) -> float:
    """Median wall time (µs) of ``process`` on one frame of noise-like audio."""
    r = make()
    frame = round(frame_seconds * r.in_rate)
    rng = np.random.default_rng(seed)
    data = [rng.normal(0, 3000, frame).astype(np.int16).tobytes() for _ in range(16)]
    times = np.empty(frames)
    for i in range(frames):
        chunk = data[i % len(data)]
        t0 = time.perf_counter_ns()
        r.process(chunk)
        times[i] = time.perf_counter_ns() - t0
    return float(np.median(times) / 1000)


def band_agreement_db(y: npt.ArrayLike, reference: npt.ArrayLike, rate: int, max_hz: float) -> float:
    """Reference power over difference power (dB), both restricted to 0..``max_hz`` (FFT band mask)."""
    a = np.asarray(y, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    n = min(len(a), len(b))
    spec_a = np.fft.rfft(a[:n])
    spec_b = np.fft.rfft(b[:n])
    band = np.fft.rfftfreq(n, 1 / rate) <= max_hz
    ref_power = float(np.sum(np.abs(spec_b[band]) ** 2))
    diff_power = float(np.sum(np.abs(spec_a[band] - spec_b[band]) ** 2))
    return float(10 * np.log10(ref_power / max(diff_power, 1e-12)))
