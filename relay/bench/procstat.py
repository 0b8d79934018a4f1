"""What a process costs, read from /proc: CPU time, resident memory, and how busy each CPU was.

Linux only, like the rest of `bench relay` (it pins processes to CPUs).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    # The command name in parentheses may contain spaces: the fields start after its closing bracket.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")


@dataclass(frozen=True)
class CpuTimes:
    """Busy (user, nice, system, steal) and total jiffies of each CPU, from one read of /proc/stat."""

    busy: dict[int, int]
    total: dict[int, int]

    @classmethod
    def read(cls) -> CpuTimes:
        """The counters now."""
        busy: dict[int, int] = {}
        total: dict[int, int] = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *values = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            # user nice system idle iowait irq softirq steal
            numbers = [int(v) for v in values[:8]]
            cpu = int(name[3:])
            total[cpu] = sum(numbers)
            # Interrupt time is left out: on loopback it is mostly the systems' own packets, which no process's
            # utime+stime includes. Steal (the hypervisor's other guests) counts as busy.
            busy[cpu] = numbers[0] + numbers[1] + numbers[2] + numbers[7]
        return cls(busy, total)

    def busy_share_since(self, earlier: CpuTimes) -> dict[int, float]:
        """Share (0-1) of each CPU's time spent busy between `earlier` and this read."""
        shares = {}
        for cpu, total in self.total.items():
            elapsed = total - earlier.total.get(cpu, total)
            shares[cpu] = (self.busy[cpu] - earlier.busy.get(cpu, 0)) / elapsed if elapsed > 0 else 0.0
        return shares


@dataclass(frozen=True)
class Placement:
    """Which CPU the system under test runs on, and which the load generator and the upstream share."""

    system_cpu: int | None
    load_cpu: int | None

    @classmethod
    def choose(cls) -> Placement:
        """The first two CPUs this process may use; no pinning on a machine with only one."""
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) < 2:
            return cls(None, None)
        return cls(allowed[0], allowed[1])

    def describe(self) -> str:
        """One line for the report."""
        if self.system_cpu is None:
            return "not pinned (only one CPU available): figures include the load generator's own load"
        return f"system under test on CPU {self.system_cpu}; load generator and echo upstream on CPU {self.load_cpu}"


def pin_self(cpu: int | None) -> None:
    """Pin the calling thread (and the children it starts from now on) to one CPU."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


@contextlib.contextmanager
def children_pinned(cpu: int | None) -> Iterator[None]:
    """Processes started inside run on `cpu`: the calling thread moves there while it forks them, then back.

    (A child inherits its parent thread's affinity; unlike `preexec_fn`, this is safe with threads around.)
    """
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
