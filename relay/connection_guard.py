"""The connection guard: every public connection must finish its request head quickly and within size limits, and
open connections are capped below the process's open-file limit.

uvicorn's httptools protocol starts no timer until a first response is sent, buffers a request head of any size,
and counts connections only to answer 503 once a head is complete (`limit_concurrency`), so an idle or trickling
connection is held forever and 1,100 of them exhaust a 1,024 file limit. Its WebSocket layer re-parses the
handshake with the limits of `websockets` (8 KiB lines, 128 header fields) and drops a handshake over them without
any answer. `GuardedHttpToolsProtocol` adds what is missing, in the protocol itself, before the app sees anything:

- a deadline (`RELAY_REQUEST_TIMEOUT_SECONDS`) from the moment a connection opens, or a keep-alive connection
  starts a new request, until that request (head and body) has arrived; then `408` (or, if not one byte came, a
  plain close);
- `431 Request Header Fields Too Large` for a header line over 8 KiB, more than 128 fields or a head over 64 KiB,
  and `414 URI Too Long` for a request line over 8 KiB, the same limits `websockets` applies, so every handshake
  it would drop gets an answer;
- a cap on open connections (`RELAY_MAX_CONNECTIONS`, by default derived from `RLIMIT_NOFILE`). A connection over
  the cap evicts the connection that has waited longest without a request in progress (fresh, trickling or
  keep-alive idle); only when every connection is busy (sessions, requests being answered) is the newcomer
  answered `503`. So idle connections never lock out `/healthz` or a new handshake, whoever holds them.

The deciding parts (`HeadMeter`, `connection_limit`, `pick_to_evict`) do no I/O; the protocol subclass applies them.
"""

from __future__ import annotations

import asyncio
import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import structlog
from uvicorn.config import Config as UvicornConfig
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from relay import protocol
from relay.config import Config

_log = structlog.get_logger("relay.connection_guard")

#: Longest request line or header line (with its CRLF): the limit `websockets` applies to a handshake.
MAX_LINE_BYTES = 8192
#: Most header fields in one request (`websockets` refuses a handshake with more).
MAX_HEADER_FIELDS = 128
#: Largest request head in all.
MAX_HEAD_BYTES = 64 * 1024
#: File descriptors the process needs besides client connections: listening sockets, the event loop, log and library
#: files, the upstream's DNS and TLS look-ups.
FIXED_FILE_RESERVE = 64
#: Connections the metrics listener may hold at once (it has its own cap, so scrapes never compete with clients).
METRICS_CONNECTIONS = 16
#: Connections beyond the sessions that the cap must leave for pages, sign-ins and health checks.
MIN_SPARE_CONNECTIONS = 16
#: Seconds a client refused for a full relay is asked to wait.
RETRY_AFTER_SECONDS = 5


# -- deciding -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """An HTTP answer the guard gives instead of passing a request on."""

    status: int
    code: str
    message: str
    retry_after: int | None = None

    def to_bytes(self) -> bytes:
        """The whole response, with an OpenAI-shaped JSON body, asking the client to close."""
        body = json.dumps(
            {"error": {"type": "invalid_request_error", "code": self.code, "message": self.message}}
        ).encode()
        reason = _REASONS.get(self.status, "Error")
        lines = [
            f"HTTP/1.1 {self.status} {reason}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            "connection: close",
            "x-content-type-options: nosniff",
            "cache-control: no-store",
        ]
        if self.retry_after is not None:
            lines.append(f"retry-after: {self.retry_after}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


_REASONS = {
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}

HEADERS_TOO_LARGE = Refusal(
    431,
    "request_header_fields_too_large",
    f"The request's header fields are too large: the relay accepts header lines up to {MAX_LINE_BYTES} bytes, at "
    f"most {MAX_HEADER_FIELDS} fields and {MAX_HEAD_BYTES} bytes in all. Send smaller headers (for a browser: "
    "clear this site's cookies).",
)
URI_TOO_LONG = Refusal(
    414,
    "uri_too_long",
    f"The request line is longer than {MAX_LINE_BYTES} bytes. Shorten the URL; the relay reads only ?model=, "
    "?input_rate= and ?output_rate=.",
)

MALFORMED_REQUEST = Refusal(
    400,
    "invalid_http_request",
    "The request is not valid HTTP/1.1: its request line or a header has a character or form HTTP does not allow. "
    "Send a well-formed request (text outside ASCII in a URL must be percent-encoded).",
)


def request_timeout_refusal(seconds: float) -> Refusal:
    """The answer to a request that did not arrive in time."""
    return Refusal(
        408,
        "request_timeout",
        f"The request did not arrive within {seconds:g} seconds (RELAY_REQUEST_TIMEOUT_SECONDS). Send the whole "
        "request at once, then connect again.",
    )


def relay_full_refusal(limit: int) -> Refusal:
    """The answer to a connection over the cap when no open connection may be evicted."""
    return Refusal(
        503,
        protocol.LIMIT_EXCEEDED,
        f"The relay is serving as many connections as it may ({limit}, RELAY_MAX_CONNECTIONS). Try again in a few "
        "seconds.",
        RETRY_AFTER_SECONDS,
    )


class HeadMeter:
    """Measures one request head as the parser reports it, and says when it goes over a limit."""

    def __init__(self) -> None:
        self.received = 0
        self._url = 0
        self._fields = 0

    def data(self, size: int) -> Refusal | None:
        """`size` more bytes arrived while the head is incomplete.

        Counted before the parser sees them, so that no head grows past the limit in memory. A chunk that also
        carries the start of a body counts whole: no request the relay serves has a body anywhere near the limit.
        """
        self.received += size
        return HEADERS_TOO_LARGE if self.received > MAX_HEAD_BYTES else None

    def url(self, size: int) -> Refusal | None:
        """Another piece of the request target, `size` bytes."""
        self._url += size
        # "GET " + target + " HTTP/1.1\r\n"
        return URI_TOO_LONG if self._url + len("GET  HTTP/1.1\r\n") > MAX_LINE_BYTES else None

    def field(self, name: bytes, value: bytes) -> Refusal | None:
        """One complete header field."""
        self._fields += 1
        if len(name) + len(value) + 4 > MAX_LINE_BYTES or self._fields > MAX_HEADER_FIELDS:
            return HEADERS_TOO_LARGE
        return None


def open_file_limit() -> int | None:
    """The soft RLIMIT_NOFILE of this process, or None where there is none (Windows) or it is unlimited."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def file_budget(config: Config, open_files: int) -> int:
    """How many public connections fit in `open_files` descriptors, after everything else the relay holds.

    Each session also holds its upstream socket (two in demo mode, where the simulated model's side of that socket
    lives in the same process).
    """
    per_session = 2 if config.demo else 1
    return open_files - FIXED_FILE_RESERVE - METRICS_CONNECTIONS - per_session * config.max_sessions


def connection_limit(config: Config, open_files: int | None) -> int:
    """The cap on open public connections: RELAY_MAX_CONNECTIONS, or what the open-file limit allows."""
    if config.max_connections is not None:
        return config.max_connections
    if open_files is None:
        return max(1024, config.max_sessions + MIN_SPARE_CONNECTIONS)
    return file_budget(config, open_files)


def connection_problem(config: Config, open_files: int | None) -> str | None:
    """Why the connection settings cannot work under the open-file limit (one line), or None."""
    needed = config.max_sessions + MIN_SPARE_CONNECTIONS
    if config.max_connections is not None and config.max_connections < needed:
        return (
            f"RELAY_MAX_CONNECTIONS={config.max_connections} leaves no room beside RELAY_MAX_SESSIONS="
            f"{config.max_sessions} for pages and health checks; set it to at least {needed}"
        )
    if open_files is None:
        return None
    budget = file_budget(config, open_files)
    limit = connection_limit(config, open_files)
    if budget < needed or limit > budget:
        asked = (
            f"RELAY_MAX_CONNECTIONS={limit}"
            if config.max_connections is not None
            else f"{needed} connections"
        )
        return (
            f"the open-file limit (ulimit -n) is {open_files}, too low for {asked} with RELAY_MAX_SESSIONS="
            f"{config.max_sessions}: each session also holds an upstream socket, and the relay keeps "
            f"{FIXED_FILE_RESERVE + METRICS_CONNECTIONS} for itself and /metrics. Raise the limit (ulimit -n, "
            f"LimitNOFILE= in systemd, --ulimit nofile= in Docker), or lower RELAY_MAX_SESSIONS"
            + (" or RELAY_MAX_CONNECTIONS" if config.max_connections is not None else "")
        )
    return None


class Phase(enum.Enum):
    """Where a connection is in its current request."""

    WAITING = "waiting"  # open, nothing received yet (fresh, or keep-alive between requests)
    HEAD = "head"  # part of a request head received
    BODY = "body"  # head complete, body still arriving
    BUSY = "busy"  # request complete: the app is answering it

    @property
    def evictable(self) -> bool:
        """True when closing the connection loses no request in progress."""
        return self in (Phase.WAITING, Phase.HEAD)


def _closing(connection: Any) -> bool:
    transport = getattr(connection, "transport", None)
    return transport is None or bool(transport.is_closing())


def _open_count(connections: Iterable[Any]) -> int:
    """Connections not already on their way out (a closed one leaves uvicorn's set a moment later)."""
    return sum(1 for c in connections if not _closing(c))


def pick_to_evict(connections: Iterable[Any], newcomer: Any) -> GuardedHttpToolsProtocol | None:
    """The connection that has waited longest without a request in progress, other than `newcomer`."""
    candidates = (
        c
        for c in connections
        if isinstance(c, GuardedHttpToolsProtocol)
        and c is not newcomer
        and c.phase.evictable
        and not _closing(c)
    )
    return min(candidates, key=lambda c: c.phase_since, default=None)


# -- applying -------------------------------------------------------------------------------------------------


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; carries the answer to give."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.code)
        self.refusal = refusal


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request deadline, head limits and a connection cap (see module doc).

    Subclasses made by `guarded_protocol` carry the limits of one listener as class attributes, because uvicorn
    builds each connection's protocol from a class.
    """

    max_connections: ClassVar[int] = 1024
    request_timeout: ClassVar[float] = 5.0

    def __init__(
        self,
        config: UvicornConfig,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.phase = Phase.WAITING
        self.phase_since = self.loop.time()
        self._meter = HeadMeter()
        self._deadline: asyncio.TimerHandle | None = None
        self._answered = False

    # -- connection life ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if (
            len(self.connections) > self.max_connections
            and _open_count(self.connections) > self.max_connections
        ):
            evicted = pick_to_evict(self.connections, self)
            if evicted is None:
                _log.warning("connection_refused", reason="full", open=len(self.connections))
                self._answer(relay_full_refusal(self.max_connections))
                return
            _log.debug("connection_evicted", phase=evicted.phase.value, open=len(self.connections))
            evicted.close_quietly()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def close_quietly(self) -> None:
        """Close without an answer (an evicted connection had no request in progress)."""
        self._disarm()
        if not self.transport.is_closing():
            self.transport.close()

    # -- the request head -----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        if self.phase is Phase.WAITING:
            self._enter(Phase.HEAD)
            if self._deadline is None:  # a keep-alive connection starts its next request
                self._arm()
        # Bytes that arrive while a response is underway are a pipelined next request: they count as head too.
        refusal = self._meter.data(len(data)) if self.phase is not Phase.BODY else None
        if refusal is None:
            refusal = self._feed(data)
        if refusal is not None:
            _log.info("request_refused", where="head", status=refusal.status, client=self._client())
            self._answer(refusal)

    def _feed(self, data: bytes) -> Refusal | None:
        """uvicorn's `data_received`, except that a limit hit inside a parser callback gets its own answer.

        httptools turns an exception raised in a callback into `HttpParserCallbackError` (keeping the original as
        its context), which uvicorn would answer with a generic 400.
        """
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Refused):
                return exc.__context__.refusal
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        return None

    def on_url(self, url: bytes) -> None:
        self._check(self._meter.url(len(url)))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._check(self._meter.field(name, value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._enter(Phase.BODY)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._enter(Phase.BUSY)
        self._disarm()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol takes the connection over; the head is complete and within limits.
        self._enter(Phase.BUSY)
        self._disarm()
        super().handle_websocket_upgrade()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            # uvicorn's keep-alive timer governs the wait for the next request; its first byte arms the deadline.
            self._enter(Phase.WAITING)
            self._meter = HeadMeter()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers a request the parser rejects in text/plain; this relay's clients read JSON errors.
        self._answer(MALFORMED_REQUEST)

    # -- helpers --------------------------------------------------------------------------------------------

    def _enter(self, phase: Phase) -> None:
        if phase is not self.phase:
            self.phase = phase
            self.phase_since = self.loop.time()

    @staticmethod
    def _check(refusal: Refusal | None) -> None:
        if refusal is not None:
            raise _Refused(refusal)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._on_deadline)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_deadline(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.phase is Phase.BUSY:
            return
        started = self.cycle is not None and self.cycle.response_started and self.phase is Phase.BODY
        if self.phase is Phase.WAITING or started:
            # Nothing was asked, or the app has begun its answer: closing is the only clear signal left.
            self.close_quietly()
            return
        _log.info(
            "request_timed_out", phase=self.phase.value, received=self._meter.received, client=self._client()
        )
        self._answer(request_timeout_refusal(self.request_timeout))

    def _answer(self, refusal: Refusal) -> None:
        self._answered = True
        self._disarm()
        if not self.transport.is_closing():
            # While the app is answering an earlier request, another answer would corrupt its response.
            if self.phase is not Phase.BUSY:
                self.transport.write(refusal.to_bytes())
            self.transport.close()

    def _client(self) -> str | None:
        return self.client[0] if self.client else None


def guarded_protocol(max_connections: int, request_timeout: float) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for one listener, with its connection cap and request deadline."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"max_connections": max_connections, "request_timeout": request_timeout},
    )


def public_limits(config: Config) -> dict[str, Any]:
    """The public listener's connection cap and request deadline, as logged at start-up."""
    open_files = open_file_limit()
    return {
        "max_connections": connection_limit(config, open_files),
        "request_timeout_s": config.request_timeout_seconds,
        "open_file_limit": open_files,
    }


def public_http_protocol(config: Config) -> type[GuardedHttpToolsProtocol]:
    """The protocol class of the public listener (pass as `uvicorn.Config(http=...)`)."""
    return guarded_protocol(connection_limit(config, open_file_limit()), config.request_timeout_seconds)


def metrics_http_protocol(config: Config) -> type[GuardedHttpToolsProtocol]:
    """The protocol class of the metrics listener: the same deadline, its own small cap."""
    return guarded_protocol(METRICS_CONNECTIONS, config.request_timeout_seconds)
