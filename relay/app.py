"""The Starlette application: routes, the WebSocket door, shared runtime state, static web client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from relay import protocol
from relay.access import (
    DENIAL_LOG_FILTER,
    REFUSAL_STYLE,
    Denial,
    Door,
    DoorRequest,
    PeerAddressMiddleware,
    mark_denied,
    refusal_page,
    request_from_scope,
)
from relay.auth import COOKIE_NAME, LoginCookies, TokenSet
from relay.bounds import END_GRACE_SECONDS, SessionBounds
from relay.config import Config
from relay.conversations.http import history_routes
from relay.conversations.replay import item_create_events
from relay.conversations.service import Conversations
from relay.limits import SessionTimers
from relay.metrics import RelayMetrics
from relay.policy import SessionPolicy
from relay.protocol import CloseCode
from relay.providers.metrics import ProviderMetrics
from relay.providers.openers import opener_for, session_defaults_for
from relay.providers.profiles import Profile, ProviderSet, load_profiles, openai_profile
from relay.security_headers import SecurityHeadersMiddleware, inline_style_policy
from relay.session import RelaySession
from relay.session_query import parse_session_query
from relay.session_state import SessionState
from relay.shared_state import SharedState, SharedStateUnavailable, open_shared_state, unavailable_denial
from relay.tools.service import ServerTools
from relay.upstream import upstream_url

_log = structlog.get_logger("relay.app")


def web_root() -> Path:
    """Where the static web client lives: inside the installed package, or beside it in a source checkout."""
    packaged = Path(__file__).parent / "web"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "web"


@dataclass
class Runtime:
    """State shared by every request of one relay process."""

    config: Config
    metrics: RelayMetrics
    upstream_base: str
    api_key: str
    simulated: bool
    tools: ServerTools
    #: The upstream profiles clients choose from (`?provider=` / `?model=`); the first is the default.
    providers: ProviderSet
    provider_metrics: ProviderMetrics
    sessions: set[RelaySession] = field(default_factory=set)
    draining: bool = False
    sessions_changed: asyncio.Event = field(default_factory=asyncio.Event)
    conversations: Conversations | None = None

    def add(self, session: RelaySession) -> None:
        """Count `session` as open."""
        self.sessions.add(session)
        self.sessions_changed.set()

    def discard(self, session: RelaySession) -> None:
        """Count `session` as ended."""
        self.sessions.discard(session)
        self.sessions_changed.set()

    def session_defaults(self) -> dict[str, Any]:
        """Session fields the server applies upstream as soon as a session opens."""
        defaults: dict[str, Any] = {}
        if self.config.instructions:
            defaults["instructions"] = self.config.instructions
        if self.config.voice:
            defaults["audio"] = {"output": {"voice": self.config.voice}}
        return defaults

    async def drain(self, timeout: float) -> None:
        """Stop admitting sessions, give open ones `timeout` seconds to end, then close the rest (1001)."""
        self.draining = True
        _log.info("draining", sessions=len(self.sessions), timeout_s=timeout)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.sessions:
                    self.sessions_changed.clear()
                    await self.sessions_changed.wait()
        remaining = list(self.sessions)
        for session in remaining:
            session.terminate(
                protocol.SERVER_SHUTTING_DOWN,
                "The relay is restarting or shutting down. Connect again in a few seconds.",
                CloseCode.GOING_AWAY,
                "server_shutdown",
            )
        # Each session closes both sides within END_GRACE_SECONDS, whatever its peers do; the margin is for the loop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(END_GRACE_SECONDS + 0.5):
                await asyncio.gather(*(session.wait_closed() for session in remaining))


#: A login body is `{"token": "..."}`; anything much larger is not one.
_LOGIN_BODY_LIMIT = 8192


async def _small_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None if it is larger than `limit` bytes (read no further than that)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _login_token(body: bytes | None) -> str | None:
    try:
        parsed = protocol.loads(body) if body else None
    except ValueError:
        return None
    token = parsed.get("token") if isinstance(parsed, dict) else None
    return token if isinstance(token, str) and token else None


def _denial_response(denial: Denial) -> JSONResponse:
    mark_denied()
    return JSONResponse(denial.body(), status_code=denial.status, headers=dict(denial.headers))


def create_app(
    config: Config,
    *,
    metrics: RelayMetrics | None = None,
    upstream_base: str | None = None,
    api_key: str | None = None,
    simulated: bool = False,
    shared: SharedState | None = None,
    providers: ProviderSet | None = None,
) -> Starlette:
    """Build the relay's public application.

    `providers` are the upstream profiles (default: from the config and the environment); `upstream_base` and
    `api_key` instead make one OpenAI profile of them (demo mode, tests). `shared` is where limits are counted
    (default: Redis when RELAY_REDIS_URL is set, else this process).
    """
    if providers is None:
        if upstream_base is not None or api_key is not None:
            key = config.openai_api_key if api_key is None else api_key
            providers = ProviderSet(
                [openai_profile(config, upstream_base or config.upstream_url, key, simulated=simulated)]
            )
        else:
            providers = ProviderSet(load_profiles(config, os.environ))
    metrics = metrics or RelayMetrics(identity_label=config.metrics_identity_label)
    runtime = Runtime(
        config=config,
        metrics=metrics,
        upstream_base=upstream_base or config.upstream_url,
        api_key=config.openai_api_key if api_key is None else api_key,
        simulated=simulated,
        tools=ServerTools(config, metrics.registry),
        providers=providers,
        provider_metrics=ProviderMetrics(metrics.registry, [p.name for p in providers.profiles]),
    )
    # One policy per profile: a session may name only its own provider's models.
    policies = {
        p.name: SessionPolicy(locked_fields=config.locked_fields, allowed_models=p.models)
        for p in runtime.providers.profiles
    }
    bounds = SessionBounds.from_config(config)
    # Without RELAY_COOKIE_SECRET, logins are signed with a key that lives as long as the process.
    shared = shared or open_shared_state(config, runtime.metrics.registry)
    cookies = LoginCookies(
        config.cookie_secret or secrets.token_bytes(32), config.login_ttl_seconds, revoked=shared.revoked
    )
    door = Door(config, TokenSet.from_config(config), cookies, shared.limiter, simulated=simulated)
    conversations = runtime.conversations = Conversations(config, runtime.metrics)
    conversations.budget.share(shared)
    logging.getLogger("uvicorn.error").addFilter(DENIAL_LOG_FILTER)

    def refused(request: DoorRequest, denial: Denial, where: str) -> None:
        _log.info(
            "request_refused",
            where=where,
            reason=denial.reason,
            status=denial.status,
            client=request.client,
            peer=request.peer,
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        body: dict[str, Any] = {
            "status": "draining" if runtime.draining else "ready",
            "simulated": runtime.simulated,
        }
        # How busy the relay is tells a stranger when to strike; only this machine's own checks see counts.
        if door.is_local(request_from_scope(request.scope)):
            body["sessions"] = len(runtime.sessions)
        if runtime.simulated:
            body["note"] = "The model is SIMULATED (demo mode): no OpenAI API is used."
        return JSONResponse(body, status_code=503 if runtime.draining else 200)

    async def client_config(request: Request) -> Response:
        door_request = request_from_scope(request.scope)
        async with shared.consulted(door_request, required=False):
            auth = door.describe(door_request)
        if not auth["authenticated"]:
            # The sign-in page needs no more; instructions, locks and models are the operator's business.
            return JSONResponse({"simulated": runtime.simulated, "auth": auth})
        return JSONResponse(
            {
                "simulated": runtime.simulated,
                "model": runtime.providers.default.default_model,
                "provider": runtime.providers.default.name,
                "providers": runtime.providers.public(),
                "auth": auth,
                "session": {
                    "voice": config.voice,
                    "instructions": config.instructions,
                    "locked_fields": list(config.locked_fields),
                },
                "audio": {"input_rates": [8000, 192000]},
                "history": conversations.saving,
            }
        )

    async def home(request: Request) -> Response:
        # A relay that could never serve this client says why, instead of showing a page that cannot work.
        door_request = request_from_scope(request.scope)
        async with shared.consulted(door_request, required=False):
            denial = door.page_refusal(door_request)
        if denial is not None:
            policy = {"content-security-policy": inline_style_policy(REFUSAL_STYLE)}
            return HTMLResponse(refusal_page(denial), status_code=denial.status, headers=policy)
        return FileResponse(web_root() / "index.html")

    async def login(request: Request) -> Response:
        door_request = request_from_scope(request.scope)
        try:
            body = await _small_body(request, _LOGIN_BODY_LIMIT)
        except ClientDisconnect:  # gone before the body arrived (or cut off by the request deadline)
            return Response(status_code=400)
        token = _login_token(body)
        if token is None:
            return JSONResponse(
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "invalid_request",
                        "message": 'Send the access token as JSON: {"token": "<your token>"}.',
                    }
                },
                status_code=413 if body is None else 400,
            )
        try:
            async with shared.consulted(door_request):
                verdict = door.login(door_request, token)
        except SharedStateUnavailable:
            verdict = unavailable_denial()
        if isinstance(verdict, Denial):
            runtime.metrics.login_failures.labels(verdict.reason).inc()
            refused(door_request, verdict, "login")
            return _denial_response(verdict)
        _log.info("login", identity=verdict.identity, client=door_request.client)
        response = Response(status_code=204)
        response.set_cookie(
            COOKIE_NAME,
            door.cookies.issue(verdict.identity),
            max_age=door.cookies.ttl_seconds,
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(request: Request) -> Response:
        door_request = request_from_scope(request.scope)
        denial = door.check_origin(door_request)
        if denial is not None:
            refused(door_request, denial, "logout")
            return _denial_response(denial)
        cookie = door_request.cookies.get(COOKIE_NAME)
        if cookie and door.cookies.verify(cookie) is not None:
            # Signed out everywhere, not only in this browser: a copied cookie stops working too.
            try:
                await shared.revoke_login(cookie, door.cookies.ttl_seconds)
            except SharedStateUnavailable:
                _log.warning("logout_not_shared", client=door_request.client)
        response = Response(status_code=204)
        response.delete_cookie(
            COOKIE_NAME, path="/", secure=request.url.scheme == "https", httponly=True, samesite="strict"
        )
        return response

    async def refuse(websocket: WebSocket, door_request: DoorRequest, denial: Denial) -> None:
        runtime.metrics.rejected.labels(denial.reason).inc()
        refused(door_request, denial, "websocket")
        await websocket.send_denial_response(_denial_response(denial))

    async def realtime(websocket: WebSocket) -> None:
        door_request = request_from_scope(websocket.scope)
        if runtime.draining:
            message = "The relay is shutting down; connect again in a few seconds."
            draining = Denial(503, protocol.SERVER_SHUTTING_DOWN, message, "draining", {"Retry-After": "5"})
            await refuse(websocket, door_request, draining)
            return
        try:
            async with shared.consulted(door_request):
                admission = door.admit_websocket(door_request)
        except SharedStateUnavailable:
            admission = unavailable_denial()
        if isinstance(admission, Denial):
            await refuse(websocket, door_request, admission)
            return
        identity = admission.identity
        query = parse_session_query(websocket.query_params.multi_items(), config, runtime.providers)
        if isinstance(query, Denial):
            await refuse(websocket, door_request, query)
            return
        continued = websocket.query_params.get("continue")
        seed: list[str] = []
        if continued is not None:
            items = await conversations.items_to_continue(identity, continued)
            if items is None:
                message = (
                    f"There is no saved conversation {continued[:70]!r} of yours to continue (or this relay does "
                    "not save conversations, or its history database does not answer); list yours with "
                    "GET /api/conversations."
                )
                await refuse(
                    websocket, door_request, Denial(404, "conversation_not_found", message, "history")
                )
                return
            seed = [protocol.dumps(event) for event in item_create_events(items)]
        try:
            limited = await conversations.budget.denial(identity)
        except SharedStateUnavailable:
            limited = unavailable_denial()
        if limited is not None:
            await refuse(websocket, door_request, limited)
            return
        lease = await shared.open_session(identity)
        if isinstance(lease, Denial):
            await refuse(websocket, door_request, lease)
            return
        try:
            profile = runtime.providers.get(query.provider or "") or runtime.providers.default
            await run_session(
                websocket,
                identity,
                admission.subprotocol,
                profile,
                query.model,
                query.rates,
                seed=seed,
                continued=continued,
            )
        finally:
            await shared.close_session(lease)

    async def run_session(
        websocket: WebSocket,
        identity: str,
        subprotocol: str | None,
        profile: Profile,
        model: str,
        rates: dict[str, int],
        *,
        seed: list[str],
        continued: str | None,
    ) -> None:
        # The client's own credential stays here: the upstream handshake carries only the relay's key.
        by_provider = runtime.provider_metrics.for_provider(profile.name)
        session_id = protocol.new_id("rs_", 16)
        tools = runtime.tools.for_session(identity)
        defaults = session_defaults_for(profile, runtime.session_defaults())
        if tools is not None:
            defaults["tools"] = tools.calls.definitions
        tap = conversations.tap(
            session_id, identity, model, continued_from=continued, defaults=defaults or None
        )
        state = SessionState(
            metrics=runtime.metrics,
            policy=policies[profile.name],
            resampler_quality=config.resampler,
            bounds=bounds,
            session_defaults=defaults or None,
            input_rate=rates.get("input_rate", protocol.API_RATE),
            output_rate=rates.get("output_rate", protocol.API_RATE),
            on_usage=lambda tokens: shared.spend(identity, tokens),
            tools=tools.calls if tools is not None else None,
            observer=tap,
            seed=seed,
        )
        session = RelaySession(
            websocket,
            state,
            session_id=session_id,
            identity=identity,
            upstream_url=upstream_url(profile.url, model),
            api_key=profile.credential,
            connect_timeout=config.upstream_connect_timeout,
            bounds=bounds,
            metrics=runtime.metrics,
            subprotocol=subprotocol,
            tool_runner=tools.runner if tools is not None else None,
            opener=opener_for(
                profile, model, config.upstream_connect_timeout, bounds.heartbeat_seconds, by_provider
            ),
        )
        state.on_first_audio = by_provider.first_audio
        session.summary_extra = tap.summary_fields
        # A translated provider resumes its own connections (Gemini Live's session resumption).
        session.renewal = conversations.renewal(tap) if profile.kind != "gemini" else None
        session.recorder = tap.recorder
        if tap.rollover is not None and session.renewal is not None:
            state.swallow = tap.rollover.swallow
        tap.opened()
        runtime.add(session)
        session.log.info(
            "session_opened",
            provider=profile.name,
            model=model,
            input_rate=state.input_rate,
            output_rate=state.output_rate,
        )
        timers = SessionTimers(
            config.max_session_seconds, config.idle_timeout_seconds, session.last_client_activity
        )
        watchdog = asyncio.create_task(session.enforce_timers(timers), name=f"{session_id}-timers")
        started = time.monotonic()
        try:
            # Every line the session logs names its provider.
            with structlog.contextvars.bound_contextvars(provider=profile.name):
                end = await session.run()
            by_provider.session_ended(end.outcome, time.monotonic() - started)
        finally:
            watchdog.cancel()
            tap.closed()
            runtime.discard(session)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await shared.start()
        await runtime.tools.start()  # bounded; a server that cannot be used stops the start-up, naming it
        await conversations.start()
        try:
            yield
            if runtime.sessions:
                await runtime.drain(0)
        finally:
            await conversations.stop()
            await runtime.tools.close()
            await shared.aclose()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/api/config", client_config),
            Route("/auth/login", login, methods=["POST"]),
            Route("/auth/logout", logout, methods=["POST"]),
            WebSocketRoute("/v1/realtime", realtime),
            *history_routes(door, conversations),
            Route("/", home),
            Route("/index.html", home),
            Mount("/", StaticFiles(directory=web_root(), html=True), name="web"),
        ],
        middleware=[
            # Outermost: the socket peer is recorded before proxy headers may replace the client address. The
            # server itself must run without proxy headers (see relay.cli), or the peer would already be gone.
            Middleware(PeerAddressMiddleware),
            Middleware(ProxyHeadersMiddleware, trusted_hosts=list(config.forwarded_allow_ips)),
            # Inside the proxy-headers middleware, so that the policy names the origin the client sees.
            Middleware(
                SecurityHeadersMiddleware, own_origin=lambda scope: door.own_origin(request_from_scope(scope))
            ),
        ],
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.shared = shared
    app.state.conversations = conversations
    return app
