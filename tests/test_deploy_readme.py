"""The README's deployment steps are what an operator types, and they agree with the files and the relay's code."""

from __future__ import annotations

import re
import shlex

from tests.harness import REPO
from tests.test_deploy_files import (
    CLOSE_MARGIN_SECONDS,
    COMPOSE,
    compose,
    drain_seconds,
    required_variables,
)

README = (REPO / "README.md").read_text(encoding="utf-8")
DEPLOYMENT = README.split("## Deployment\n", 1)[1].split("\n## ", 1)[0]


def shell_blocks(text: str) -> list[list[list[str]]]:
    """Each ```sh block as its commands, continuation lines joined, comments dropped, each split like a shell."""
    blocks = []
    for body in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL):
        joined = body.replace("\\\n", " ")
        blocks.append([shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()])
    return blocks


def commands(program: str, *words: str) -> list[list[str]]:
    return [
        cmd
        for block in shell_blocks(DEPLOYMENT)
        for cmd in block
        if cmd[: 1 + len(words)] == [program, *words]
    ]


def option_values(cmd: list[str], name: str) -> list[str]:
    return [cmd[i + 1] for i, word in enumerate(cmd) if word == name]


def test_every_docker_run_publishes_on_loopback_only() -> None:
    runs = commands("docker", "run")
    assert len(runs) >= 2
    for cmd in runs:
        for published in option_values(cmd, "-p"):
            assert published.startswith("127.0.0.1:"), " ".join(cmd)


def test_the_keyed_docker_run_outlasts_the_drain_and_sets_every_secret() -> None:
    (cmd,) = [c for c in commands("docker", "run") if "-d" in c]
    stop_timeout = int(option_values(cmd, "--stop-timeout")[0])
    assert stop_timeout >= drain_seconds() + CLOSE_MARGIN_SECONDS
    assert set(option_values(cmd, "-e")) == {"OPENAI_API_KEY", "RELAY_ACCESS_TOKENS", "RELAY_COOKIE_SECRET"}
    # Every secret it passes is set by an export above it.
    exported = {c[1].split("=", 1)[0] for c in commands("export")}
    assert set(option_values(cmd, "-e")) <= exported
    for flag in ("--read-only", "--cap-drop", "--security-opt"):
        assert flag in cmd
    assert option_values(cmd, "--tmpfs") == ["/tmp"]
    # The image it runs is the one the build step tags.
    (build,) = commands("docker", "build")
    assert cmd[-1] == option_values(build, "-t")[0]


def test_the_readme_says_where_logs_go() -> None:
    assert "logs JSON lines to stderr" in DEPLOYMENT
    assert "stdout" not in DEPLOYMENT


def test_the_compose_steps_name_every_required_variable_and_the_funnel_check() -> None:
    (cp,) = [line for line in DEPLOYMENT.splitlines() if line.startswith("cp .env.example .env")]
    named = set(re.findall(r"[A-Z][A-Z_]+", cp.split("#", 1)[1]))
    assert required_variables(COMPOSE.read_text(encoding="utf-8")) <= named
    assert (COMPOSE.parent / ".env.example").is_file()
    (status,) = commands("docker", "compose", "exec")
    assert status[3] in compose()["services"] and status[4:] == [
        "tailscale",
        "--socket=/tmp/tailscaled.sock",
        "funnel",
        "status",
    ]
    assert commands("cd", "deploy") and commands("docker", "compose", "up")


def test_the_readme_states_the_image_size_and_what_chroot_cannot_show() -> None:
    assert re.search(r"Size: \d+ MB", DEPLOYMENT)
    for unchecked in ("read-only root filesystem", "dropped capabilities", "HEALTHCHECK on its schedule"):
        assert unchecked in DEPLOYMENT
    assert "per replica" in DEPLOYMENT
