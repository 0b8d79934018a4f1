"""``realtime-relay bench relay``: the relay and three reference relays under the same load, side by side.

For each round, each session count N and each system (the relay under test, a naive relay, an aiohttp middle tier,
a TCP splice, and `direct`, no relay at all), in that order so that slow drifts of the machine touch all alike:

1. start the system as its own process pinned to one CPU (the load generator and the echo upstream share the other)
   and time it from process start to GET /readyz 200 (cold start);
2. open one session and close it (imports and caches a first session warms), read the process's RSS, open N idle
   sessions, read it again: RSS per idle session;
3. stream on those N sessions (one 20 ms append every 20 ms each, each answered by the echo upstream), and over a
   window after the warm-up read the process's CPU time and every round trip;
4. stop sending, give the last answers a moment, count what was lost, and stop the system.

Added round trip = through-relay round trip minus direct round trip, same N, same round. Medians over rounds.
Loopback only; sessions, seconds and rounds are bounded, and it stops by itself.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import os
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from relay.bench.load import LoadError, client_session, open_sessions, stream
from relay.bench.machine import machine_lines
from relay.bench.procstat import CpuTimes, Placement, cpu_seconds, pin_self, rss_bytes
from relay.bench.serving import run_on_uvloop
from relay.bench.systems import DIRECT, RELAYS, Running, StartError, relay_settings, start_echo, start_system
from relay.cli_args import StrictParser

MAX_SESSIONS = 200
MAX_SECONDS = 60.0
MAX_ROUNDS = 9
DEFAULT_SESSIONS = (20, 50, 100, 200)
#: After the last append, how long answers may still come before the rest count as lost.
DRAIN_SECONDS = 3.0
#: The libraries the systems are built on, whose versions the figures depend on.
_LIBRARIES = ("uvicorn", "starlette", "websockets", "aiohttp", "uvloop", "orjson")
#: Idle sessions settle this long before their memory is read.
SETTLE_SECONDS = 0.5


@dataclass(frozen=True)
class Settings:
    """One run's choices."""

    sessions: tuple[int, ...]
    rounds: int
    seconds: float
    warmup: float
    systems: tuple[str, ...]
    json_path: Path | None
    plot_path: Path | None
    nice: int = 0


@dataclass
class Sample:
    """One system at one session count in one round."""

    system: str
    sessions: int
    round: int
    cpu_seconds: float | None = None
    window_seconds: float = 0.0
    rtt_p50: float | None = None
    rtt_p99: float | None = None
    round_trips: int = 0
    sent: int = 0
    unanswered: int = 0
    disordered: int = 0
    corrupted: int = 0
    errors: int = 0
    late_sends: int = 0
    closed_early: int = 0
    rss_per_idle_session: float | None = None
    cold_start: float | None = None
    load_side_cpu: float | None = None
    load_cpu_busy: float | None = None
    system_cpu_busy: float | None = None
    #: The first thing that went wrong while it ran (an error event, a session closed by the other side).
    problem: str | None = None
    #: Why it could not be measured at all.
    failure: str | None = None

    @property
    def lost(self) -> int:
        """Appends without an answer, plus answers out of order or corrupted."""
        return self.unanswered + self.disordered + self.corrupted

    @property
    def cpu_share(self) -> float | None:
        """The system process's CPU over the window, as a share of one core."""
        if self.cpu_seconds is None or self.window_seconds <= 0:
            return None
        return self.cpu_seconds / self.window_seconds

    @property
    def others_on_cpus(self) -> tuple[float, float] | None:
        """How much of the system's CPU and of the load CPU other processes took (shares of each), over the window.

        Anything well above zero means the machine was shared while this was measured: latency suffers first.
        """
        if self.system_cpu_busy is None or self.load_cpu_busy is None or self.load_side_cpu is None:
            return None
        return (
            max(0.0, self.system_cpu_busy - (self.cpu_share or 0.0)),
            max(0.0, self.load_cpu_busy - self.load_side_cpu),
        )


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), by linear interpolation between the closest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class _Mark:
    at: float
    system_cpu: float | None
    load_side_cpu: float  # the load generator (this process) and the echo upstream
    cpus: CpuTimes


async def _measure(
    sample: Sample, running: Running, settings: Settings, placement: Placement, echo: Upstream
) -> None:
    pid = running.pid
    async with client_session() as http:
        first = await open_sessions(http, running.url, running.headers, 1)
        await asyncio.gather(*(s.close() for s in first))
        await asyncio.sleep(SETTLE_SECONDS)
        before = rss_bytes(pid) if pid is not None else None
        sessions = await open_sessions(http, running.url, running.headers, sample.sessions)
        marks: dict[str, _Mark] = {}

        def mark(name: str) -> None:
            marks[name] = _Mark(
                time.perf_counter(),
                cpu_seconds(pid) if pid is not None else None,
                cpu_seconds(os.getpid()) + cpu_seconds(echo.pid),
                CpuTimes.read(),
            )

        try:
            await asyncio.sleep(SETTLE_SECONDS)
            if pid is not None and before is not None:
                sample.rss_per_idle_session = (rss_bytes(pid) - before) / sample.sessions
            result = await stream(
                sessions,
                settings.warmup,
                settings.seconds,
                DRAIN_SECONDS,
                (lambda: mark("a"), lambda: mark("b")),
            )
        finally:
            await asyncio.gather(*(s.close() for s in sessions))
    start, end = marks["a"], marks["b"]
    sample.window_seconds = end.at - start.at
    if start.system_cpu is not None and end.system_cpu is not None:
        sample.cpu_seconds = end.system_cpu - start.system_cpu
    sample.load_side_cpu = (end.load_side_cpu - start.load_side_cpu) / sample.window_seconds
    # Whole CPUs, whoever used them: other work on this machine shows here.
    busy = end.cpus.busy_share_since(start.cpus)
    if placement.load_cpu is not None and placement.system_cpu is not None:
        sample.load_cpu_busy = busy.get(placement.load_cpu)
        sample.system_cpu_busy = busy.get(placement.system_cpu)
    tally = result.tally
    sample.sent, sample.unanswered = tally.sent, tally.unanswered
    sample.disordered, sample.corrupted, sample.errors = tally.disordered, tally.corrupted, tally.errors
    sample.late_sends, sample.closed_early = tally.late_sends, tally.closed_early
    sample.round_trips = len(result.round_trips)
    if result.round_trips:
        sample.rtt_p50 = percentile(result.round_trips, 50)
        sample.rtt_p99 = percentile(result.round_trips, 99)
    sample.problem = tally.first_error


def measure(
    name: str, sessions: int, round_: int, settings: Settings, placement: Placement, echo: Upstream
) -> Sample:
    """Start one system, load it with `sessions` sessions, stop it; what went wrong is in the sample's failure."""
    sample = Sample(name, sessions, round_)
    try:
        running = start_system(name, echo.url, echo.key, echo.token, sessions, placement.system_cpu)
    except StartError as exc:
        sample.failure = str(exc)
        return sample
    sample.cold_start = running.cold_start
    try:
        run_on_uvloop(_measure(sample, running, settings, placement, echo))
    except LoadError as exc:
        tail = running.stderr_tail()
        sample.failure = f"{exc}" + (f" ({tail})" if tail else "")
    finally:
        running.stop()
    return sample


@dataclass(frozen=True)
class Upstream:
    """The echo upstream every system talks to, and the credentials of the run."""

    url: str
    key: str
    token: str
    pid: int


def _describe(settings: Settings, placement: Placement) -> list[str]:
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in _LIBRARIES)
    return [
        *machine_lines(),
        versions,
        f"placement: {placement.describe()}"
        + (f"; all of them at nice {settings.nice}" if settings.nice else ""),
        f"load: N sessions, each a 20 ms 24 kHz PCM16 base64 input_audio_buffer.append every 20 ms, answered at once "
        f"by an echo upstream with a response.output_audio.delta of the same audio; warm-up {settings.warmup:g} s, "
        f"window {settings.seconds:g} s, {settings.rounds} round(s), medians",
        "relay under test: python -m relay with "
        + " ".join(f"{k}={v}" for k, v in relay_settings(max(settings.sessions)).items())
        + " (MAX_SESSIONS: N + 1)",
    ]


def run(settings: Settings) -> int:
    """Run every measurement, print the table and the ratios, write JSON and the plot if asked; 1 on a failure."""
    from relay.bench import report

    placement = Placement.choose()
    pin_self(placement.load_cpu)
    if settings.nice:
        # Inherited by every process started from here: the systems, the echo upstream, and this load generator.
        os.setpriority(os.PRIO_PROCESS, 0, settings.nice)
    key = "sk-bench-" + secrets.token_hex(16)
    token = secrets.token_hex(16)
    head = _describe(settings, placement)
    for line in head:
        print(line, flush=True)
    echo_process, echo_url = start_echo(key, placement.load_cpu)
    assert echo_process.pid is not None
    echo = Upstream(echo_url, key, token, echo_process.pid)
    samples: list[Sample] = []
    try:
        for round_ in range(1, settings.rounds + 1):
            for sessions in settings.sessions:
                for name in (DIRECT, *settings.systems):
                    sample = measure(name, sessions, round_, settings, placement, echo)
                    samples.append(sample)
                    print(report.progress_line(sample), file=sys.stderr, flush=True)
                    if echo_process.process is not None and echo_process.process.poll() is not None:
                        raise RuntimeError(f"the echo upstream exited: {echo_process.stderr_tail()}")
    finally:
        echo_process.stop()
    rows = report.summarise(samples)
    print()
    for line in report.table_lines(rows):
        print(line)
    print()
    for line in report.ratio_lines(rows):
        print(line)
    if settings.json_path is not None:
        report.write_json(settings.json_path, head, settings, samples, rows)
        print(f"JSON: {settings.json_path}")
    if settings.plot_path is not None:
        report.plot(settings.plot_path, rows)
        print(f"plot: {settings.plot_path}")
    for sample in samples:
        if sample.problem:
            print(f"note: {sample.system} N={sample.sessions} round {sample.round}: {sample.problem}")
    failures = [s for s in samples if s.failure]
    for sample in failures:
        print(f"failed: {sample.system} N={sample.sessions} round {sample.round}: {sample.failure}")
    return 1 if failures else 0


def _session_counts(text: str) -> tuple[int, ...]:
    counts = tuple(int(part) for part in text.split(",") if part.strip())
    if not counts or len(counts) > 8 or not all(1 <= n <= MAX_SESSIONS for n in counts):
        raise ValueError(text)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``bench relay [--sessions 20,50,100,200] [--rounds 3] [--seconds S] [--json P] [--plot P]``."""
    parser = StrictParser(
        prog="realtime-relay bench relay",
        description="The relay and three reference relays under the same load, side by side, on 127.0.0.1.",
    )
    parser.add_argument(
        "--sessions",
        default=",".join(map(str, DEFAULT_SESSIONS)),
        help=f"comma-separated session counts, each 1-{MAX_SESSIONS}, at most 8 (default %(default)s)",
    )
    parser.add_argument("--rounds", type=int, default=3, help=f"rounds, 1-{MAX_ROUNDS} (default %(default)s)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=6.0,
        help=f"measured window per run, 1-{MAX_SECONDS:g} (default %(default)s)",
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="streaming before the window, 0-30 (default %(default)s)"
    )
    parser.add_argument(
        "--systems",
        default=",".join(RELAYS),
        help="comma-separated subset of " + ", ".join(RELAYS) + " (direct always runs)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the systems and the load at this nice value, -20-19 (below 0 needs root; default 0: unchanged)",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write every figure as JSON")
    parser.add_argument(
        "--plot", type=Path, default=None, metavar="PATH.png", help="plot latency and CPU (PNG)"
    )
    args = parser.parse_args(argv)
    try:
        sessions = _session_counts(args.sessions)
    except ValueError:
        parser.error(f"--sessions takes up to 8 comma-separated counts, each 1-{MAX_SESSIONS}")
    systems = tuple(name.strip() for name in args.systems.split(",") if name.strip())
    if not systems or any(name not in RELAYS for name in systems):
        parser.error("--systems takes a comma-separated subset of " + ", ".join(RELAYS))
    if (
        not 1 <= args.rounds <= MAX_ROUNDS
        or not 1 <= args.seconds <= MAX_SECONDS
        or not 0 <= args.warmup <= 30
    ):
        parser.error(f"--rounds must be 1-{MAX_ROUNDS}, --seconds 1-{MAX_SECONDS:g}, --warmup 0-30")
    if not sys.platform.startswith("linux"):
        parser.error("bench relay reads /proc and pins CPUs: Linux only")
    if not -20 <= args.nice <= 19:
        parser.error("--nice must be -20-19")
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install 'realtime-relay[bench]'")
    settings = Settings(
        sessions, args.rounds, args.seconds, args.warmup, systems, args.json, args.plot, args.nice
    )
    return run(settings)
