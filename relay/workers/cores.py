"""How many cores this process may use: its CPU affinity, capped by a cgroup CPU quota (containers, Kubernetes)."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _own_cgroup_v2_path(proc_cgroup: str) -> str | None:
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> float | None:
    """The CPU quota in cores (e.g. 1.5), or None when there is none.

    cgroup v2 (`cpu.max`: `<quota> <period>` or `max <period>`) in this process's own cgroup and every one above
    it, the tightest winning; cgroup v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`, -1 meaning none) otherwise.
    """
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            proc_cgroup = ""
    limits: list[float] = []
    own = _own_cgroup_v2_path(proc_cgroup)
    if own is not None:
        directory = root / own.lstrip("/")
        while True:
            limit = _v2_limit(directory / "cpu.max")
            if limit is not None:
                limits.append(limit)
            if directory == root or root not in directory.parents:
                break
            directory = directory.parent
    else:
        limit = _v1_limit(root / "cpu")
        if limit is not None:
            limits.append(limit)
    return min(limits) if limits else None


def _v2_limit(path: Path) -> float | None:
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max" or int(period) <= 0:
        return None
    return int(quota) / int(period)


def _v1_limit(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def available_cores(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> int:
    """Cores this process may run on: the CPU affinity, capped by the cgroup quota rounded up (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_limit(root, proc_cgroup)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def worker_count(configured: int | None) -> int:
    """RELAY_WORKERS resolved: the number given, or for `auto` (None) the cores available."""
    return configured if configured is not None else available_cores()


def workers_problem(count: int, redis_url: str) -> str | None:
    """Why `count` workers cannot start (one line), or None."""
    if count > 1 and not redis_url:
        return (
            f"RELAY_WORKERS={count} needs RELAY_REDIS_URL: without a shared store every worker would count "
            f"sessions, daily budgets and failed sign-ins by itself, so each user would get {count} times the "
            "limits. Set RELAY_REDIS_URL=redis://HOST:6379/0, or run one worker (--workers 1)."
        )
    return None
