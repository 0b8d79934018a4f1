"""The I/O layer of the simulated Realtime server: handshake checks, one `SimulatedModel` per socket, pacing.

Per connection there is one reader (client events → model), one writer (a queue drained in order onto the
socket, which is also where the misbehaviour switches act), a pacing task per response and a session timer.
Everything the model decides goes through the queue, so events leave in exactly the order the model produced
them even while a response streams and client events keep arriving.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qs

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from relay.fake.model import SimulatedModel, beta_rejection_events
from relay.fake.models import REALTIME_MODELS
from relay.fake.options import FakeOptions
from relay.fake.response import Event, ResponseStream
from relay.fake.transcription import TranscriptStream
from relay.protocol import dumps, error_event, loads

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

DEFAULT_MODEL = "gpt-realtime"
#: Large enough for a 15 MiB append once base64-encoded and wrapped in JSON.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
GARBAGE_FRAME = "this is not JSON {"
INSECURE_KEY_PREFIX = "openai-insecure-api-key."


@dataclass
class ConnectionRecord:
    """What one handshake and connection carried, for tests to inspect.

    `handshake_status` is 101 for an accepted upgrade, the HTTP status the handshake was refused with, or None
    while the handshake is still pending (`handshake_delay`). `received` holds the client events that parsed
    as JSON objects; `input_audio` the decoded bytes of every accepted `input_audio_buffer.append`, in the
    session's input format (24 kHz PCM16 unless the client chose G.711). `model` is the live protocol state.
    """

    request_headers: dict[str, str]
    path: str
    query: dict[str, str]
    handshake_status: int | None = None
    subprotocol: str | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    input_audio: bytearray = field(default_factory=bytearray)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    model: SimulatedModel | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def notify(self) -> None:
        """Wake everything waiting on this record."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_until(self, predicate: Callable[[], _T | None], timeout: float, what: str) -> _T:
        async def poll() -> _T:
            while True:
                changed = self._changed
                result = predicate()
                if result is not None:
                    return result
                await changed.wait()

        try:
            return await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}") from None

    async def wait_for_received(
        self, event_type: str, timeout: float = 5.0, count: int = 1
    ) -> dict[str, Any]:
        """Wait until the client has sent `count` events of `event_type`; return the `count`-th."""
        return await self._wait_until(
            lambda: _nth(self.received, event_type, count), timeout, f"{count}× received {event_type}"
        )

    async def wait_for_sent(self, event_type: str, timeout: float = 5.0, count: int = 1) -> dict[str, Any]:
        """Wait until the server has sent `count` events of `event_type`; return the `count`-th."""
        return await self._wait_until(
            lambda: _nth(self.sent, event_type, count), timeout, f"{count}× sent {event_type}"
        )

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        """Wait until the connection is over; return its close code."""
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code

    def received_types(self) -> list[str]:
        """Types of the client events, in order."""
        return [str(e.get("type")) for e in self.received]

    def sent_types(self) -> list[str]:
        """Types of the server events, in order."""
        return [str(e.get("type")) for e in self.sent]


def _nth(events: list[dict[str, Any]], event_type: str, count: int) -> dict[str, Any] | None:
    seen = 0
    for candidate in events:
        if candidate.get("type") == event_type:
            seen += 1
            if seen == count:
                return candidate
    return None


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


class FakeRealtimeServer:
    """A simulated OpenAI Realtime (GA) server on a local port."""

    def __init__(self, options: FakeOptions | None = None) -> None:
        self.options = options if options is not None else FakeOptions()
        self.connections: list[ConnectionRecord] = []
        self._server: Server | None = None
        self._accepted: dict[ServerConnection, tuple[ConnectionRecord, FakeOptions]] = {}
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._returned = 0
        self._host = "127.0.0.1"

    # ----- lifecycle -----

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeRealtimeServer:
        """Listen on `host:port` (port 0 picks a free one). Returns self."""
        self._host = host
        self._stopping = asyncio.Event()
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            select_subprotocol=_select_subprotocol,
            max_size=MAX_MESSAGE_BYTES,
            # Handshake stalls are a feature here (handshake_delay); stop() ends them instead of a timeout.
            open_timeout=None,
        )
        return self

    async def stop(self) -> None:
        """Close every connection (1001) and stop listening."""
        if self._server is None:
            return
        server, self._server = self._server, None
        self._stopping.set()
        # Upgrades accepted but never handed to a handler (the client vanished mid-handshake) end here too.
        for record, _ in self._accepted.values():
            record.closed.set()
        self._accepted.clear()
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), 5.0)
        except TimeoutError:
            # websockets 17 also lists connections still in their handshake; 16 (which the Agents SDK pins) does not.
            for connection in list(getattr(server, "all_connections", server.connections)):
                connection.transport.abort()
            await server.wait_closed()

    async def __aenter__(self) -> FakeRealtimeServer:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._server is None:
            raise RuntimeError("server not started")
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """The WebSocket URL of the Realtime endpoint, without query."""
        return f"ws://{self._host}:{self.port}/v1/realtime"

    # ----- inspection -----

    async def wait_for_connection(self, timeout: float = 5.0) -> ConnectionRecord:
        """Wait for the next handshake not returned by an earlier call (refused ones included)."""
        wanted = self._returned + 1

        async def poll() -> ConnectionRecord:
            while len(self.connections) < wanted:
                changed = self._changed
                await changed.wait()
            return self.connections[wanted - 1]

        try:
            record = await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            raise TimeoutError(f"no connection #{wanted} within {timeout} s") from None
        self._returned = wanted
        return record

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ----- handshake -----

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        options = dataclasses.replace(self.options)
        path, _, query_string = request.path.partition("?")
        query = {k: v[-1] for k, v in parse_qs(query_string, keep_blank_values=True).items()}
        headers: dict[str, str] = {}
        for name, value in request.headers.raw_items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        record = ConnectionRecord(request_headers=headers, path=path, query=query)
        if options.record:
            self.connections.append(record)
            self._notify()
        if options.handshake_delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), options.handshake_delay)
        refusal = self._refusal(options, path, request.headers) or _model_refusal(query)
        if refusal is not None:
            status, body = refusal
            record.handshake_status = status
            record.closed.set()
            record.notify()
            log.info("fake_handshake_refused", status=status, path=path)
            return _json_response(connection, status, body)
        record.handshake_status = 101
        self._accepted[connection] = (record, options)
        return None

    @staticmethod
    def _refusal(options: FakeOptions, path: str, headers: Headers) -> tuple[int, dict[str, Any]] | None:
        if options.refuse_status is not None:
            return options.refuse_status, _refusal_body(options.refuse_status)
        if not path.endswith("/realtime"):
            return 404, _error_body(f"Invalid URL (GET {path})", "invalid_request_error", "unknown_url")
        if options.api_key is not None and not _authorized(headers, options.api_key):
            if "authorization" not in headers and not _offered_key(headers):
                message = (
                    "You didn't provide an API key. Provide it in the Authorization header (Bearer auth)."
                )
            else:
                message = "Incorrect API key provided."
            return 401, _error_body(message, "invalid_request_error", "invalid_api_key")
        return None

    # ----- connection -----

    async def _handle(self, websocket: ServerConnection) -> None:
        accepted = self._accepted.pop(websocket, None)
        if accepted is None:  # stop() began between the upgrade and this handler
            return
        record, options = accepted
        record.subprotocol = websocket.subprotocol
        model_name = record.query.get("model") or DEFAULT_MODEL
        session = _Session(websocket, record, options, model_name)
        log.info("fake_connection_opened", path=record.path, model=model_name)
        try:
            await session.run()
        finally:
            record.close_code = websocket.close_code if websocket.close_code is not None else 1006
            record.closed.set()
            record.notify()
            log.info(
                "fake_connection_closed",
                code=record.close_code,
                received=session.received_count,
                sent=session.sent_count,
            )


class _Session:
    """One accepted socket: reader loop, ordered writer, response pacing, session timer."""

    def __init__(
        self, websocket: ServerConnection, record: ConnectionRecord, options: FakeOptions, model_name: str
    ) -> None:
        self._ws = websocket
        self._record = record
        self._options = options
        self._model = SimulatedModel(
            options,
            model_name,
            audio_sink=record.input_audio if options.record else None,
            transcription_only=record.query.get("intent") == "transcription",
        )
        record.model = self._model
        self._queue: asyncio.Queue[Event | _Close] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self.received_count = 0
        self.sent_count = 0
        self._garbage_sent = False
        self._drop_at = _drop_point(options.drop_at_event)
        self._sent_of_type: dict[str, int] = {}

    def _spawn(self, coroutine: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _enqueue(self, events: list[Event]) -> None:
        for item in events:
            self._queue.put_nowait(item)

    async def run(self) -> None:
        writer = self._spawn(self._write_loop())
        try:
            beta = self._record.request_headers.get("openai-beta", "")
            if "realtime=v1" in beta.replace(" ", ""):
                self._enqueue(beta_rejection_events())
                self._queue.put_nowait(_Close(4000, "beta api shape disabled"))
                await writer
                return
            self._enqueue(self._model.opening_events())
            self._spawn(self._expire())
            await self._read_loop()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _read_loop(self) -> None:
        try:
            async for message in self._ws:
                self.received_count += 1
                self._enqueue(self._handle_message(message))
                stream = self._model.pop_started_response()
                if stream is not None:
                    self._spawn(self._pace(stream))
                for transcript in self._model.pop_background():
                    self._spawn(self._pace(transcript))
        except ConnectionClosed:
            pass

    def _handle_message(self, message: str | bytes) -> list[Event]:
        if isinstance(message, bytes):
            return self._model.handle_message(message)
        try:
            parsed = loads(message)
        except ValueError:
            return self._model.handle_message(message)
        if self._options.record and isinstance(parsed, dict):
            self._record.received.append(parsed)
            self._record.notify()
        return self._model.handle(parsed)

    async def _pace(self, stream: ResponseStream | TranscriptStream) -> None:
        # Deadlines accumulate from the moment response.created was queued, so the first audio delta leaves
        # first_audio_delay after it, and pacing does not drift with scheduling jitter.
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while (delay := stream.next_delay()) is not None:
            deadline += delay
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            self._enqueue(stream.emit())

    async def _expire(self) -> None:
        await asyncio.sleep(self._options.session_seconds)
        self._enqueue(self._model.expiry_events())
        self._queue.put_nowait(_Close(1001, "session expired"))

    async def _write_loop(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _Close):
                    await self._ws.close(item.code, item.reason)
                    return
                if self._options.record:
                    self._record.sent.append(item)
                    self._record.notify()
                await self._ws.send(dumps(item))
                self.sent_count += 1
                if self._options.server_error_after_events == self.sent_count:
                    # The API's transient fault: an error event of type server_error, the session going on.
                    message = "The server had an error while processing your request. Sorry about that!"
                    await self._ws.send(
                        dumps(error_event("server_error", message, error_type="server_error"))
                    )
                if self._options.garbage_after_events == self.sent_count and not self._garbage_sent:
                    self._garbage_sent = True
                    await self._ws.send(GARBAGE_FRAME)
                if self._options.drop_after_events == self.sent_count or self._drop_point_reached(item):
                    await self._abort()
                    return
        except ConnectionClosed:
            return

    def _drop_point_reached(self, item: Event) -> bool:
        if self._drop_at is None:
            return False
        kind = str(item.get("type"))
        self._sent_of_type[kind] = self._sent_of_type.get(kind, 0) + 1
        return (kind, self._sent_of_type[kind]) == self._drop_at

    async def _abort(self) -> None:
        # Let the events already written reach the peer, then cut TCP without a close frame.
        transport = self._ws.transport
        for _ in range(200):
            if transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.005)
        log.info("fake_connection_dropped", after_events=self.sent_count)
        transport.abort()


def _drop_point(spec: str | None) -> tuple[str, int] | None:
    """`"response.done:2"` → ("response.done", 2); a bare type means its first event."""
    if not spec:
        return None
    kind, _, count = spec.partition(":")
    return kind, int(count) if count else 1


def _model_refusal(query: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
    # The API refuses a model it does not serve before upgrading; transcription sessions name none.
    model = query.get("model")
    if model is None or model in REALTIME_MODELS:
        return None
    message = f"The model '{model}' does not exist or you do not have access to it."
    return 400, _error_body(message, "invalid_request_error", "model_not_found")


def _select_subprotocol(connection: ServerConnection, offered: Any) -> Subprotocol | None:
    # Browsers fail the handshake unless one offered subprotocol is echoed; OpenAI echoes "realtime".
    return Subprotocol("realtime") if "realtime" in offered else None


def _offered_key(headers: Headers) -> list[str]:
    keys = []
    for value in headers.get_all("Sec-WebSocket-Protocol"):
        for protocol in value.split(","):
            protocol = protocol.strip()
            if protocol.startswith(INSECURE_KEY_PREFIX):
                keys.append(protocol[len(INSECURE_KEY_PREFIX) :])
    return keys


def _authorized(headers: Headers, api_key: str) -> bool:
    if headers.get("Authorization", "") == f"Bearer {api_key}":
        return True
    return api_key in _offered_key(headers)


def _error_body(message: str, error_type: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def _refusal_body(status: int) -> dict[str, Any]:
    if status == 401:
        return _error_body("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
    if status == 403:
        return _error_body(
            "Country, region, or territory not supported.",
            "request_forbidden",
            "unsupported_country_region_territory",
        )
    if status == 429:
        return _error_body(
            "Rate limit reached for requests. Please try again later.", "requests", "rate_limit_exceeded"
        )
    if status >= 500:
        return _error_body("The server had an error while processing your request.", "server_error", None)
    return _error_body(f"Request refused with status {status}.", "invalid_request_error", None)


def _json_response(connection: ServerConnection, status: int, body: dict[str, Any]) -> Response:
    try:
        response = connection.respond(http.HTTPStatus(status), dumps(body) + "\n")
    except ValueError:
        # Not a registered status: build the response by hand.
        response = Response(status, "Error", Headers(), (dumps(body) + "\n").encode())
        response.headers["Content-Length"] = str(len(response.body))
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    if status == 429:
        response.headers["Retry-After"] = "1"
    return response


async def run_fake_upstream(host: str, port: int, options: FakeOptions) -> None:
    """Serve the simulated model on `host:port` until cancelled.

    Nobody inspects recordings of a standalone server, so they are off: a long run must not grow in memory.
    """
    server = FakeRealtimeServer(dataclasses.replace(options, record=False))
    await server.start(host, port)
    log.info("fake_upstream_started", url=server.url)
    try:
        await asyncio.Future()
    finally:
        await server.stop()
