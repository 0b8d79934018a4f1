"""Streaming behaviour of the resamplers: chunking invariance, sample count, flush/reset, validation."""

from __future__ import annotations

import numpy as np
import pytest

from relay.audio import (
    RESAMPLER_QUALITIES,
    Resampler,
    make_resampler,
    pcm16_duration_seconds,
)

API_RATE = 24000
CLIENT_RATES = (8000, 16000, 22050, 44100, 48000, 96000)
FIXED_CHUNKS = (1, 7, 160, 441, 4096)


def _signal(rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Tones plus noise reaching up to the input's Nyquist: exercises every filter phase and the stop band."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    x = 9000 * np.sin(2 * np.pi * 440 * t) + 6000 * np.sin(2 * np.pi * 0.45 * rate * t)
    x += rng.normal(0, 3000, n)
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def _run_chunks(r: Resampler, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    out: list[bytes] = []
    i = 0
    for size in sizes:
        out.append(r.process(x[i : i + size].tobytes()))
        i += size
    assert i == len(x)
    out.append(r.flush())
    return np.frombuffer(b"".join(out), dtype=np.int16)


def _fixed_sizes(n: int, chunk: int) -> list[int]:
    return [chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])


def _random_sizes(n: int, rng: np.random.Generator) -> list[int]:
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(min(int(rng.integers(1, 4097)), n - sum(sizes)))
    return sizes


@pytest.mark.parametrize("quality", RESAMPLER_QUALITIES)
@pytest.mark.parametrize("rate", CLIENT_RATES)
def test_chunked_stream_equals_one_pass(rate: int, quality: str) -> None:
    x = _signal(rate, 0.25)
    one_pass = _run_chunks(make_resampler(rate, API_RATE, quality), x, [len(x)])
    rng = np.random.default_rng(rate)
    plans = [_fixed_sizes(len(x), c) for c in FIXED_CHUNKS] + [_random_sizes(len(x), rng) for _ in range(3)]
    for sizes in plans:
        streamed = _run_chunks(make_resampler(rate, API_RATE, quality), x, sizes)
        assert len(streamed) == len(one_pass)
        diff = np.abs(streamed.astype(np.int32) - one_pass.astype(np.int32))
        assert diff.max() <= 1, f"chunks {sizes[:3]}...: max diff {diff.max()} LSB"


@pytest.mark.parametrize("quality", RESAMPLER_QUALITIES)
@pytest.mark.parametrize(
    ("in_rate", "out_rate"),
    [(r, API_RATE) for r in (*CLIENT_RATES, 11025, 44099, 191999)] + [(API_RATE, 44100), (API_RATE, 48000)],
)
def test_sample_count_is_conserved(in_rate: int, out_rate: int, quality: str) -> None:
    rng = np.random.default_rng(in_rate)
    for n_in in (1, 333, int(rng.integers(1000, 20000))):
        x = _signal(in_rate, n_in / in_rate, seed=n_in)
        y = _run_chunks(make_resampler(in_rate, out_rate, quality), x, _random_sizes(len(x), rng))
        expected = round(len(x) * out_rate / in_rate)
        assert abs(len(y) - expected) <= 1, (n_in, len(y), expected)


@pytest.mark.parametrize("quality", RESAMPLER_QUALITIES)
def test_empty_input_returns_nothing_and_keeps_state(quality: str) -> None:
    x = _signal(48000, 0.05)
    a = make_resampler(48000, API_RATE, quality)
    b = make_resampler(48000, API_RATE, quality)
    assert a.process(b"") == b""
    out_a = a.process(x.tobytes()) + a.process(b"") + a.flush()
    out_b = b.process(x.tobytes()) + b.flush()
    assert out_a == out_b
    assert a.flush() == b""


def test_flush_emits_the_held_back_tail() -> None:
    r = make_resampler(48000, API_RATE)
    x = _signal(48000, 0.1)
    before = len(r.process(x.tobytes())) // 2
    tail = len(r.flush()) // 2
    assert before + tail == len(x) // 2
    assert tail > 0, "a filter with look-ahead must hold something back"


@pytest.mark.parametrize("rate", CLIENT_RATES)
def test_stream_continues_after_flush(rate: int) -> None:
    """Two turns separated by flush equal one pass except within one filter length of the seam."""
    x = _signal(rate, 0.2, seed=3)
    cut = len(x) // 2 + 3
    r = make_resampler(rate, API_RATE)
    first = r.process(x[:cut].tobytes()) + r.flush()
    second = r.process(x[cut:].tobytes()) + r.flush()
    turns = np.frombuffer(first + second, dtype=np.int16).astype(np.int32)
    whole = _run_chunks(make_resampler(rate, API_RATE), x, [len(x)]).astype(np.int32)
    assert abs(len(turns) - len(whole)) <= 1
    seam = len(first) // 2
    guard = int(0.004 * API_RATE)  # longer than any low-latency filter half length
    assert np.abs(turns[: seam - guard] - whole[: seam - guard]).max() <= 1
    n = min(len(turns), len(whole))
    assert np.abs(turns[seam + guard : n] - whole[seam + guard : n]).max() <= 1


@pytest.mark.parametrize("quality", RESAMPLER_QUALITIES)
def test_reset_drops_held_state(quality: str) -> None:
    x = _signal(44100, 0.1, seed=5)
    fresh = make_resampler(44100, API_RATE, quality)
    expected = fresh.process(x.tobytes()) + fresh.flush()
    r = make_resampler(44100, API_RATE, quality)
    r.process(_signal(44100, 0.037, seed=9).tobytes())
    r.reset()
    got = np.frombuffer(r.process(x.tobytes()) + r.flush(), dtype=np.int16).astype(np.int32)
    want = np.frombuffer(expected, dtype=np.int16).astype(np.int32)
    assert len(got) == len(want)
    assert np.abs(got - want).max() <= 1


@pytest.mark.parametrize("quality", RESAMPLER_QUALITIES)
def test_equal_rates_pass_through(quality: str) -> None:
    r = make_resampler(API_RATE, API_RATE, quality)
    pcm = _signal(API_RATE, 0.01).tobytes()
    assert r.process(pcm) is pcm
    assert r.flush() == b""
    assert (r.in_rate, r.out_rate) == (API_RATE, API_RATE)


@pytest.mark.parametrize(
    ("in_rate", "out_rate"),
    [(0, 24000), (7999, 24000), (192001, 24000), (24000, -1), (24000, 400000), (44100.0, 24000)],
)
def test_invalid_rates_raise_value_error(in_rate: int, out_rate: int) -> None:
    with pytest.raises(ValueError, match="sample rate"):
        make_resampler(in_rate, out_rate)


def test_unknown_quality_raises_value_error() -> None:
    with pytest.raises(ValueError, match="low-latency"):
        make_resampler(48000, API_RATE, "best")


def test_rates_at_the_range_edges_work() -> None:
    for in_rate, out_rate in ((8000, 192000), (192000, 8000)):
        r = make_resampler(in_rate, out_rate)
        y = r.process(_signal(in_rate, 0.02).tobytes()) + r.flush()
        assert abs(len(y) // 2 - round(0.02 * out_rate)) <= 1


def test_pcm16_duration_seconds() -> None:
    assert pcm16_duration_seconds(48000, 24000) == pytest.approx(1.0)
    assert pcm16_duration_seconds(1764, 44100) == pytest.approx(0.02)
    assert pcm16_duration_seconds(0, 8000) == 0.0
    with pytest.raises(ValueError):
        pcm16_duration_seconds(2, 0)
