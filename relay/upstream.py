"""Opening the upstream Realtime socket, and turning each way it can fail into words a client can act on."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from relay import protocol
from relay.bounds import END_GRACE_SECONDS
from relay.protocol import CloseCode
from relay.wire.dial import Dialled, dial

# Audio deltas and `conversation.item.retrieved` can be large; the relay's own limit is on what clients send.
UPSTREAM_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class UpstreamFailure(Exception):
    """The upstream could not be used: what to tell the client, and how to close its socket."""

    code: str
    message: str
    close_code: int
    reason: str  # a bounded label for metrics and logs

    def __str__(self) -> str:
        return self.message


def upstream_url(base: str, model: str) -> str:
    """Return the upstream URL with `model` set in the query (replacing one already there)."""
    parts = urlsplit(base)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "model"] + [("model", model)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def describe_endpoint(url: str) -> str:
    """The upstream as it may be shown to people: scheme, host and path, never a query or credentials."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def classify_failure(
    exc: BaseException, url: str, timeout: float, credential_name: str = "OPENAI_API_KEY"
) -> UpstreamFailure:
    """Map an exception raised while connecting upstream to an `UpstreamFailure`. Never includes secrets."""
    where = describe_endpoint(url)
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status in (401, 403):
            return UpstreamFailure(
                protocol.UPSTREAM_AUTH_FAILED,
                f"The upstream ({where}) refused the relay's API key (HTTP {status}). This is a server "
                f"configuration problem: the operator must set a valid {credential_name}.",
                CloseCode.UPSTREAM_AUTH,
                f"http_{status}",
            )
        if status == 429:
            return UpstreamFailure(
                protocol.UPSTREAM_RATE_LIMITED,
                f"The upstream ({where}) is rate-limiting this relay (HTTP 429). Wait a minute and connect again.",
                CloseCode.UPSTREAM_RATE_LIMITED,
                "http_429",
            )
        return UpstreamFailure(
            protocol.UPSTREAM_UNAVAILABLE,
            f"The upstream ({where}) refused the connection with HTTP {status}. Try again shortly; if it persists, "
            "the operator should check the upstream's status.",
            CloseCode.UPSTREAM_UNAVAILABLE,
            f"http_{status // 100}xx",
        )
    if isinstance(exc, TimeoutError):
        return UpstreamFailure(
            protocol.UPSTREAM_TIMEOUT,
            f"The upstream ({where}) did not answer within {timeout:g} s. Try again shortly.",
            CloseCode.UPSTREAM_TIMEOUT,
            "timeout",
        )
    if isinstance(exc, OSError):
        return UpstreamFailure(
            protocol.UPSTREAM_UNAVAILABLE,
            f"The relay could not reach the upstream ({where}): {exc.strerror or type(exc).__name__}. Try again "
            "shortly; if it persists, the operator should check RELAY_UPSTREAM_URL and the network.",
            CloseCode.UPSTREAM_UNAVAILABLE,
            "unreachable",
        )
    if isinstance(exc, InvalidHandshake | websockets.exceptions.ConnectionClosed):
        return UpstreamFailure(
            protocol.UPSTREAM_UNAVAILABLE,
            f"The upstream ({where}) failed the WebSocket handshake ({type(exc).__name__}). Try again shortly.",
            CloseCode.UPSTREAM_UNAVAILABLE,
            "handshake",
        )
    return UpstreamFailure(
        protocol.UPSTREAM_UNAVAILABLE,
        f"The connection to the upstream ({where}) failed ({type(exc).__name__}). Try again shortly.",
        CloseCode.UPSTREAM_UNAVAILABLE,
        "error",
    )


def lost_connection(url: str) -> UpstreamFailure:
    """The failure to report when an open upstream connection drops without a close frame."""
    return UpstreamFailure(
        protocol.UPSTREAM_UNAVAILABLE,
        f"The connection to the upstream ({describe_endpoint(url)}) was lost mid-session. Connect again to start "
        "a new session.",
        CloseCode.UPSTREAM_UNAVAILABLE,
        "dropped",
    )


async def open_upstream(
    url: str,
    api_key: str,
    timeout: float,
    *,
    headers: dict[str, str] | None = None,
    credential_name: str = "OPENAI_API_KEY",
) -> Dialled:
    """Open the upstream socket with `Authorization: Bearer <api_key>` (or the given `headers`); raise
    `UpstreamFailure` on any failure. `credential_name` is the setting an operator fixes when the key is refused.

    The connection comes back right after its handshake, for a `FrameLink` to take over (`relay.wire.dial`).
    """
    sent = dict(headers or {})
    if api_key:
        sent["Authorization"] = f"Bearer {api_key}"
    try:
        return await dial(url, sent, timeout)
    except Exception as exc:
        raise classify_failure(exc, url, timeout, credential_name) from None


async def open_message_socket(
    url: str,
    timeout: float,
    heartbeat: float,
    *,
    headers: dict[str, str],
    credential_name: str,
) -> ClientConnection:
    """Open a WebSocket whose messages a translating provider reads and writes itself (relay.providers.gemini);
    raise `UpstreamFailure` on any failure. It is pinged every `heartbeat` seconds and counts as lost when an
    answer takes as long again.
    """
    try:
        async with asyncio.timeout(timeout):
            return await connect(
                url,
                additional_headers=headers,
                user_agent_header="realtime-relay",
                max_size=UPSTREAM_MAX_MESSAGE_BYTES,
                compression=None,  # audio is base64 and barely compresses
                open_timeout=None,
                max_queue=64,  # a deep read queue only hides backpressure
                ping_interval=heartbeat,
                ping_timeout=heartbeat,
                close_timeout=END_GRACE_SECONDS,
            )
    except Exception as exc:
        raise classify_failure(exc, url, timeout, credential_name) from None
