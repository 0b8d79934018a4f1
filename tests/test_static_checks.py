"""The code stays linted, formatted and type-checked: `./run-checks` (ruff and mypy) runs as part of the suite."""

from __future__ import annotations

import subprocess

import pytest

from tests.harness import REPO


def run_checks(*args: str) -> subprocess.CompletedProcess[str]:
    # Through the same command a developer runs, so that command is known to work too.
    return subprocess.run(
        [str(REPO / "run-checks"), *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("check", ["ruff-check", "ruff-format", "mypy"])
def test_static_check_passes(check: str) -> None:
    result = run_checks(check)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unknown_check_is_refused() -> None:
    result = run_checks("pylint")
    assert result.returncode == 2
    assert "ruff-check, ruff-format, mypy" in result.stderr
