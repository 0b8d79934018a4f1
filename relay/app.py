"""The Starlette application: routes, the WebSocket door, shared runtime state, static web client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from relay import protocol
from relay.config import Config
from relay.metrics import RelayMetrics
from relay.policy import SessionPolicy
from relay.protocol import CloseCode
from relay.session import RelaySession
from relay.session_state import SessionState, check_rate
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
    sessions: set[RelaySession] = field(default_factory=set)
    draining: bool = False
    sessions_changed: asyncio.Event = field(default_factory=asyncio.Event)

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
            await session.terminate(
                protocol.SERVER_SHUTTING_DOWN,
                "The relay is restarting or shutting down. Connect again in a few seconds.",
                CloseCode.GOING_AWAY,
                "server_shutdown",
            )
        for session in remaining:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3):
                    await session.wait_closed()


def _deny(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": "invalid_request_error", "code": code, "message": message}},
        status_code=status,
        headers=headers,
    )


def create_app(
    config: Config,
    *,
    metrics: RelayMetrics | None = None,
    upstream_base: str | None = None,
    api_key: str | None = None,
    simulated: bool = False,
) -> Starlette:
    """Build the relay's public application. `upstream_base`/`api_key` override the config (demo mode)."""
    runtime = Runtime(
        config=config,
        metrics=metrics or RelayMetrics(identity_label=config.metrics_identity_label),
        upstream_base=upstream_base or config.upstream_url,
        api_key=config.openai_api_key if api_key is None else api_key,
        simulated=simulated,
    )
    policy = SessionPolicy(locked_fields=config.locked_fields)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        body = {
            "status": "draining" if runtime.draining else "ready",
            "simulated": runtime.simulated,
            "sessions": len(runtime.sessions),
        }
        if runtime.simulated:
            body["note"] = "The model is SIMULATED (demo mode): no OpenAI API is used."
        return JSONResponse(body, status_code=503 if runtime.draining else 200)

    async def client_config(request: Request) -> Response:
        return JSONResponse(
            {
                "simulated": runtime.simulated,
                "model": config.model,
                "auth": {"required": False, "authenticated": True, "methods": []},
                "session": {
                    "voice": config.voice,
                    "instructions": config.instructions,
                    "locked_fields": list(config.locked_fields),
                },
                "audio": {"input_rates": [8000, 192000]},
            }
        )

    async def realtime(websocket: WebSocket) -> None:
        params = websocket.query_params
        if runtime.draining:
            runtime.metrics.rejected.labels("draining").inc()
            await websocket.send_denial_response(
                _deny(
                    503,
                    protocol.SERVER_SHUTTING_DOWN,
                    "The relay is shutting down; connect again in a few seconds.",
                    {"Retry-After": "5"},
                )
            )
            return
        model = params.get("model") or config.model
        if model not in config.models:
            runtime.metrics.rejected.labels("model").inc()
            await websocket.send_denial_response(
                _deny(
                    403,
                    protocol.POLICY_VIOLATION,
                    f"Model {model!r} is not offered by this relay; use one of: {', '.join(config.models)}.",
                )
            )
            return
        rates: dict[str, int] = {}
        for name in ("input_rate", "output_rate"):
            raw = params.get(name)
            if raw is None:
                continue
            value: Any = int(raw) if raw.isdigit() else raw
            problem = check_rate(value, name)
            if problem is not None:
                runtime.metrics.rejected.labels("bad_rate").inc()
                await websocket.send_denial_response(_deny(400, protocol.BAD_AUDIO, problem))
                return
            rates[name] = value
        if len(runtime.sessions) >= config.max_sessions:
            runtime.metrics.rejected.labels("capacity").inc()
            await websocket.send_denial_response(
                _deny(
                    503,
                    protocol.LIMIT_EXCEEDED,
                    f"The relay is at its limit of {config.max_sessions} sessions (RELAY_MAX_SESSIONS); try again "
                    "in a minute.",
                    {"Retry-After": "30"},
                )
            )
            return
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
        session_id = protocol.new_id("rs_", 16)
        state = SessionState(
            metrics=runtime.metrics,
            policy=policy,
            resampler_quality=config.resampler,
            max_message_bytes=config.max_message_bytes,
            session_defaults=runtime.session_defaults() or None,
            input_rate=rates.get("input_rate", protocol.API_RATE),
            output_rate=rates.get("output_rate", protocol.API_RATE),
        )
        session = RelaySession(
            websocket,
            state,
            session_id=session_id,
            identity="anonymous",
            upstream_url=upstream_url(runtime.upstream_base, model),
            api_key=runtime.api_key,
            connect_timeout=config.upstream_connect_timeout,
            pending_limit=config.pending_events_limit,
            metrics=runtime.metrics,
        )
        runtime.add(session)
        session.log.info(
            "session_opened", model=model, input_rate=state.input_rate, output_rate=state.output_rate
        )
        try:
            await session.run()
        finally:
            runtime.discard(session)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if runtime.sessions:
            await runtime.drain(0)

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/api/config", client_config),
            WebSocketRoute("/v1/realtime", realtime),
            Mount("/", StaticFiles(directory=web_root(), html=True), name="web"),
        ],
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app
