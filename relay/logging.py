"""structlog set-up: one event name per line, key/value context, JSON or console; uvicorn's logs formatted alike.

Every line goes through the same processors, whether it comes from structlog or from the standard library
(uvicorn, websockets): context bound with `structlog.contextvars` (a session's `session_id` and `identity`) is
merged in, uvicorn's access and WebSocket handshake lines become key/value events with unknown query parameters
redacted, values under secret-looking keys are replaced, and finally any configured secret string (the API key,
access tokens) is cut out of the rendered line, wherever it hides.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "<redacted>"

# Keys whose values must never be written, whatever a caller passes (audio payloads included).
_SECRET_KEYS = frozenset(
    {
        "api_key",
        "openai_api_key",
        "token",
        "access_token",
        "authorization",
        "cookie",
        "set_cookie",
        "secret",
        "cookie_secret",
        "password",
        "audio",
        "delta",
    }
)
# Query parameters that are harmless to log; every other value is redacted (a token may be passed in a query).
SAFE_QUERY_PARAMS = frozenset({"model", "input_rate", "output_rate", "call_id"})
# Secrets shorter than this are not searched for in rendered lines: they would match ordinary text.
MIN_SCRUB_LENGTH = 8

_ACCESS_LOGGER = "uvicorn.access"
_HANDSHAKE_TEMPLATES = {
    '%s - "WebSocket %s" [accepted]': "accepted",
    '%s - "WebSocket %s" 403': "rejected",
    '%s - "WebSocket %s" %d': "rejected",
}
_WEBSOCKETS_PACKAGE = os.sep + "websockets" + os.sep


def redact_query(path: str) -> str:
    """`path?query` with the values of query parameters outside SAFE_QUERY_PARAMS replaced."""
    parts = urlsplit(path)
    if not parts.query:
        return path
    pairs = [
        f"{quote(name, safe='')}={quote(value, safe='') if name in SAFE_QUERY_PARAMS else REDACTED}"
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return f"{parts.path}?{'&'.join(pairs)}"


def _drop_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = REDACTED
    return event_dict


def _uvicorn_lines(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Turn uvicorn's positional access and handshake lines into key/value events without raw query strings."""
    record = event_dict.get("_record")
    args = event_dict.pop("positional_args", None)
    if not isinstance(record, logging.LogRecord) or not isinstance(args, tuple):
        return event_dict
    if record.name == _ACCESS_LOGGER and len(args) == 5:
        client, method, path, http_version, status = args
        event_dict.update(
            event="http_request",
            client=client,
            method=method,
            path=redact_query(str(path)),
            http_version=http_version,
            status=status,
        )
    elif record.msg in _HANDSHAKE_TEMPLATES and len(args) >= 2:
        event_dict.update(
            event="websocket_handshake",
            client=args[0],
            path=redact_query(str(args[1])),
            result=_HANDSHAKE_TEMPLATES[str(record.msg)],
        )
        if len(args) == 3:
            event_dict["status"] = args[2]
        elif event_dict["result"] == "rejected":
            event_dict["status"] = 403
    return event_dict


class _SecretScrubber:
    """Last step: replace every configured secret string in the rendered line."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_SCRUB_LENGTH}, key=len, reverse=True)

    # Placed after the renderer, it receives the rendered line (structlog types every step as taking a dict).
    def __call__(self, _: WrappedLogger, __: str, line: Any) -> Any:
        if not self._secrets or not isinstance(line, str):
            return line
        for secret in self._secrets:
            if secret in line:
                line = line.replace(secret, REDACTED)
        return line


class _LeaveOut(logging.Filter):
    """Drop lines that must not or need not be written.

    The websockets library's debug lines print handshake headers (the upstream's Authorization among them) and
    frame contents (audio). Successful Prometheus scrapes of /metrics would be a line every few seconds.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG and _WEBSOCKETS_PACKAGE in record.pathname:
            return False
        if record.name == _ACCESS_LOGGER and isinstance(record.args, tuple) and len(record.args) == 5:
            _, method, path, _, status = record.args
            return not (method == "GET" and path == "/metrics" and status == 200)
        return True


def resolve_format(log_format: str) -> str:
    """`auto` becomes `console` on a terminal and `json` otherwise; `json` and `console` are kept."""
    if log_format == "auto":
        return "console" if sys.stderr.isatty() else "json"
    return log_format


def configure_logging(log_format: str = "auto", level: str = "info", *, secrets: Iterable[str] = ()) -> None:
    """Route structlog and the standard library (uvicorn included) through one renderer on stderr.

    `log_format` is `json`, `console` or `auto`; `secrets` are strings (API key, access tokens) never to be
    written, wherever they would appear in a line.
    """
    log_format = resolve_format(log_format)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(), sort_keys=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    # The console renderer formats exceptions itself; JSON needs them turned into a string field first.
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if log_format == "json":
        final.append(structlog.processors.format_exc_info)
    final += [renderer, _SecretScrubber(secrets)]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[_uvicorn_lines, *shared],
        processors=final,
        # uvicorn's access and handshake lines are rebuilt from their arguments (see _uvicorn_lines).
        pass_foreign_args=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_LeaveOut())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Each upstream frame would otherwise be a debug line, and its info lines ("server listening on …", from the
    # simulated model in demo mode) are sentences the relay's own events already cover.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, root.level))
