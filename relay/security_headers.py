"""Security headers on every response of the public listener: pages, static files, JSON, and handshake refusals.

The web client loads only its own files: one module script, one stylesheet, two audio worklets (script-src), a
`data:` favicon and `data:` SVG masks in the stylesheet (img-src), and it opens a WebSocket to its own origin
(connect-src; `'self'` covers `ws:`/`wss:` of the same host in current browsers, and the relay names that URL
explicitly for the older ones). It has no inline script or style, no `blob:` and no frames, so the policy allows
nothing else. A response that sets its own policy (the refusal page, styled by a hashed `<style>`) keeps it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Directives of the web client's policy, before connect-src (which depends on the relay's origin).
_PAGE_DIRECTIVES = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "media-src 'self'",
    "worker-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)
#: Headers every response gets (unless it sets them itself).
FIXED_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "microphone=(self), camera=(), geolocation=(), payment=(), usb=()",
}
#: What an origin must look like before it is written into a header (a Host header is the client's to choose).
_SAFE_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def page_policy(own_origin: str | None) -> str:
    """The Content-Security-Policy of the web client served at `own_origin` (`scheme://host[:port]` or None)."""
    connect = ["'self'"]
    if own_origin is not None and _SAFE_ORIGIN.fullmatch(own_origin):
        connect.append(
            ("wss" if own_origin.startswith("https:") else "ws") + own_origin[own_origin.index(":") :]
        )
    return "; ".join((*_PAGE_DIRECTIVES, "connect-src " + " ".join(connect)))


def inline_style_policy(css: str) -> str:
    """A policy for a self-contained page styled only by one `<style>` element holding exactly `css`."""
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    return f"default-src 'none'; style-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'; " + (
        "frame-ancestors 'none'"
    )


class SecurityHeadersMiddleware:
    """Adds `FIXED_HEADERS` and the page policy to every HTTP response and every WebSocket handshake refusal."""

    def __init__(self, app: ASGIApp, own_origin: Callable[[Scope], str | None]) -> None:
        self.app = app
        self._own_origin = own_origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, adding the headers to the response as it starts."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                for name, value in FIXED_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("content-security-policy", page_policy(self._own_origin(scope)))
            await send(message)

        await self.app(scope, receive, send_with_headers)
