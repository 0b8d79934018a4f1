"""Runs the web client's JavaScript unit tests (tests/web/*.test.mjs) with Node's built-in test runner."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_page_logic_under_node() -> None:
    """The player and capture worklets, chat ordering, settings, strings and contrast, tested in Node."""
    node = shutil.which("node")
    assert node is not None, "Node.js (v20+) is needed for the web client's unit tests"
    files = sorted(str(path) for path in HERE.glob("*.test.mjs"))
    assert files, "no JavaScript test files found"
    result = subprocess.run(
        [node, "--test", "--test-reporter=tap", *files],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    passed = re.search(r"^# pass (\d+)$", result.stdout, re.MULTILINE)
    failed = re.search(r"^# fail (\d+)$", result.stdout, re.MULTILINE)
    failures = "\n".join(line for line in result.stdout.splitlines() if line.startswith("not ok"))
    assert result.returncode == 0, f"{failures}\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    assert passed is not None and int(passed.group(1)) > 0
    assert failed is not None and int(failed.group(1)) == 0
