"""The `realtime-relay` command: `serve` (the default), `fake-upstream`, and `bench`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
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
from relay.config import SETTINGS, Config, ConfigError, load_config, with_changes
from relay.logging import configure_logging
from relay.metrics import RelayMetrics

_log = structlog.get_logger("relay")

NO_KEY_MESSAGE = (
    "OPENAI_API_KEY is not set. Set it to relay to OpenAI "
    "(OPENAI_API_KEY=sk-... realtime-relay), or run `realtime-relay --demo` to talk to the built-in simulated model."
)


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
    parser = argparse.ArgumentParser(
        prog="realtime-relay",
        description="Relay browser and SDK clients to the OpenAI Realtime API; the API key stays on the server.",
    )
    sub = parser.add_subparsers(dest="command")
    _serve_parser(sub.add_parser("serve", help="run the relay (the default)"))
    fake = sub.add_parser("fake-upstream", help="serve the simulated Realtime model alone")
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
    _fake_model_options(fake)
    fake.add_argument("--api-key", default=None, help="require this bearer key (default: accept any)")
    bench = sub.add_parser("bench", help="run a benchmark and print its figures")
    bench.add_argument("what", choices=["resample", "relay"], help="what to measure")
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
        if args.what == "relay":
            from relay import bench_relay

            return bench_relay.main(args.rest)
        from relay import bench

        return bench.main([args.what, *args.rest])
    overrides = {s.name: getattr(args, s.name, None) for s in SETTINGS}
    try:
        config = load_config(overrides=overrides)
    except ConfigError as exc:
        print(f"realtime-relay: {exc}", file=sys.stderr)
        return 2
    config = with_changes(config, demo=args.demo)
    problem = startup_problem(config)
    if problem is not None:
        print(f"realtime-relay: {problem}", file=sys.stderr)
        return 2
    if not config.openai_api_key and not config.demo:
        print(f"realtime-relay: {NO_KEY_MESSAGE}", file=sys.stderr)
        return 2
    configure_logging(
        config.log_format,
        config.log_level,
        secrets=(config.openai_api_key, config.cookie_secret, *config.access_tokens),
    )
    with contextlib.suppress(KeyboardInterrupt):
        _run(serve(config))
    return 0


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
    # Options named as on the command line carry over as they are.
    same = [
        "api_key",
        "refuse_status",
        "handshake_delay",
        "drop_after_events",
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
    """A uvicorn server that leaves signals to the public server, which stops it after draining."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


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


async def serve(config: Config) -> None:
    """Run the public listener and the metrics listener until a shutdown signal."""
    metrics = RelayMetrics(identity_label=config.metrics_identity_label)
    fake_server = None
    upstream_base, api_key = config.upstream_url, config.openai_api_key
    if config.demo:
        from relay.fake.model import FakeOptions
        from relay.fake.server import FakeRealtimeServer

        demo_key = "demo-" + secrets.token_urlsafe(16)
        fake_server = FakeRealtimeServer(FakeOptions(api_key=demo_key, pace_audio=True, record=False))
        await fake_server.start("127.0.0.1", 0)
        upstream_base, api_key = fake_server.url, demo_key
        _log.warning(
            "model_simulated",
            detail="DEMO MODE: the relay talks to its built-in simulated model, "
            "not to OpenAI. Set OPENAI_API_KEY and drop --demo to use the real API.",
        )
    app = create_app(
        config, metrics=metrics, upstream_base=upstream_base, api_key=api_key, simulated=config.demo
    )

    async def exposition(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    metrics_app = Starlette(routes=[Route("/metrics", exposition)])
    metrics_server = _CompanionServer(
        uvicorn.Config(
            metrics_app,
            host=config.metrics_host,
            port=config.metrics_port,
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
            log_config=None,
            # The app reads proxy headers itself (relay.access), after noting who the socket peer is.
            proxy_headers=False,
            ws_max_size=max(4 * config.max_message_bytes, 16 * 1024 * 1024),
            ws_per_message_deflate=False,
            # Measured with `bench relay`: about a third less CPU per session than uvicorn's legacy websockets layer.
            ws="websockets-sansio",
            timeout_graceful_shutdown=5,
        ),
        app.state.runtime,
        [metrics_server],
    )
    _log.info("access_control", **access_summary(config))
    _log.info(
        "relay_starting",
        public=f"http://{config.host}:{config.port}",
        metrics=f"http://{config.metrics_host}:{config.metrics_port}/metrics",
        upstream="simulated" if config.demo else config.upstream_url,
        config=repr(config),
    )
    try:
        await asyncio.gather(public.serve(), metrics_server.serve())
    finally:
        if fake_server is not None:
            await fake_server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
