"""`python -m relay.healthcheck`: exit 0 when the relay running beside it answers `GET /healthz`, else 1.

The container image's HEALTHCHECK runs this. The relay's port may come from `RELAY_PORT` or from `--port` on its
command line, and the health check's own environment knows only the first; so the running relay's argument list and
environment are read from /proc (readable by the same user) and resolved as the relay resolves them: a flag wins
over its variable, which wins over the default. Only `--host` and `--port` matter here, and they are parsed without
importing the relay's settings (which load numpy): Docker runs this every 15 s, so it should cost little.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

_COMMAND = "realtime-relay"
#: The relay's defaults for RELAY_HOST and RELAY_PORT (tests hold them to relay.config).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
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
    """Where that relay serves /healthz, from its flags and environment as its own start-up resolved them.

    Raises ValueError when they hold no usable address.
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--host")
    parser.add_argument("--port")
    flags, _ = parser.parse_known_args(process.args)
    host = (flags.host or process.env.get("RELAY_HOST") or DEFAULT_HOST).strip()
    port = int(flags.port or process.env.get("RELAY_PORT") or DEFAULT_PORT)
    if not 0 < port < 65536:
        raise ValueError(f"port {port}")
    host = _ANY_ADDRESS.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def check(timeout: float = 2.0, proc: Path = Path("/proc")) -> str | None:
    """None when the relay is healthy, else one line saying what is wrong."""
    process = next(relay_processes(proc), None)
    if process is None:
        return f"no {_COMMAND} process of this user is running"
    try:
        url = health_url(process)
    except ValueError:
        return f"the address of {_COMMAND} (pid {process.pid}) cannot be read from its settings"
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
