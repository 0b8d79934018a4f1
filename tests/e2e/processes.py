"""Helper processes of the browser tests: a private PulseAudio daemon, and stopping a process group for good."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

PULSEAUDIO = "/usr/bin/pulseaudio"


def private_environment(workdir: Path, prefix: str) -> tuple[dict[str, str], Path]:
    """An environment with its own HOME under `workdir` and its own runtime folder; returns both.

    The runtime folder (for PulseAudio's socket) is a short temporary path, since a Unix socket path is limited to
    about 100 bytes; the caller removes it.
    """
    home = workdir / "home"
    runtime = Path(tempfile.mkdtemp(prefix=prefix))
    for folder in (home, runtime):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
    return {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}, runtime


def read_text(path: Path) -> str:
    """The text of a log file, or "" before it exists."""
    return path.read_text(errors="replace") if path.exists() else ""


def stop(process: subprocess.Popen[bytes]) -> None:
    """End `process` and its group (each helper leads its own, so a browser's content processes go with it)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


@contextlib.asynccontextmanager
async def pulseaudio(runtime: Path, env: dict[str, str], log_path: Path) -> AsyncIterator[Path]:
    """A private PulseAudio daemon with a null sink; yields its socket (no sound card, no other audio touched)."""
    socket_path = runtime / "pulse.sock"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                PULSEAUDIO,
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--disallow-exit",
                "--log-target=stderr",
                # The sink first: the socket then appears only once there is somewhere to play to.
                "--load=module-null-sink sink_name=silence",
                f"--load=module-native-protocol-unix socket={socket_path} auth-anonymous=1",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("PulseAudio did not start:\n" + read_text(log_path))
            await asyncio.sleep(0.05)
        yield socket_path
    finally:
        stop(process)
