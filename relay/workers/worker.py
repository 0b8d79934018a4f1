"""One worker process: the relay on the inherited public socket, its /metrics on a unix socket for the parent."""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass

import structlog

from relay.config import Config


@dataclass(frozen=True)
class WorkerRole:
    """Which worker this is, where the parent reads its metrics, and whose child it is."""

    index: int
    metrics_path: str
    parent_pid: int


def bind_metrics_socket(path: str) -> socket.socket:
    """A listening unix socket at `path` (only this user may connect: the directory is the parent's, mode 0700)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(64)
    return sock


def run_worker(config: Config, role: WorkerRole, public: socket.socket) -> None:
    """Entry point of a worker process (spawned by relay.workers.supervisor)."""
    from relay.cli import _run, serve, serve_secrets
    from relay.listeners import Sockets
    from relay.logging import configure_logging

    # Out of the terminal's process group: Ctrl-C reaches the parent, which stops the workers once, in order.
    os.setpgrp()
    configure_logging(config.log_format, config.log_level, secrets=serve_secrets(config))
    structlog.contextvars.bind_contextvars(worker=role.index)
    metrics = bind_metrics_socket(role.metrics_path)
    with contextlib.suppress(KeyboardInterrupt):
        _run(serve(config, Sockets(public, metrics), worker=role))
