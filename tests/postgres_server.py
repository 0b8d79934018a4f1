"""A real PostgreSQL server for tests: initdb and pg_ctl in a temp dir, on a free loopback port.

PostgreSQL refuses to run as root, so as root the server runs as an unprivileged user (`postgres` when the Debian
package created it, else `nobody`) with the data directory handed to that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.harness import free_port


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def postgres_available() -> bool:
    """True when initdb and pg_ctl are installed (Debian: the postgresql package)."""
    return _binary("initdb") is not None and _binary("pg_ctl") is not None


def _as_user() -> tuple[list[str], str | None]:
    if os.geteuid() != 0:
        return [], None
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["runuser", "-u", user, "--"], user
    raise RuntimeError("running as root without a postgres or nobody user to run PostgreSQL as")


@dataclass
class PostgresServer:
    """A running server: the URL of its `postgres` database, and a way to stop it early (a database gone)."""

    url: str
    stop: Callable[[], None]


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Run PostgreSQL until the block ends (or `stop()`)."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    prefix, user = _as_user()
    root = Path(tempfile.mkdtemp(prefix="relay-pg-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (root, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    port = free_port()
    password = "relay-test-password"
    pwfile = root / "pw"
    pwfile.write_text(password)
    if user is not None:
        os.chown(pwfile, pwd.getpwnam(user).pw_uid, -1)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "check": True, "timeout": 120}
    subprocess.run(
        [
            *prefix,
            initdb,
            "-D",
            str(data),
            "-U",
            "relay",
            f"--pwfile={pwfile}",
            "-A",
            "scram-sha-256",
            "--no-sync",
        ],
        **quiet,  # type: ignore[call-overload]
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off -c full_page_writes=off"
    subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-o", options, "-w", "-t", "60", "start"],
        **quiet,  # type: ignore[call-overload]
    )

    def stop() -> None:
        if data.exists():
            subprocess.run(
                [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
                check=False,
            )

    try:
        yield PostgresServer(f"postgresql://relay:{password}@127.0.0.1:{port}/postgres", stop)
    finally:
        stop()
        shutil.rmtree(root, ignore_errors=True)
