"""What `bench relay` prints and writes: medians per system and session count, the ratios, JSON and a plot."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relay.bench.systems import DIRECT, LABELS, RELAYS

if TYPE_CHECKING:
    from relay.bench.side_by_side import Sample, Settings


@dataclass
class Row:
    """One system at one session count: medians over rounds (lost frames and sends: totals)."""

    system: str
    sessions: int
    rounds: int
    cpu_share: float | None = None
    cpu_per_session: float | None = None
    added_p50: float | None = None
    added_p99: float | None = None
    rtt_p50: float | None = None
    rtt_p99: float | None = None
    sent: int = 0
    lost: int = 0
    errors: int = 0
    late_sends: int = 0
    closed_early: int = 0
    rss_per_idle_session: float | None = None
    cold_start: float | None = None
    load_side_cpu: float | None = None
    others_on_system_cpu: float | None = None
    others_on_load_cpu: float | None = None
    failures: list[str] = field(default_factory=list)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(samples: Sequence[Sample]) -> list[Row]:
    """Rows in system order, then session count; added round trips are taken per round against `direct`."""
    direct = {(s.sessions, s.round): s for s in samples if s.system == DIRECT}
    rows = []
    for system in (*RELAYS, DIRECT):
        counts = sorted({s.sessions for s in samples if s.system == system})
        for sessions in counts:
            group = [s for s in samples if s.system == system and s.sessions == sessions]
            added_p50, added_p99 = [], []
            for sample in group:
                base = direct.get((sessions, sample.round))
                if system == DIRECT or base is None or sample.failure or base.failure:
                    continue
                if None not in (sample.rtt_p50, base.rtt_p50, sample.rtt_p99, base.rtt_p99):
                    added_p50.append(sample.rtt_p50 - base.rtt_p50)  # type: ignore[operator]
                    added_p99.append(sample.rtt_p99 - base.rtt_p99)  # type: ignore[operator]
            cpu = _median([s.cpu_share for s in group])
            rows.append(
                Row(
                    system=system,
                    sessions=sessions,
                    rounds=len(group),
                    cpu_share=cpu,
                    cpu_per_session=cpu / sessions if cpu is not None else None,
                    added_p50=_median(added_p50),
                    added_p99=_median(added_p99),
                    rtt_p50=_median([s.rtt_p50 for s in group]),
                    rtt_p99=_median([s.rtt_p99 for s in group]),
                    sent=sum(s.sent for s in group),
                    lost=sum(s.lost for s in group),
                    errors=sum(s.errors for s in group),
                    late_sends=sum(s.late_sends for s in group),
                    closed_early=sum(s.closed_early for s in group),
                    rss_per_idle_session=_median([s.rss_per_idle_session for s in group]),
                    cold_start=_median([s.cold_start for s in group]),
                    load_side_cpu=_median([s.load_side_cpu for s in group]),
                    others_on_system_cpu=_median([o[0] if (o := s.others_on_cpus) else None for s in group]),
                    others_on_load_cpu=_median([o[1] if (o := s.others_on_cpus) else None for s in group]),
                    failures=[s.failure for s in group if s.failure],
                )
            )
    return rows


def _others(row: Row) -> str:
    if row.others_on_system_cpu is None or row.others_on_load_cpu is None:
        return "-"
    return f"{row.others_on_system_cpu * 100:.0f}/{row.others_on_load_cpu * 100:.0f}"


def _fmt(value: float | None, scale: float, digits: int) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


_COLUMNS = (
    ("system", 27),
    ("N", 4),
    ("CPU %core", 9),
    ("%/session", 9),
    ("added p50 ms", 12),
    ("added p99 ms", 12),
    ("RTT p50 ms", 10),
    ("RTT p99 ms", 10),
    ("lost", 6),
    ("KiB/idle", 8),
    ("cold ms", 7),
    ("load %", 6),
    ("others %", 8),
)


def _line(cells: Sequence[str]) -> str:
    first, *rest = cells
    return (
        first.ljust(_COLUMNS[0][1])
        + "  "
        + "  ".join(cell.rjust(width) for cell, (_, width) in zip(rest, _COLUMNS[1:], strict=True))
    )


def table_lines(rows: Sequence[Row]) -> list[str]:
    """The table: one line per system and session count."""
    lines = [_line([name for name, _ in _COLUMNS])]
    for row in rows:
        lines.append(
            _line(
                [
                    LABELS[row.system],
                    str(row.sessions),
                    _fmt(row.cpu_share, 100, 1),
                    _fmt(row.cpu_per_session, 100, 3),
                    _fmt(row.added_p50, 1e3, 2),
                    _fmt(row.added_p99, 1e3, 2),
                    _fmt(row.rtt_p50, 1e3, 2),
                    _fmt(row.rtt_p99, 1e3, 2),
                    str(row.lost) + ("!" if row.failures else ""),
                    _fmt(row.rss_per_idle_session, 1 / 1024, 1),
                    _fmt(row.cold_start, 1e3, 0),
                    _fmt(row.load_side_cpu, 100, 0),
                    _others(row),
                ]
            )
        )
    lines += [
        "",
        "CPU: the system's process (utime+stime from /proc) over the window, % of one core, and per session. "
        "added: its round trip",
        "minus direct's, same N and round. lost: appends never answered, answered out of order or corrupted "
        "(all rounds; ! = a run failed).",
        "KiB/idle: RSS growth per idle session. cold: process start to GET /readyz 200. load: CPU of the load "
        "generator and the",
        "echo upstream together (% of one core). others: other processes' share of the system's CPU / "
        "the load CPU,",
        "interrupts left out (above a few %: the machine was not quiet, and latency suffers first).",
    ]
    return lines


def ratios(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """CPU per session of the relay over each reference, per session count."""
    by = {(r.system, r.sessions): r for r in rows}
    out = []
    for row in rows:
        if row.system != "relay" or row.cpu_per_session is None:
            continue
        entry: dict[str, Any] = {"sessions": row.sessions}
        for other in ("aiohttp", "splice", "naive"):
            ref = by.get((other, row.sessions))
            if ref is not None and ref.cpu_per_session:
                entry[f"relay/{other}"] = row.cpu_per_session / ref.cpu_per_session
        out.append(entry)
    return out


def ratio_lines(rows: Sequence[Row]) -> list[str]:
    """The ratios, one line per session count."""
    lines = ["CPU per session, relay over each reference (lower is better):"]
    for entry in ratios(rows):
        parts = [f"{name} {value:.2f}x" for name, value in entry.items() if name != "sessions"]
        lines.append(f"  N={entry['sessions']}: " + (", ".join(parts) or "no reference measured"))
    return lines


def write_json(
    path: Path, head: Sequence[str], settings: Settings, samples: Sequence[Sample], rows: Sequence[Row]
) -> None:
    """Every sample, every row and the ratios."""
    document = {
        "machine": list(head),
        "settings": {
            "sessions": list(settings.sessions),
            "rounds": settings.rounds,
            "seconds": settings.seconds,
            "warmup": settings.warmup,
            "systems": list(settings.systems),
            "nice": settings.nice,
        },
        "units": "seconds, bytes, shares of one core (0-1)",
        "rows": [asdict(row) for row in rows],
        "ratios": ratios(rows),
        "samples": [
            {**asdict(sample), "lost": sample.lost, "cpu_share": sample.cpu_share} for sample in samples
        ],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def plot(path: Path, rows: Sequence[Row]) -> None:
    """Added round trip (p50 solid, p99 dashed) and CPU against sessions, one line per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, cpu) = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, system in enumerate(RELAYS):
        mine = [r for r in rows if r.system == system]
        if not mine:
            continue
        color = f"C{index}"
        x = [r.sessions for r in mine]
        latency.plot(x, [_ms(r.added_p50) for r in mine], "o-", color=color, label=f"{LABELS[system]} p50")
        latency.plot(x, [_ms(r.added_p99) for r in mine], "s--", color=color, alpha=0.6, label="p99")
        cpu.plot(x, [_pct(r.cpu_share) for r in mine], "o-", color=color, label=LABELS[system])
    latency.set(
        xlabel="sessions", ylabel="added round trip, ms", title="Added round trip (p50 solid, p99 dashed)"
    )
    latency.set_yscale("symlog", linthresh=1.0)
    cpu.set(xlabel="sessions", ylabel="% of one core", title="CPU of the relay process")
    for axes in (latency, cpu):
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _ms(value: float | None) -> float:
    return float("nan") if value is None else value * 1e3


def _pct(value: float | None) -> float:
    return float("nan") if value is None else value * 100


def progress_line(sample: Sample) -> str:
    """One line per finished measurement, while the run goes on."""
    rtt = (
        "-" if sample.rtt_p50 is None else f"{sample.rtt_p50 * 1e3:.2f}/{(sample.rtt_p99 or 0) * 1e3:.2f} ms"
    )
    cpu = "-" if sample.cpu_share is None else f"{sample.cpu_share * 100:.1f}%"
    status = (
        f" FAILED: {sample.failure}" if sample.failure else (f" ({sample.problem})" if sample.problem else "")
    )
    return (
        f"round {sample.round} N={sample.sessions} {sample.system}: CPU {cpu}, RTT p50/p99 {rtt}, "
        f"sent {sample.sent}, lost {sample.lost}{status}"
    )
