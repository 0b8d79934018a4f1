"""`realtime-relay bench relay` for real, briefly: every system started as its own process, the same load through
each, zero frames lost everywhere, every figure measured, and the JSON and PNG written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.harness import REPO

SESSIONS = 8
WARMUP = 0.5
SECONDS = 1.5
SYSTEMS = ("relay", "naive", "aiohttp", "splice")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench")
    command = [
        sys.executable,
        "-m",
        "relay",
        "bench",
        "relay",
        "--sessions",
        str(SESSIONS),
        "--rounds",
        "1",
        "--warmup",
        str(WARMUP),
        "--seconds",
        str(SECONDS),
        "--json",
        str(out / "bench.json"),
        "--plot",
        str(out / "bench.png"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=110, cwd=REPO, check=False)
    return result, out


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_every_system_relays_every_frame(bench: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, out = bench
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads((out / "bench.json").read_text())
    rows = {row["system"]: row for row in document["rows"]}
    assert set(rows) == {*SYSTEMS, "direct"}
    # Each session sends 50 appends a second through warm-up and window (the schedule, give or take one frame).
    expected = SESSIONS * 50 * (WARMUP + SECONDS)
    for name, row in rows.items():
        assert row["failures"] == [], name
        assert row["lost"] == 0 and row["errors"] == 0, name
        assert abs(row["sent"] - expected) <= SESSIONS * 2, (name, row["sent"])
        for sample in (s for s in document["samples"] if s["system"] == name):
            # Round trips counted only in the window, each one matched to its append.
            assert sample["round_trips"] > 0.9 * SESSIONS * 50 * SECONDS, name


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_figures_are_measured_for_each_system(bench: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, out = bench
    document = json.loads((out / "bench.json").read_text())
    rows = {row["system"]: row for row in document["rows"]}
    direct = rows["direct"]
    assert 0 < direct["rtt_p50"] <= direct["rtt_p99"]
    for name in SYSTEMS:
        row = rows[name]
        assert row["cpu_share"] > 0 and row["cpu_per_session"] > 0, name
        assert 0 < row["rtt_p50"] <= row["rtt_p99"], name
        # A relay is one more hop than going direct: at the median it can only add.
        assert row["added_p50"] > 0, name
        assert row["added_p99"] is not None, name
        assert row["rss_per_idle_session"] > 0, name
        assert 0 < row["cold_start"] < 30, name
    (ratios,) = document["ratios"]
    assert ratios["sessions"] == SESSIONS
    assert ratios["relay/aiohttp"] > 0 and ratios["relay/splice"] > 0
    # The printed report: the machine, every system's row, the ratios; never the key the tool made up.
    assert result.stdout.startswith("CPU: ")
    assert "relay (under test)" in result.stdout and "TCP splice (floor)" in result.stdout
    assert "relay/aiohttp" in result.stdout and "relay/splice" in result.stdout
    assert "sk-bench-" not in result.stdout + result.stderr + (out / "bench.json").read_text()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_plot_is_a_png(bench: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = bench
    data = (out / "bench.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(out / "bench.png") as image:
        image.verify()
    with Image.open(out / "bench.png") as image:
        assert image.format == "PNG" and image.size[0] > 400 and image.size[1] > 200
        # Something was drawn: more than the background's few colours.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50


def test_bounds_are_enforced() -> None:
    for args in (
        ["--sessions", "201"],
        ["--sessions", "0"],
        ["--rounds", "10"],
        ["--seconds", "61"],
        ["--systems", "nginx"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "relay", "bench", "relay", *args],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=REPO,
            check=False,
        )
        assert result.returncode == 2, args
        assert "--" in result.stderr, args
