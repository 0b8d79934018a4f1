"""What a benchmark's figures were measured on: printed first by every `realtime-relay bench` command."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import soxr


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines() -> list[str]:
    """What the figures were measured on."""
    return [
        f"CPU: {cpu_model()} ({os.cpu_count()} logical cores, {platform.machine()})",
        f"Python {platform.python_version()}, numpy {np.__version__}, soxr {soxr.__version__}, "
        f"{platform.system()} {platform.release()}",
    ]
