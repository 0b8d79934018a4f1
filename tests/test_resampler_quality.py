"""Signal quality and delay of the resamplers, measured from real signals (tones, chirps, espeak-ng speech).

The figures come from relay.audio.measure, the same code that ``realtime-relay bench resample`` prints.
"""

from __future__ import annotations

from collections import deque
from functools import partial

import numpy as np
import pytest

from relay.audio import make_resampler
from relay.audio import measure as m
from relay.audio.fir import filter_bank
from relay.bench.resample import main as bench_resample
from tests.audio_signals import chirp, speech_wav

API_RATE = 24000
CLIENT_RATES = (8000, 16000, 22050, 44100, 48000, 96000)
OUTPUT_RATES = (44100, 48000)
# Pairs the delay target names explicitly; every other pair is held to the same bound below.
DELAY_TARGET_RATES = (44100, 48000)
PAIRS = [(r, API_RATE) for r in CLIENT_RATES] + [(API_RATE, r) for r in OUTPUT_RATES]


@pytest.fixture(autouse=True)
def _filter_designed_by_each_test() -> None:
    """Each measurement designs its filter itself, so that it measures the design code and not a cached table."""
    filter_bank.cache_clear()


def _low_latency(in_rate: int, out_rate: int) -> m.ResamplerFactory:
    return partial(make_resampler, in_rate, out_rate, "low-latency")


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_default_is_flat_in_the_speech_band(in_rate: int, out_rate: int) -> None:
    worst = m.flatness_db(_low_latency(in_rate, out_rate))
    assert worst <= 0.5, (
        f"{in_rate}->{out_rate}: gain deviates {worst:.3f} dB below {m.flat_band_hz(in_rate, out_rate)} Hz"
    )


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_default_rejects_aliases_and_images(in_rate: int, out_rate: int) -> None:
    rejection = m.alias_rejection_db(_low_latency(in_rate, out_rate))
    assert rejection >= 60, f"{in_rate}->{out_rate}: rejection only {rejection:.1f} dB"


def test_a_tone_above_12_khz_does_not_alias_into_the_output() -> None:
    """The concrete failure of an unfiltered resampler: 15 kHz at 48 kHz would come out as 9 kHz."""
    x = m.tone(15000, 48000, 0.25, -1.0)
    y = m.run_stream(make_resampler(48000, API_RATE), x, 960).astype(np.float64)
    amp, _ = m.fit_tone(y[480:-480], 9000, API_RATE)
    assert 20 * np.log10(max(amp, 1e-9) / (32767 * 10 ** (-1 / 20))) <= -60


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_default_1khz_snr(in_rate: int, out_rate: int) -> None:
    snr = m.tone_snr_db(_low_latency(in_rate, out_rate), 1000.0)
    assert snr >= 80, f"{in_rate}->{out_rate}: 1 kHz SNR {snr:.1f} dB"


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_default_buffering_delay(in_rate: int, out_rate: int) -> None:
    stats = m.buffering_delay(_low_latency(in_rate, out_rate))
    # Output is on the input's time axis (an impulse emerges where it went in) ...
    assert abs(stats.alignment) < 0.1 / out_rate
    # ... and what the filter needs to look ahead is held back: positive, and at most 2 ms.
    assert 0 < stats.min <= stats.mean <= stats.max
    assert stats.mean <= 2e-3, f"{in_rate}->{out_rate}: mean delay {stats.mean * 1e3:.3f} ms"
    assert stats.max <= 2e-3, f"{in_rate}->{out_rate}: max delay {stats.max * 1e3:.3f} ms"


@pytest.mark.parametrize("in_rate", DELAY_TARGET_RATES)
def test_default_holds_back_far_less_than_soxr_hq(in_rate: int) -> None:
    fast = m.buffering_delay(_low_latency(in_rate, API_RATE))
    hq = m.buffering_delay(partial(make_resampler, in_rate, API_RATE, "hq"))
    assert fast.mean <= 2e-3
    assert hq.mean > 5 * fast.mean, (hq.mean, fast.mean)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_default_matches_soxr_vhq_on_speech_and_a_sweep(in_rate: int, out_rate: int) -> None:
    """In the pass band the short filter gives what the best soxr setting gives, on the same time axis."""
    band = m.flat_band_hz(in_rate, out_rate)
    for name, x in (("speech", speech_wav(rate=in_rate)), ("chirp", chirp(in_rate, 1.0, 100.0, band))):
        y = m.run_stream(make_resampler(in_rate, out_rate), x, in_rate // 50)
        ref = m.run_stream(make_resampler(in_rate, out_rate, "vhq"), x)
        assert len(y) == len(ref)
        agreement = m.band_agreement_db(y, ref, out_rate, band)
        assert agreement >= 60, f"{name} {in_rate}->{out_rate}: {agreement:.1f} dB below {band} Hz"
        # A misaligned output would fail the agreement above; check the lag explicitly too.
        a, b = y.astype(np.float64), ref.astype(np.float64)
        xcorr = np.fft.irfft(np.fft.rfft(a, 2 * len(a)) * np.conj(np.fft.rfft(b, 2 * len(b))))
        assert int(np.argmax(xcorr)) == 0


@pytest.mark.parametrize("quality", ["hq", "vhq"])
@pytest.mark.parametrize("in_rate", (16000, 44100, 48000))
def test_soxr_settings_are_clean(quality: str, in_rate: int) -> None:
    make = partial(make_resampler, in_rate, API_RATE, quality)
    assert m.flatness_db(make) <= 0.5
    assert m.alias_rejection_db(make) >= 80
    assert m.tone_snr_db(make) >= 85


class _HoldBack:
    """A pass-through that keeps the last ``n`` samples: holds back exactly n/rate seconds."""

    def __init__(self, rate: int, n: int) -> None:
        self.in_rate = self.out_rate = rate
        self._fifo: deque[int] = deque()
        self._n = n

    def process(self, pcm: bytes) -> bytes:
        self._fifo.extend(np.frombuffer(pcm, dtype=np.int16).tolist())
        out = [self._fifo.popleft() for _ in range(max(len(self._fifo) - self._n, 0))]
        return np.asarray(out, dtype=np.int16).tobytes()

    def flush(self) -> bytes:
        out = np.asarray(list(self._fifo), dtype=np.int16).tobytes()
        self._fifo.clear()
        return out

    def reset(self) -> None:
        self._fifo.clear()


class _Late(_HoldBack):
    """Keeps pace with the input but its content is ``n`` samples late, as an uncompensated causal filter is."""

    def __init__(self, rate: int, n: int) -> None:
        super().__init__(rate, n)
        self._start = n

    def process(self, pcm: bytes) -> bytes:
        if self._start:
            self._fifo.extend([0] * self._start)
            self._start = 0
        return super().process(pcm)

    def reset(self) -> None:
        super().reset()
        self._start = self._n


def test_delay_measure_sees_buffering_and_uncompensated_delay() -> None:
    """The measure itself: zero for a pass-through, n/rate for audio held in a buffer or shifted late."""
    rate = 48000
    through = m.buffering_delay(partial(make_resampler, rate, rate), trials=4)
    # The int16 rounding of the test pulse leaves a residue far below one sample (20.8 us at 48 kHz).
    assert through.mean == pytest.approx(0, abs=1e-7)
    assert through.max == pytest.approx(0, abs=1e-7)
    held = m.buffering_delay(partial(_HoldBack, rate, 48), trials=4)
    assert held.mean == pytest.approx(1e-3, abs=1e-9)
    late = m.buffering_delay(partial(_Late, rate, 24), trials=4)
    assert late.alignment == pytest.approx(0.5e-3, abs=1e-6)
    assert late.mean == pytest.approx(0.5e-3, abs=1e-6)


def test_bench_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_resample(["--frames", "20"]) == 0
    out = capsys.readouterr().out
    assert "CPU:" in out and "numpy" in out and "soxr" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("in ", "out "))]
    assert len(rows) == 8 * 3
    for row in rows:
        # Every figure is a number that was measured; a lost pulse or a failed fit would show as nan.
        assert all(np.isfinite(float(v)) for v in row[3:]), row
