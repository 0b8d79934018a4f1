"""``realtime-relay bench frames``: how long one client frame holds the event loop, at its worst.

For each accepted input rate, the largest frame a client may send (`RELAY_AUDIO_AHEAD_SECONDS` of audio, as a
base64 append and as a binary frame) goes through `SessionState` as the pumps drive it: the first call, then each
slice. The longest single step is what every other session on the loop may wait. For comparison, the same frame
resampled whole (as the relay did before slicing) is timed too. Medians over `--rounds`.
"""

from __future__ import annotations

import base64
import statistics
import time
from collections.abc import Callable
from functools import partial

from relay import protocol
from relay.bench.machine import machine_lines
from relay.bounds import RESAMPLE_SLICE_SECONDS, SessionBounds
from relay.cli_args import StrictParser
from relay.metrics import RelayMetrics
from relay.policy import SessionPolicy
from relay.session_state import Actions, SessionState

RATES = (8000, 16000, 44100, 48000, 96000, 192000)


def _state(rate: int, bounds: SessionBounds) -> SessionState:
    return SessionState(
        metrics=RelayMetrics(),
        policy=SessionPolicy(),
        resampler_quality="low-latency",
        bounds=bounds,
        input_rate=rate,
    )


def _longest_step(run: Callable[[], Actions]) -> float:
    """The longest single step, in seconds, of handling one frame, slices included."""
    started = time.perf_counter()
    actions = run()
    steps = [time.perf_counter() - started]
    if actions.more is not None:
        while True:
            started = time.perf_counter()
            if next(actions.more, None) is None:
                break
            steps.append(time.perf_counter() - started)
    return max(steps)


def measure(rate: int, seconds: float, rounds: int) -> dict[str, float]:
    """Median longest step (sliced) and median whole-frame time, in ms, for the largest frame at `rate`."""
    bounds = SessionBounds(max_message_bytes=64 * 1024 * 1024, audio_ahead_seconds=seconds)
    pcm = b"\x10\x01" * int(rate * seconds)
    text = protocol.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
    sliced, whole, binary = [], [], []
    for _ in range(rounds):
        sliced.append(_longest_step(partial(_state(rate, bounds).from_client_text, text)))
        binary.append(_longest_step(partial(_state(rate, bounds).from_client_bytes, pcm)))
        # Whole: one slice as long as the frame, as before slicing.
        state = _state(
            rate, SessionBounds(max_message_bytes=bounds.max_message_bytes, audio_ahead_seconds=seconds)
        )
        resampler = state._input_resampler
        started = time.perf_counter()
        payload = base64.b64decode(base64.b64encode(pcm))
        out = resampler.process(payload) if resampler is not None else payload
        base64.b64encode(out)
        whole.append(time.perf_counter() - started)
    return {
        "sliced_max_ms": statistics.median(sliced) * 1e3,
        "binary_max_ms": statistics.median(binary) * 1e3,
        "whole_ms": statistics.median(whole) * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``bench frames [--seconds S] [--rounds N]``."""
    parser = StrictParser(prog="realtime-relay bench frames", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=SessionBounds().audio_ahead_seconds,
        help="audio in the largest frame",
    )
    parser.add_argument("--rounds", type=int, default=5, help="repetitions (medians reported)")
    args = parser.parse_args(argv)
    for line in machine_lines():
        print(line)
    print(
        f"\nlargest frame: {args.seconds:g} s of audio; slices of {RESAMPLE_SLICE_SECONDS:g} s; medians of {args.rounds}"
    )
    print(
        f"{'rate':>7}  {'base64 sliced: longest step ms':>31}  {'binary sliced ms':>16}  {'whole frame ms':>14}"
    )
    for rate in RATES:
        figures = measure(rate, args.seconds, args.rounds)
        print(
            f"{rate:>7}  {figures['sliced_max_ms']:>31.2f}  {figures['binary_max_ms']:>16.2f}  "
            f"{figures['whole_ms']:>14.2f}",
            flush=True,
        )
    return 0
