"""The `realtime-relay` command: `serve` (the default), `fake-upstream`, and `bench`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
from collections.abc import Coroutine, Generator, Sequence
from types import FrameType
from typing import Any

import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay.access import access_summary, startup_problem
from relay.app import Runtime, create_app
from relay.cli_args import StrictParser
from relay.client_socket import RelayWebSocketProtocol
from relay.config import SETTINGS, Config, ConfigError, load_config, with_changes
from relay.connection_guard import metrics_http_protocol, public_http_protocol, public_limits
from relay.listeners import Listener, ListenError, Sockets, bound_port
from relay.logging import configure_logging
from relay.metrics import RelayMetrics
from relay.providers.profiles import ProviderSet, load_profiles
from relay.startup import config_fields, first_line
from relay.tools.hub import ToolStartupError
from relay.tools.settings import ToolSettingsError, load_tool_settings
from relay.workers.cores import worker_count, workers_problem
from relay.workers.worker import WorkerRole

_log = structlog.get_logger("relay")

NO_KEY_MESSAGE = (
    "OPENAI_API_KEY is not set. Set it to relay to OpenAI "
    "(OPENAI_API_KEY=sk-... realtime-relay), or run `realtime-relay --demo` to talk to the built-in simulated model."
)


SERVE_USAGE = "realtime-relay [serve] [--demo] [options]"


def _env_only_settings() -> list[tuple[str, str]]:
    """(environment variable, help) of every setting that has no flag: secrets, kept out of process lists."""
    return [(s.env, s.help) for s in SETTINGS if s.secret]


def _environment_epilog() -> str:
    lines = ["settings read only from the environment (never from a flag, which `ps` would show):"]
    lines += [f"  {env:<22}{text}" for env, text in _env_only_settings()]
    lines.append("every serve option also has a RELAY_* environment variable, shown in brackets in its help.")
    return "\n".join(lines)


def _serve_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--demo", action="store_true", help="use the built-in simulated model (no API key needed)"
    )
    parser.add_argument(
        "--allow-anonymous",
        action="store_true",
        default=None,
        help="serve without access tokens on a non-loopback address (RELAY_ALLOW_ANONYMOUS)",
    )
    for setting in SETTINGS:
        if setting.secret or setting.name == "allow_anonymous":
            continue  # secrets only from the environment, never from a command line visible in `ps`
        parser.add_argument(
            "--" + setting.name.replace("_", "-"),
            dest=setting.name,
            metavar="VALUE",
            help=f"{setting.help} [{setting.env}]",
        )


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser; `serve` options are accepted with or without the word `serve`."""
    parser = StrictParser(
        prog="realtime-relay",
        description="Relay browser and SDK clients to the OpenAI Realtime API; the API key stays on the server.",
        epilog=_environment_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    _serve_parser(
        sub.add_parser(
            "serve",
            help="run the relay (the default: `realtime-relay --port 9000` means `realtime-relay serve --port 9000`)",
            usage=SERVE_USAGE,
            epilog=_environment_epilog(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            env_only={"--" + s.name.replace("_", "-"): s.env for s in SETTINGS if s.secret},
        )
    )
    fake = sub.add_parser("fake-upstream", help="serve the simulated Realtime (or Gemini Live) model alone")
    fake.add_argument(
        "--kind",
        choices=["openai", "gemini"],
        default="openai",
        help="which protocol to serve (default openai)",
    )
    fake.add_argument(
        "--connection-seconds",
        type=float,
        default=600.0,
        help="gemini: a connection's time limit, announced by goAway one second before (default 600)",
    )
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=8765)
    fake.add_argument(
        "--refuse-status", type=int, default=None, help="answer every handshake with this status"
    )
    fake.add_argument(
        "--handshake-delay", type=float, default=0.0, help="stall each handshake this many seconds"
    )
    fake.add_argument(
        "--drop-after-events", type=int, default=None, help="drop the TCP connection after N events"
    )
    fake.add_argument(
        "--garbage-after-events", type=int, default=None, help="send malformed JSON after N events"
    )
    fake.add_argument(
        "--drop-at-event",
        default=None,
        metavar="TYPE[:N]",
        help="drop the TCP connection right after the Nth event of TYPE (default N=1)",
    )
    _fake_model_options(fake)
    fake.add_argument("--api-key", default=None, help="require this bearer key (default: accept any)")
    bench = sub.add_parser(
        "bench", help="run a benchmark and print its figures (resample, frames, relay side by side)"
    )
    bench.add_argument("what", choices=["resample", "relay", "frames"], help="what to measure")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `realtime-relay` command."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in ("-h", "--help")):
        args_list.insert(0, "serve")
    args = build_parser().parse_args(args_list)
    if args.command == "fake-upstream":
        return _run_fake_upstream(args)
    if args.command == "bench":
        return _run_bench(args.what, args.rest)
    overrides = {s.name: getattr(args, s.name, None) for s in SETTINGS}
    try:
        config = load_config(overrides=overrides)
    except ConfigError as exc:
        print(f"realtime-relay: {exc}", file=sys.stderr)
        return 2
    config = with_changes(config, demo=args.demo)
    workers = worker_count(config.workers)
    problem = startup_problem(config) or workers_problem(workers, config.redis_url)
    if problem is not None:
        print(f"realtime-relay: {problem}", file=sys.stderr)
        return 2
    providers = None
    if not config.demo:
        try:
            providers = ProviderSet(load_profiles(config, os.environ))
        except ConfigError as exc:
            print(f"realtime-relay: {exc}", file=sys.stderr)
            return 2
        missing = [p for p in providers.profiles if not p.has_credential()]
        if missing and config.providers_file is None and missing[0].kind == "openai":
            print(f"realtime-relay: {NO_KEY_MESSAGE}", file=sys.stderr)
            return 2
        if missing:
            names = ", ".join(f"{p.credential_env} (provider {p.name!r})" for p in missing)
            print(
                f"realtime-relay: {names} not set; set it, or run `realtime-relay --demo`.", file=sys.stderr
            )
            return 2
    try:
        load_tool_settings(config.tools_file, demo=config.demo)
    except ToolSettingsError as exc:
        print(f"realtime-relay: {exc}", file=sys.stderr)
        return 2
    try:
        sockets = _bind(config)
    except ListenError as exc:
        print(f"realtime-relay: {exc}", file=sys.stderr)
        return 1
    configure_logging(config.log_format, config.log_level, secrets=serve_secrets(config, providers))
    try:
        with contextlib.suppress(KeyboardInterrupt):
            if workers > 1:
                from relay.workers.supervisor import supervise

                _log.info(
                    "relay_listening",
                    **first_line(
                        config,
                        bound_port(sockets.public),
                        bound_port(sockets.metrics),
                        access_summary(config),
                    ),
                    workers=workers,
                )
                _run(supervise(config, sockets, workers))
            else:
                _run(serve(config, sockets, providers))
    except ToolStartupError as exc:
        print(f"realtime-relay: {exc}", file=sys.stderr)
        return 2
    return 0


def serve_secrets(config: Config, providers: ProviderSet | None = None) -> tuple[str, ...]:
    """Values the logs must never show (the Redis URL may carry a password; each provider its credential)."""
    credentials = tuple(p.credential for p in (providers.profiles if providers else ()) if p.credential)
    return (
        config.openai_api_key,
        config.cookie_secret,
        config.redis_url,
        *config.access_tokens,
        *credentials,
    )


def _run_bench(what: str, rest: list[str]) -> int:
    # Imported only when asked for: the relay itself needs none of the benchmarks' dependencies.
    if what == "resample":
        from relay.bench import resample

        return resample.main(rest)
    if what == "frames":
        from relay.bench import frames

        return frames.main(rest)
    try:
        from relay.bench import side_by_side
    except ImportError as exc:
        print(
            f"realtime-relay bench relay needs {exc.name}: pip install 'realtime-relay[bench]'",
            file=sys.stderr,
        )
        return 2
    return side_by_side.main(rest)


def _bind(config: Config) -> Sockets:
    public = Listener(config.host, config.port, "--host (RELAY_HOST)", "--port (RELAY_PORT)").bind()
    try:
        metrics = Listener(
            config.metrics_host,
            config.metrics_port,
            "--metrics-host (RELAY_METRICS_HOST)",
            "--metrics-port (RELAY_METRICS_PORT)",
        ).bind()
    except ListenError:
        public.close()
        raise
    return Sockets(public, metrics)


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop where it is installed (it is with uvicorn[standard], except on Windows)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def _fake_model_options(fake: argparse.ArgumentParser) -> None:
    """Pacing and fault switches of the simulated model; defaults are the model's own (realistic) ones."""
    from relay.fake.options import FakeOptions

    d = FakeOptions()
    pacing = fake.add_argument_group(
        "pacing (the API streams faster than real time, in chunks of varying size)"
    )
    _number(
        pacing,
        "--first-audio-delay",
        float,
        d.first_audio_delay,
        "seconds from response.created to the first delta",
    )
    _number(
        pacing, "--audio-speed", float, d.audio_speed, "times faster than real time audio is sent; 0: at once"
    )
    pacing.add_argument(
        "--chunk-ms",
        type=int,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=list(d.chunk_ms),
        help=f"shortest and longest audio delta in ms (default {d.chunk_ms[0]} {d.chunk_ms[1]})",
    )
    _number(
        pacing,
        "--transcription-delay",
        float,
        d.transcription_delay,
        "seconds from a commit to its transcript",
    )
    _number(pacing, "--seed", int, None, "seed of the chunk lengths (default: random)")
    faults = fake.add_argument_group("fault switches")
    faults.add_argument(
        "--fail-responses", action="store_true", help="every response ends with status failed"
    )
    faults.add_argument(
        "--fail-transcription",
        action="store_true",
        help="transcriptions end with input_audio_transcription.failed",
    )
    _number(
        faults, "--rate-limit-after-responses", int, None, "responses after the first N fail rate-limited"
    )
    _number(
        faults,
        "--server-error-after-events",
        int,
        None,
        "one server_error after N events; the session goes on",
    )
    _number(
        faults, "--session-seconds", float, d.session_seconds, "session length, then session_expired and 1001"
    )


def _number(group: Any, flag: str, kind: type, default: float | None, text: str) -> None:
    shown = "" if default is None else f" (default {default:g})"
    group.add_argument(flag, type=kind, default=default, metavar="N", help=text + shown)


def _run_fake_upstream(args: argparse.Namespace) -> int:
    from relay.fake.model import FakeOptions
    from relay.fake.server import run_fake_upstream

    configure_logging("auto", "info")
    if args.kind == "gemini":
        from relay.fake.gemini.options import GeminiOptions
        from relay.fake.gemini.server import run_fake_gemini

        gemini = GeminiOptions(
            api_key=args.api_key,
            first_audio_delay=args.first_audio_delay,
            audio_speed=args.audio_speed,
            connection_seconds=args.connection_seconds,
            go_away_seconds=min(1.0, args.connection_seconds / 2),
            record=False,
        )
        with contextlib.suppress(KeyboardInterrupt):
            _run(run_fake_gemini(args.host, args.port, gemini))
        return 0
    # Options named as on the command line carry over as they are.
    same = [
        "api_key",
        "refuse_status",
        "handshake_delay",
        "drop_after_events",
        "drop_at_event",
        "garbage_after_events",
        "first_audio_delay",
        "transcription_delay",
        "seed",
        "fail_responses",
        "rate_limit_after_responses",
        "server_error_after_events",
        "fail_transcription",
        "session_seconds",
    ]
    options = FakeOptions(
        **{name: getattr(args, name) for name in same},
        pace_audio=args.audio_speed > 0,
        audio_speed=args.audio_speed or 1.0,
        chunk_ms=(args.chunk_ms[0], args.chunk_ms[1]),
    )
    with contextlib.suppress(KeyboardInterrupt):
        _run(run_fake_upstream(args.host, args.port, options))
    return 0


class _CompanionServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the public server, which stops it after draining.

    It also leaves out uvicorn's "Started/Finished server process" lines: the public server already writes them for
    this process, and a second pair reads like a second process.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        if not self.config.loaded:
            self.config.load()
        self.lifespan = self.config.lifespan_class(self.config)
        await self.startup(sockets=sockets)
        if not self.should_exit:
            await self.main_loop()
        if self.started:
            await self.shutdown(sockets=sockets)


class _DrainingServer(uvicorn.Server):
    """A uvicorn server that, on the first SIGTERM/SIGINT, drains sessions before it stops (a second one forces)."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime, companions: list[uvicorn.Server]) -> None:
        super().__init__(config)
        self._runtime = runtime
        self._companions = companions
        self._drain_requested = False
        self._drain: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self._drain_requested:
            _log.info("shutdown_requested", signal=sig, sessions=len(self._runtime.sessions))
            loop = asyncio.get_running_loop()
            loop.call_soon_threadsafe(self._start_drain)
            self._drain_requested = True
            return
        super().handle_exit(sig, frame)

    def _start_drain(self) -> None:
        self._drain = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        await self._runtime.drain(self._runtime.config.drain_seconds)
        self.should_exit = True
        for server in self._companions:
            server.should_exit = True


async def serve(
    config: Config,
    sockets: Sockets | None = None,
    providers: ProviderSet | None = None,
    *,
    worker: WorkerRole | None = None,
) -> None:
    """Run the public listener and the metrics listener until a shutdown signal.

    `sockets` are the listeners already bound by `main` (bound here when not given); `providers` the upstream
    profiles (in demo mode: the simulated OpenAI and Gemini models). A `worker` of `--workers N` leaves the
    start-up lines to its parent, and drains when the parent is gone.
    """
    if sockets is None:
        sockets = _bind(config)
    metrics = RelayMetrics(identity_label=config.metrics_identity_label)
    fake_server = None
    gemini_server = None
    upstream_base, api_key = config.upstream_url, config.openai_api_key
    if config.demo:
        from relay.fake.gemini.options import GeminiOptions
        from relay.fake.gemini.server import FakeGeminiServer
        from relay.fake.model import FakeOptions
        from relay.fake.server import FakeRealtimeServer
        from relay.providers.demo import demo_providers

        demo_key = "demo-" + secrets.token_urlsafe(16)
        fake_server = FakeRealtimeServer(FakeOptions(api_key=demo_key, pace_audio=True, record=False))
        await fake_server.start("127.0.0.1", 0)
        upstream_base, api_key = fake_server.url, demo_key
        gemini_server = FakeGeminiServer(GeminiOptions(api_key=demo_key, record=False))
        await gemini_server.start("127.0.0.1", 0)
        providers = demo_providers(config, fake_server.url, gemini_server.url, demo_key)
    app = create_app(
        config,
        metrics=metrics,
        upstream_base=upstream_base,
        api_key=api_key,
        simulated=config.demo,
        providers=providers,
    )

    async def exposition(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    metrics_app = Starlette(routes=[Route("/metrics", exposition)])
    metrics_server = _CompanionServer(
        uvicorn.Config(
            metrics_app,
            host=config.metrics_host,
            port=config.metrics_port,
            http=metrics_http_protocol(config),
            log_config=None,
            # Not access_log=False: uvicorn applies that to the process-wide "uvicorn.access" logger, which would
            # silence the public listener's access lines too. relay.logging leaves out successful scrapes instead.
            lifespan="off",
        )
    )
    public = _DrainingServer(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            http=public_http_protocol(config),
            log_config=None,
            # The app reads proxy headers itself (relay.access), after noting who the socket peer is.
            proxy_headers=False,
            ws_per_message_deflate=False,
            # Answers the upgrade; after it the relay takes the connection over (relay.client_socket), and its own
            # frame link keeps the connection alive and bounds message sizes.
            ws=RelayWebSocketProtocol,
            # Sessions are closed by the drain (each within END_GRACE_SECONDS) before the server stops, so what
            # is left is a stuck peer: the drain must end within RELAY_DRAIN_SECONDS + 2 s whatever clients do.
            timeout_graceful_shutdown=1,
        ),
        app.state.runtime,
        [metrics_server],
    )
    if worker is not None:
        _log.info("worker_serving", pid=os.getpid())
        orphan_watch = asyncio.create_task(_drain_when_orphaned(public, worker.parent_pid))
    else:
        _announce(config, sockets)
    try:
        # Before the listeners serve: a tool server that cannot be used stops the relay with one line.
        await app.state.runtime.tools.start()
        await asyncio.gather(public.serve([sockets.public]), metrics_server.serve([sockets.metrics]))
    finally:
        if worker is not None:
            orphan_watch.cancel()
        if fake_server is not None:
            await fake_server.stop()
        if gemini_server is not None:
            await gemini_server.stop()


async def _drain_when_orphaned(server: uvicorn.Server, parent_pid: int) -> None:
    """A worker whose parent died (SIGKILL, OOM) drains as on SIGTERM instead of holding the port forever."""
    while True:  # polled: no signal tells a child that its parent is gone
        await asyncio.sleep(1)
        if os.getppid() != parent_pid:
            break
    _log.warning("worker_orphaned", parent_pid=parent_pid)
    server.handle_exit(signal.SIGTERM, None)


def _announce(config: Config, sockets: Sockets) -> None:
    access = access_summary(config)
    _log.info(
        "relay_listening",
        **first_line(config, bound_port(sockets.public), bound_port(sockets.metrics), access),
    )
    if config.demo:
        _log.warning(
            "model_simulated",
            detail="DEMO MODE: the relay talks to its built-in simulated model, "
            "not to OpenAI. Set OPENAI_API_KEY and drop --demo to use the real API.",
        )
    _log.info("access_control", **access)
    _log.info("relay_config", **config_fields(config))
    _log.info("connection_limits", **public_limits(config))


if __name__ == "__main__":
    raise SystemExit(main())
