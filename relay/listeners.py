"""The relay's listening sockets, bound before anything else starts.

Binding first means a port that is taken, or an address this machine does not have, stops the relay with one line
naming the option to change, instead of a traceback from inside uvicorn after the start-up lines were printed; and
the URL printed first is one that already accepts connections.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass


class ListenError(OSError):
    """A listener could not be opened; the message names the setting that chooses its address or port."""


@dataclass(frozen=True)
class Listener:
    """Where one listener should bind, and which settings choose that."""

    host: str
    port: int
    host_option: str
    port_option: str

    def bind(self) -> socket.socket:
        """A listening TCP socket on `host:port`, or `ListenError` saying what to change."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        # Like uvicorn: a restarted relay may bind while old connections of the previous one sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(2048)
        except OSError as exc:
            sock.close()
            raise ListenError(self.explain(exc)) from exc
        return sock

    def explain(self, exc: OSError) -> str:
        """One sentence for a bind failure, naming the option (and variable) that fixes it."""
        where = f"{self.host}:{self.port}"
        if exc.errno == errno.EADDRINUSE:
            return (
                f"port {self.port} on {self.host} is already in use (is another relay running?); "
                f"stop that process or choose another port with {self.port_option}"
            )
        if exc.errno == errno.EACCES:
            return f"not allowed to listen on {where} (ports below 1024 need privileges); choose another with {self.port_option}"
        if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
            return f"cannot listen on {self.host}: not an address of this machine; choose another with {self.host_option}"
        return f"cannot listen on {where} ({exc.strerror or exc}); check {self.host_option} and {self.port_option}"


def bound_port(sock: socket.socket) -> int:
    """The port a socket listens on (the one the system chose when 0 was asked for)."""
    return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Sockets:
    """The relay's two bound listeners: the public one (page, WebSocket, health) and the /metrics one."""

    public: socket.socket
    metrics: socket.socket
