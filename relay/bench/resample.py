"""``realtime-relay bench resample`` (or ``python -m relay.bench resample``).

Prints the machine, then for each rate pair and resampler setting: the median cost of one 20 ms frame, the
buffering delay (mean and max over random frame boundaries), flatness to 8 kHz, alias (or image) rejection and
the SNR of a 1 kHz tone. The figures come from relay.audio.measure, the code the quality tests use.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import partial

from relay.audio import RESAMPLER_QUALITIES, PolyphaseResampler, Resampler, SoxrResampler, make_resampler
from relay.audio import measure as m
from relay.bench.machine import machine_lines
from relay.cli_args import StrictParser

API_RATE = 24000
CLIENT_RATES = (8000, 16000, 22050, 44100, 48000, 96000)
OUTPUT_RATES = (44100, 48000)
#: soxr's faster settings, shown for comparison only (not RELAY_RESAMPLER values).
BASELINES = ("LQ", "QQ")

_COLUMNS = (
    ("path", 6),
    ("rates", 13),
    ("setting", 11),
    ("us/frame", 8),
    ("delay ms", 8),
    ("max ms", 7),
    ("flat dB", 7),
    ("rej dB", 6),
    ("1k SNR", 6),
)


def _factory(in_rate: int, out_rate: int, setting: str) -> m.ResamplerFactory:
    if setting in BASELINES:

        def make() -> Resampler:
            return SoxrResampler(in_rate, out_rate, setting)

        return make
    return partial(make_resampler, in_rate, out_rate, setting)


def measure_row(in_rate: int, out_rate: int, setting: str, frames: int) -> list[str]:
    """One table row of figures for a rate pair and setting."""
    make = _factory(in_rate, out_rate, setting)
    delay = m.buffering_delay(make)
    label = f"soxr-{setting.lower()}*" if setting in BASELINES else setting
    return [
        "in" if out_rate == API_RATE else "out",
        f"{in_rate}->{out_rate}",
        label,
        f"{m.frame_cost_us(make, frames):.1f}",
        f"{delay.mean * 1e3:.2f}",
        f"{delay.max * 1e3:.2f}",
        f"{m.flatness_db(make):.3f}",
        f"{m.alias_rejection_db(make):.0f}",
        f"{m.tone_snr_db(make):.1f}",
    ]


def _format(cells: Sequence[str]) -> str:
    return "  ".join(cell.rjust(width) for cell, (_, width) in zip(cells, _COLUMNS, strict=True))


def run_resample(frames: int, baselines: bool) -> int:
    """Print the machine and the resampler table."""
    for line in machine_lines():
        print(line)
    settings = list(RESAMPLER_QUALITIES) + (list(BASELINES) if baselines else [])
    pairs = [(r, API_RATE) for r in CLIENT_RATES] + [(API_RATE, r) for r in OUTPUT_RATES]
    print()
    print(_format([name for name, _ in _COLUMNS]))
    for in_rate, out_rate in pairs:
        for setting in settings:
            print(_format(measure_row(in_rate, out_rate, setting, frames)), flush=True)
    example = PolyphaseResampler(48000, API_RATE).bank
    print()
    print(
        "us/frame: median time of process() on one 20 ms frame. delay: how far the output's content lags the "
        "input received,\nat random 20 ms frame boundaries (group delay included). flat: largest gain error "
        "to 8 kHz (or 0.4 x the lower rate).\nrej: input >= output Nyquist rejected (in), or images (out). "
        "1k SNR: 1 kHz at -1 dBFS over everything else."
    )
    spec = example.spec
    print(
        f"low-latency filter: Kaiser windowed sinc, pass {spec.passband_hz:.0f} Hz, stop {spec.stopband_hz:.0f} Hz, "
        f"{spec.attenuation_db:.0f} dB design; 48000->24000 uses {example.taps} taps "
        f"(group delay {example.delay_seconds * 1e3:.2f} ms)."
    )
    if baselines:
        print("* soxr settings shown for comparison, not RELAY_RESAMPLER values.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``bench resample [--frames N] [--baselines]``."""
    parser = StrictParser(
        prog="realtime-relay bench resample",
        description="Resampler cost, delay and quality per rate and setting.",
    )
    parser.add_argument("--frames", type=int, default=3000, help="frames timed per row (median reported)")
    parser.add_argument("--baselines", action="store_true", help="also show soxr LQ and QQ for comparison")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    return run_resample(args.frames, args.baselines)


if __name__ == "__main__":
    sys.exit(main())
