"""The door: who may open a session or sign in, decided from the request alone.

`Door` answers `Admission(identity)` or `Denial(status, code, message, headers)` for a `DoorRequest`, which holds
what the handshake carried: the socket peer, the client address derived from trusted proxy headers, the scheme,
the headers, cookies and offered subprotocols. The app only turns the answer into an HTTP response.

Rules, in the order they apply:

- Origin: a request that sends `Origin` must come from the relay's own origin (as the client sees it: the `Host`
  header, or `X-Forwarded-Host`/`X-Forwarded-Proto` from a trusted proxy) or from `RELAY_ALLOWED_ORIGINS`.
- Tokens (when configured): `Authorization: Bearer`, the subprotocol `openai-insecure-api-key.<token>`, or the
  signed login cookie (which, on a WebSocket, also needs a matching `Origin`). A wrong token is never ignored, and
  failed attempts are limited per client address.
- Tailscale identity (when trusted): `Tailscale-User-Login` counts only on a connection from a loopback peer listed in
  `RELAY_FORWARDED_ALLOW_IPS` (the local Tailscale proxy, which deletes client-sent `Tailscale-*` headers) and never
  on a Funnel request.
- No tokens: only direct clients on this machine, with no proxy headers and a loopback `Host` (which also stops DNS
  rebinding), are served; demo mode serves everyone; `RELAY_ALLOW_ANONYMOUS` serves all but Funnel requests.
"""

from __future__ import annotations

import html
import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from relay.auth import (
    COOKIE_NAME,
    GENERATE_HINT,
    AttemptCounter,
    LoginCookies,
    TokenSet,
    client_key,
    plain_token_lines,
    token_digest,
    weak_secret_reason,
)
from relay.config import Config, ConfigError
from relay.connection_guard import connection_problem, open_file_limit

#: Where `PeerAddressMiddleware` keeps the socket peer's address, before any proxy header rewrites `client`.
PEER_SCOPE_KEY = "relay.peer"
SUBPROTOCOL_KEY_PREFIX = "openai-insecure-api-key."
#: Headers that only a forwarding proxy adds: their presence means the client is not talking to us directly.
_PROXY_HEADERS = ("x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "forwarded", "x-real-ip", "via")
_FUNNEL_HEADER = "tailscale-funnel-request"
_LOGIN_HEADER = "tailscale-user-login"
_TAILSCALE_LOGIN = re.compile(r"[A-Za-z0-9._%+@-]{1,254}")
#: Every `Denial.reason` a WebSocket handshake can get from the door (metric label values).
DENIAL_REASONS = (
    "missing_token",
    "invalid_token",
    "too_many_attempts",
    "login_expired",
    "origin",
    "anonymous_refused",
    "tailscale_user",
    "conflicting_credentials",
)


@dataclass(frozen=True)
class DoorRequest:
    """What a handshake or HTTP request carried, as far as access is concerned."""

    #: Address of the socket peer (for a proxied request: the proxy).
    peer: str | None
    #: Address of the client: the peer, or what a trusted proxy said in X-Forwarded-For.
    client: str | None
    #: `http`, `https`, `ws` or `wss`, as derived from a trusted X-Forwarded-Proto.
    scheme: str
    #: Header names in lower case, in the order received; a name may repeat.
    headers: tuple[tuple[str, str], ...] = ()
    cookies: Mapping[str, str] = field(default_factory=dict)
    subprotocols: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        """The first value of header `name`, or None."""
        return next((value for key, value in self.headers if key == name), None)

    def header_all(self, name: str) -> list[str]:
        """Every value of header `name`."""
        return [value for key, value in self.headers if key == name]

    @property
    def proxied(self) -> bool:
        """True when any proxy header or any `Tailscale-*` header is present, whoever sent it."""
        return any(key in _PROXY_HEADERS or key.startswith("tailscale-") for key, _ in self.headers)

    @property
    def funnel(self) -> bool:
        """True when the request says it came through Tailscale Funnel (trusted or not: it only restricts)."""
        return self.header(_FUNNEL_HEADER) is not None


def request_from_scope(scope: Scope) -> DoorRequest:
    """Build a `DoorRequest` from an ASGI http or websocket scope."""
    headers = tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", ()))
    client = scope.get("client")
    client_host = client[0] if client else None
    cookie_header = "; ".join(v for k, v in headers if k == "cookie")
    return DoorRequest(
        peer=scope.get(PEER_SCOPE_KEY, client_host),
        client=client_host,
        scheme=str(scope.get("scheme", "http")),
        headers=headers,
        cookies=cookie_parser(cookie_header) if cookie_header else {},
        subprotocols=tuple(scope.get("subprotocols") or ()),
    )


class PeerAddressMiddleware:
    """Records the socket peer's address in the scope before proxy headers replace `client`.

    Must wrap the proxy-headers middleware (and the server must not apply its own), so that the door can tell the
    local proxy apart from a client that merely sends proxy headers.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Annotate http and websocket scopes with the peer address, then pass them on."""
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            scope[PEER_SCOPE_KEY] = client[0] if client else None
        await self.app(scope, receive, send)


# Set in the task that answered a handshake with a denial response; read by `DenialLogFilter` in the same task.
_denied_here: ContextVar[bool] = ContextVar("relay_denied_here", default=False)
_INCOMPLETE_HANDSHAKE = "ASGI callable returned without completing handshake"


def mark_denied() -> None:
    """Note that this connection's handshake was answered with a denial response."""
    _denied_here.set(True)


class DenialLogFilter(logging.Filter):
    """Drops uvicorn's spurious error after a denial response (its websockets-sansio protocol does not count a
    denial as a completed handshake; Kludex/uvicorn#3138). Other incomplete handshakes are still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for that one message in a connection the relay itself denied."""
        return not (_denied_here.get() and record.getMessage().startswith(_INCOMPLETE_HANDSHAKE))


DENIAL_LOG_FILTER = DenialLogFilter()


@dataclass(frozen=True)
class Admission:
    """The request may proceed as `identity`; `subprotocol` is what to answer in the WebSocket handshake."""

    identity: str
    method: str  # token, cookie, tailscale or anonymous
    subprotocol: str | None = None


@dataclass(frozen=True)
class Denial:
    """The request is refused: HTTP status, error code, a message that says what to do, and a bounded reason."""

    status: int
    code: str
    message: str
    reason: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The JSON body of the refusal, in the shape of an OpenAI error."""
        return {"error": {"type": "invalid_request_error", "code": self.code, "message": self.message}}


class TrustedProxies:
    """The peers whose forwarding headers are believed: addresses, networks, or `*`."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._any = False
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._literals: set[str] = set()
        for entry in entries:
            if entry == "*":
                self._any = True
                continue
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._literals.add(entry)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str) or not address:
            return False
        if self._any or address in self._literals:
            return True
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self._networks)


def _ip(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback addresses."""
    ip = _ip(address)
    return ip is not None and ip.is_loopback


def normalize_origin(value: str | None) -> str | None:
    """`scheme://host[:port]` in lower case without a default port, or None if `value` is not an http(s) origin."""
    if not value:
        return None
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in ("http", "https") or not host:
        return None
    shown = f"[{host}]" if ":" in host else host
    if port is not None and port != (443 if scheme == "https" else 80):
        shown += f":{port}"
    return f"{scheme}://{shown}"


def _host_name(host_header: str | None) -> str | None:
    if not host_header:
        return None
    try:
        return urlsplit("//" + host_header.strip()).hostname
    except ValueError:
        return None


def is_loopback_host(host_header: str | None) -> bool:
    """True when a Host header names this machine (`localhost`, `*.localhost` or a loopback address)."""
    name = _host_name(host_header)
    if name is None:
        return False
    return name == "localhost" or name.endswith(".localhost") or is_loopback(name)


def clip(text: str, limit: int = 120) -> str:
    """Attacker-controlled text shown back in a message: printable and short."""
    printable = "".join(ch if ch.isprintable() else "?" for ch in text)
    return printable if len(printable) <= limit else printable[:limit] + "…"


_HOW_TO_AUTHENTICATE = (
    "Send it as `Authorization: Bearer <token>` (the SDK's api_key), as the WebSocket subprotocol "
    "`openai-insecure-api-key.<token>`, or sign in on the relay's web page. The relay's operator gives out tokens."
)


class Door:
    """Decides who may open a session (`admit_websocket`), sign in (`login`) and see what (`identify`)."""

    def __init__(
        self,
        config: Config,
        tokens: TokenSet,
        cookies: LoginCookies,
        limiter: AttemptCounter,
        *,
        simulated: bool = False,
    ) -> None:
        self._config = config
        self._tokens = tokens
        self.cookies = cookies
        self._limiter = limiter
        self._simulated = simulated
        self._trusted = TrustedProxies(config.forwarded_allow_ips)
        self._allowed_origins = {o for o in map(normalize_origin, config.allowed_origins) if o is not None}
        self._tailscale_users = {user.lower() for user in config.tailscale_users}

    @property
    def methods(self) -> list[str]:
        """How a client can authenticate here (shown by /api/config)."""
        methods = ["token"] if self._tokens.configured else []
        if self._config.trust_tailscale_identity:
            methods.append("tailscale")
        return methods

    # -- decisions -------------------------------------------------------------------------------------------

    def admit_websocket(self, request: DoorRequest) -> Admission | Denial:
        """May this WebSocket handshake open a session, and as whom?"""
        return self.check_origin(request) or self._authenticate(request, cookie_needs_origin=True)

    def identify(self, request: DoorRequest) -> Admission | Denial:
        """Who is this plain HTTP request (for /api/config and the page)? No Origin rules: it changes nothing."""
        return self._authenticate(request, cookie_needs_origin=False)

    def login(self, request: DoorRequest, token: str) -> Admission | Denial:
        """May this `POST /auth/login` with `token` sign in? A foreign Origin is refused (cross-site requests)."""
        denial = self.check_origin(request)
        if denial is not None:
            return denial
        if not self._tokens.configured:
            return Denial(
                400,
                "login_not_configured",
                "This relay has no access tokens (RELAY_ACCESS_TOKENS), so there is nothing to sign in with. On "
                "the relay's own machine the page works without signing in; to serve other machines the operator "
                "sets RELAY_ACCESS_TOKENS.",
                "login_not_configured",
            )
        return self._check_token(request, token, None)

    def check_origin(self, request: DoorRequest) -> Denial | None:
        """Refuse a request whose Origin is neither the relay's own nor in RELAY_ALLOWED_ORIGINS."""
        origins = request.header_all("origin")
        if not origins:
            return None
        own = self.own_origin(request)
        origin = normalize_origin(origins[0]) if len(origins) == 1 else None
        if origin is not None and (origin == own or origin in self._allowed_origins):
            return None
        shown = clip(", ".join(origins))
        return Denial(
            403,
            "origin_not_allowed",
            f"This relay does not accept requests from pages at {shown}; it serves its own page at "
            f"{own or 'its own address'}. Open that page instead, or, if {shown} should be allowed, the operator "
            "adds it to RELAY_ALLOWED_ORIGINS.",
            "origin",
        )

    def own_origin(self, request: DoorRequest) -> str | None:
        """The relay's origin as this client sees it."""
        host = request.header("host")
        if request.peer in self._trusted:
            forwarded_host = request.header("x-forwarded-host")
            if forwarded_host:
                host = forwarded_host.split(",")[0].strip()
        if not host:
            return None
        scheme = {"ws": "http", "wss": "https"}.get(request.scheme, request.scheme)
        return normalize_origin(f"{scheme}://{host}")

    def describe(self, request: DoorRequest) -> dict[str, Any]:
        """The `auth` part of /api/config: whether sign-in is required, whether this client is signed in, how."""
        verdict = self.identify(request)
        authenticated = isinstance(verdict, Admission)
        auth: dict[str, Any] = {
            "required": not (isinstance(verdict, Admission) and verdict.method == "anonymous"),
            "authenticated": authenticated,
            "methods": self.methods,
        }
        if isinstance(verdict, Admission):
            auth["identity"] = verdict.identity
        else:
            auth["message"] = verdict.message
        return auth

    def is_local(self, request: DoorRequest) -> bool:
        """True when the client itself is on this machine: a direct loopback connection without proxy headers, or
        one that a trusted proxy forwarded for a loopback client (X-Forwarded-For). A request the local proxy
        forwards for someone else arrives from loopback too; its client address is theirs."""
        if not is_loopback(request.client) or request.funnel:
            return False
        if not request.proxied:
            return True
        return request.peer in self._trusted and request.header("x-forwarded-for") is not None

    def page_refusal(self, request: DoorRequest) -> Denial | None:
        """A refusal to show instead of the web page: only when no sign-in could ever help this client."""
        verdict = self.identify(request)
        if isinstance(verdict, Denial) and verdict.reason == "anonymous_refused":
            return verdict
        return None

    # -- credentials -----------------------------------------------------------------------------------------

    def _authenticate(self, request: DoorRequest, *, cookie_needs_origin: bool) -> Admission | Denial:
        subprotocol = "realtime" if "realtime" in request.subprotocols else None
        stale_cookie = False
        if self._tokens.configured:
            presented = _presented_tokens(request)
            conflict = _conflict(presented)
            if conflict is not None:
                return conflict
            if presented:
                return self._check_token(request, presented[0][1], subprotocol)
            cookie = request.cookies.get(COOKIE_NAME)
            if cookie:
                identity = self.cookies.verify(cookie)
                if identity is not None and self._tokens.has_identity(identity):
                    if cookie_needs_origin and request.header("origin") is None:
                        return Denial(
                            403,
                            "origin_required",
                            "A signed-in browser session may open the WebSocket only from the relay's own page, "
                            "and this handshake sent no Origin. Open the relay's page, or send the token as "
                            "`Authorization: Bearer <token>` instead of the cookie.",
                            "origin",
                        )
                    return Admission(identity, "cookie", subprotocol)
                stale_cookie = True
        tailscale = self._tailscale(request, subprotocol)
        if tailscale is not None:
            return tailscale
        if not self._tokens.configured:
            return self._anonymous(request, subprotocol)
        if stale_cookie:
            return Denial(
                401,
                "login_expired",
                "Your sign-in has expired or is no longer valid. Sign in again on the relay's page with your "
                "access token.",
                "login_expired",
            )
        note = ""
        if request.header(_LOGIN_HEADER) is not None and self._config.trust_tailscale_identity:
            note = (
                " (Tailscale identity headers count only when they come from the local Tailscale proxy; this "
                "request did not.)"
            )
        return Denial(
            401,
            "missing_token",
            f"This relay requires an access token{note}. {_HOW_TO_AUTHENTICATE}",
            "missing_token",
            {"WWW-Authenticate": 'Bearer realm="realtime-relay"'},
        )

    def _check_token(self, request: DoorRequest, token: str, subprotocol: str | None) -> Admission | Denial:
        wait = self._limiter.retry_after(request.client)
        if wait is not None:
            return Denial(
                429,
                "too_many_attempts",
                f"Too many wrong access tokens were tried from your address. Wait {wait} s (Retry-After), then "
                "try again with the right token.",
                "too_many_attempts",
                {"Retry-After": str(wait)},
            )
        identity = self._tokens.identify(token)
        if identity is None:
            self._limiter.record_failure(request.client)
            return Denial(
                401,
                "invalid_token",
                "The access token is not valid for this relay. Check it for typos, or ask the relay's operator "
                "for a current one.",
                "invalid_token",
                {"WWW-Authenticate": 'Bearer realm="realtime-relay", error="invalid_token"'},
            )
        return Admission(identity, "token", subprotocol)

    def _tailscale(self, request: DoorRequest, subprotocol: str | None) -> Admission | Denial | None:
        if not self._config.trust_tailscale_identity:
            return None
        # Only the local proxy deletes what clients send in Tailscale-* headers; from anyone else they are claims.
        if not (is_loopback(request.peer) and request.peer in self._trusted) or request.funnel:
            return None
        logins = request.header_all(_LOGIN_HEADER)
        if len(logins) != 1 or not _TAILSCALE_LOGIN.fullmatch(logins[0].strip()):
            return None
        login = logins[0].strip()
        if self._tailscale_users and login.lower() not in self._tailscale_users:
            return Denial(
                403,
                "tailscale_user_not_allowed",
                f"The tailnet user {login} is not on this relay's list of users (RELAY_TAILSCALE_USERS). Ask the "
                "operator to add you, or use an access token.",
                "tailscale_user",
            )
        return Admission(f"tailscale:{login}", "tailscale", subprotocol)

    def _anonymous(self, request: DoorRequest, subprotocol: str | None) -> Admission | Denial:
        direct_local = is_loopback(request.peer) and not request.proxied
        identity = "anonymous" if direct_local else f"anonymous@{client_key(request.client)}"
        if self._simulated:
            # Demo mode: the model is simulated, no paid key is at stake.
            return Admission(identity, "anonymous", subprotocol)
        if self._config.allow_anonymous and not request.funnel:
            return Admission(identity, "anonymous", subprotocol)
        if direct_local and is_loopback_host(request.header("host")):
            return Admission(identity, "anonymous", subprotocol)
        if request.funnel:
            came = "through Tailscale Funnel, from the public internet"
        elif request.proxied:
            came = "through a proxy"
        elif not is_loopback(request.peer):
            came = "from another machine"
        else:
            came = f"for the host name {clip(request.header('host') or '(none)', 60)}"
        return Denial(
            403,
            "access_tokens_required",
            f"This relay has no access tokens configured, so it serves only its own machine "
            f"(http://127.0.0.1:<port>), and this request came {came}. The relay's operator must set "
            "RELAY_ACCESS_TOKENS (or RELAY_ACCESS_TOKENS_FILE) and restart it; users then sign in with a token.",
            "anonymous_refused",
        )


def _presented_tokens(request: DoorRequest) -> list[tuple[str, str]]:
    """Every access token the request carries, with where it came from (`Authorization` or `subprotocol`)."""
    found: list[tuple[str, str]] = []
    for authorization in request.header_all("authorization"):
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            found.append(("Authorization", value.strip()))
    for offered in request.subprotocols:
        if offered.startswith(SUBPROTOCOL_KEY_PREFIX) and len(offered) > len(SUBPROTOCOL_KEY_PREFIX):
            found.append(("subprotocol", offered[len(SUBPROTOCOL_KEY_PREFIX) :]))
    return found


def _conflict(presented: list[tuple[str, str]]) -> Denial | None:
    """A refusal when the request carries more than one different token.

    Both are refused without looking either up: admitting on the good one would let a client (or a proxy that adds
    a header) smuggle a second credential past whatever checks the other, and judging them would tell a guesser
    which of the two was right.
    """
    if len({token_digest(token) for _, token in presented}) <= 1:
        return None
    places = sorted({where for where, _ in presented})
    if places == ["Authorization", "subprotocol"]:
        where = "the Authorization header and the openai-insecure-api-key subprotocol"
    elif places == ["Authorization"]:
        where = "more than one Authorization header"
    else:
        where = "more than one openai-insecure-api-key subprotocol"
    return Denial(
        401,
        "conflicting_credentials",
        f"The request carries different access tokens (in {where}), so the relay cannot tell which one to "
        "use. Send one token, in one place: as `Authorization: Bearer <token>` or as the subprotocol "
        "`openai-insecure-api-key.<token>`.",
        "conflicting_credentials",
        {"WWW-Authenticate": 'Bearer realm="realtime-relay", error="invalid_request"'},
    )


#: The refusal page's only styling, in one `<style>` element, so that its policy can allow exactly this text.
REFUSAL_STYLE = "body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}"


def refusal_page(denial: Denial) -> str:
    """A small HTML page that explains a refusal to a person who opened the relay in a browser."""
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>realtime-relay: access refused</title>"
        f"<style>{REFUSAL_STYLE}</style><body>"
        f"<h1>Access refused</h1><p>{html.escape(denial.message)}</p>"
        '<p>Operator: generate a token with <code>python3 -c "import secrets; print(secrets.token_urlsafe(32))'
        '"</code>, set it in <code>RELAY_ACCESS_TOKENS</code>, restart the relay, and sign in here with it.</p>'
        "</body></html>"
    )


def startup_problem(config: Config) -> str | None:
    """Why the relay must not start with `config` (one line), or None.

    A relay reachable from the network without tokens would let anyone spend the operator's API key, so that
    needs an explicit `--allow-anonymous` (demo mode has no key at stake, and Tailscale identity is its own gate).
    """
    try:
        tokens = TokenSet.from_config(config)
    except ConfigError as exc:
        return str(exc)
    weak = weak_secret_problem(config)
    if weak is not None:
        return weak
    problem = connection_problem(config, open_file_limit())
    if problem is not None:
        return problem
    open_to_network = not config.binds_only_loopback()
    gated = tokens.configured or config.trust_tailscale_identity
    if open_to_network and not gated and not (config.allow_anonymous or config.demo):
        return (
            f"RELAY_HOST={config.host} is reachable from other machines but no access tokens are set, so anyone "
            "could spend your OpenAI key. Set RELAY_ACCESS_TOKENS (or RELAY_ACCESS_TOKENS_FILE), bind "
            "RELAY_HOST=127.0.0.1, or pass --allow-anonymous (RELAY_ALLOW_ANONYMOUS=true) to accept that risk."
        )
    return None


def weak_secret_problem(config: Config) -> str | None:
    """A placeholder or guessable access token or cookie secret, named by where it is (never by its value).

    A copied `replace-with-...` token would open the relay to anyone who read the example; a guessable cookie secret
    lets anyone sign a login cookie for any identity. Both are refused before the relay listens.
    """
    places: list[tuple[str, str]] = []
    count = len(config.access_tokens)
    for index, token in enumerate(config.access_tokens, start=1):
        places.append((f"RELAY_ACCESS_TOKENS (token {index} of {count})", token))
    if config.access_tokens_file is not None:
        text = config.access_tokens_file.read_text(encoding="utf-8")  # readable: TokenSet.from_config read it
        for number, token in plain_token_lines(text):
            places.append((f"RELAY_ACCESS_TOKENS_FILE line {number}", token))
    if config.cookie_secret:
        places.append(("RELAY_COOKIE_SECRET", config.cookie_secret))
    for where, secret in places:
        reason = weak_secret_reason(secret)
        if reason is not None:
            return f"{where} {reason}; generate a random value with {GENERATE_HINT} and restart"
    return None


def access_summary(config: Config) -> dict[str, Any]:
    """How the relay admits clients, for its start-up log line (counts and modes, never a token)."""
    tokens = TokenSet.from_config(config)
    if tokens.configured:
        anonymous = "nobody"
    elif config.demo:
        anonymous = "everyone (demo)"
    elif config.allow_anonymous:
        anonymous = "everyone except Funnel"
    else:
        anonymous = "this machine only"
    return {
        "access_tokens": len(tokens),
        "tailscale_identity": config.trust_tailscale_identity,
        "tailscale_users": len(config.tailscale_users),
        "anonymous": anonymous,
        "allowed_origins": list(config.allowed_origins),
        "logins_survive_restart": bool(config.cookie_secret),
    }
