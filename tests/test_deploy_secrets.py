"""Placeholder and guessable secrets stop the relay at start-up, before it listens.

A token copied from an example would open the relay to anyone who read the example; a guessable cookie secret lets
anyone sign a login cookie for any identity (the identity `token:<8 hex>` shows in logs and metric labels). The real
command is run with the values the deployment examples ship, and refuses each without ever printing it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from relay.access import startup_problem
from relay.auth import MIN_SECRET_BITS, estimated_bits, weak_secret_reason
from relay.config import Config
from tests.harness import REPO

GOOD = secrets.token_urlsafe(32)
SECRET_EXAMPLE = REPO / "deploy" / "k8s" / "secret.example.yaml"


def start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real `python -m relay` on a free port; it must stop before listening when a secret is refused."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_") and k != "OPENAI_API_KEY"}
    full.update(
        {"OPENAI_API_KEY": "test-key-" + secrets.token_hex(8), "RELAY_PORT": "0", "RELAY_METRICS_PORT": "0"}
    )
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "relay"], env=full, capture_output=True, text=True, timeout=30, check=False
    )


def example_secret_values() -> dict[str, str]:
    return dict(yaml.safe_load(SECRET_EXAMPLE.read_text(encoding="utf-8"))["stringData"])


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RELAY_ACCESS_TOKENS": "replace-with-a-long-random-token"}, "RELAY_ACCESS_TOKENS (token 1 of 1)"),
        ({"RELAY_ACCESS_TOKENS": f"{GOOD},changeme-changeme-1"}, "RELAY_ACCESS_TOKENS (token 2 of 2)"),
        ({"RELAY_ACCESS_TOKENS": "aaaaaaaaaaaaaaaaaaaaaaaa"}, "RELAY_ACCESS_TOKENS (token 1 of 1)"),
        ({"RELAY_ACCESS_TOKENS": "short-tok3n"}, "RELAY_ACCESS_TOKENS (token 1 of 1)"),
        (
            {"RELAY_ACCESS_TOKENS": GOOD, "RELAY_COOKIE_SECRET": "replace-with-another-long-random-value"},
            "RELAY_COOKIE_SECRET",
        ),
        ({"RELAY_ACCESS_TOKENS": GOOD, "RELAY_COOKIE_SECRET": "abababababababababab"}, "RELAY_COOKIE_SECRET"),
    ],
)
def test_the_command_refuses_a_weak_secret_and_never_prints_it(env: dict[str, str], named: str) -> None:
    result = start({**env, "RELAY_HOST": "0.0.0.0"})
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"realtime-relay: {named} ")
    assert "secrets.token_urlsafe(32)" in line
    for value in ",".join(env.values()).split(","):
        if value != GOOD:
            assert value not in line
    assert GOOD not in result.stdout + result.stderr


def test_the_kubernetes_example_secret_is_refused_as_it_is(tmp_path: Path) -> None:
    values = example_secret_values()
    tokens = tmp_path / "access-tokens"
    tokens.write_text(values["access-tokens"], encoding="utf-8")
    refused = start({"RELAY_ACCESS_TOKENS_FILE": str(tokens), "RELAY_COOKIE_SECRET": GOOD})
    assert refused.returncode == 2 and "RELAY_ACCESS_TOKENS_FILE line 1 is a placeholder" in refused.stderr
    problem = startup_problem(Config(access_tokens=(GOOD,), cookie_secret=values["cookie-secret"]))
    assert problem is not None and problem.startswith("RELAY_COOKIE_SECRET is a placeholder")


def test_hashed_lines_and_random_values_pass(tmp_path: Path) -> None:
    tokens = tmp_path / "access-tokens"
    tokens.write_text(f"# team A\nsha256:{'ab' * 32}\n{secrets.token_urlsafe(24)}\n", encoding="utf-8")
    config = Config(host="0.0.0.0", access_tokens_file=tokens, cookie_secret=secrets.token_urlsafe(32))
    assert startup_problem(config) is None
    for _ in range(50):
        assert weak_secret_reason(secrets.token_urlsafe(32)) is None
        assert weak_secret_reason(secrets.token_hex(16)) is None


def test_the_entropy_estimate_orders_values_as_a_guesser_would() -> None:
    assert estimated_bits("") == 0 and estimated_bits("a" * 64) == 0
    assert estimated_bits("abababababababab") == pytest.approx(16.0)
    assert estimated_bits("abcdefghijklmnop") == pytest.approx(64.0)
    assert estimated_bits(secrets.token_urlsafe(32)) > 3 * MIN_SECRET_BITS
