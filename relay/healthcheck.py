"""`python -m relay.healthcheck`: exit 0 when the relay running beside it answers `GET /healthz`, else 1.

The container image's HEALTHCHECK runs this. The relay's port may come from `RELAY_PORT` or from `--port` on its
command line, and the health check's own environment knows only the first; so the running relay's settings are
read from /proc (its argument list and environment, readable by the same user) and resolved by the relay's own
settings code, exactly as the relay resolved them.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from relay.config import SETTINGS, ConfigError, load_config

_COMMAND = "realtime-relay"
#: Answers on an address that means "every interface" are asked on the matching loopback address.
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


@dataclass(frozen=True)
class RelayProcess:
    """A running `realtime-relay serve`: its arguments after the command name, and its environment."""

    pid: int
    args: list[str]
    env: dict[str, str]


def serve_arguments(argv: Sequence[str]) -> list[str] | None:
    """The arguments of a `realtime-relay` serve command line (console script or `python -m relay`), or None."""
    for index, word in enumerate(argv):
        if Path(word).name == _COMMAND:
            rest = list(argv[index + 1 :])
            break
        if word == "-m" and index + 1 < len(argv) and argv[index + 1] == "relay":
            rest = list(argv[index + 2 :])
            break
    else:
        return None
    if rest and rest[0] == "serve":
        return rest[1:]
    if rest and not rest[0].startswith("-"):
        return None  # another sub-command (fake-upstream, bench)
    return rest


def _split_nul(data: bytes) -> list[str]:
    return [part.decode("utf-8", "replace") for part in data.split(b"\0") if part]


def relay_processes(proc: Path = Path("/proc")) -> Iterator[RelayProcess]:
    """Every relay serve process of this user, oldest (lowest pid) first."""
    uid = os.getuid()
    pids = sorted(int(entry.name) for entry in proc.iterdir() if entry.name.isdigit())
    for pid in pids:
        base = proc / str(pid)
        try:
            if base.stat().st_uid != uid:
                continue
            args = serve_arguments(_split_nul((base / "cmdline").read_bytes()))
            if args is None:
                continue
            pairs = (
                item.split("=", 1) for item in _split_nul((base / "environ").read_bytes()) if "=" in item
            )
            yield RelayProcess(pid, args, dict(pairs))
        except OSError:
            continue  # gone meanwhile, or not ours to read


def health_url(process: RelayProcess) -> str:
    """Where that relay serves /healthz, from its flags and environment as its own start-up resolved them."""
    from relay.cli import build_parser

    args = build_parser().parse_args(["serve", *process.args])
    overrides = {s.name: getattr(args, s.name, None) for s in SETTINGS}
    config = load_config(process.env, overrides)
    host = _ANY_ADDRESS.get(config.host, config.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.port}/healthz"


def check(timeout: float = 2.0, proc: Path = Path("/proc")) -> str | None:
    """None when the relay is healthy, else one line saying what is wrong."""
    process = next(relay_processes(proc), None)
    if process is None:
        return f"no {_COMMAND} process of this user is running"
    try:
        url = health_url(process)
    except (ConfigError, SystemExit):
        return f"the settings of {_COMMAND} (pid {process.pid}) cannot be read back"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (a fixed http URL)
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except OSError as exc:
        return f"{url} did not answer ({type(exc).__name__})"
    return None if 200 <= status < 300 else f"{url} answered {status}"


def main() -> int:
    """Exit status for a container health check: 0 healthy, 1 not (with the reason on stderr)."""
    problem = check()
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
