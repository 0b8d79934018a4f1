"""The I/O layer of the simulated Gemini Live server: the handshake, one `GeminiSimModel` per socket, pacing of
model turns, and the connection time limit (`goAway`, then close).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from relay.fake.gemini.model import GeminiSimModel, Memory, Output, decode_bytes, normalize
from relay.fake.gemini.options import GeminiOptions

log = structlog.get_logger(__name__)

PATH_PREFIX = "/ws/google.ai.generativelanguage."
METHOD = ".GenerativeService.BidiGenerateContent"
BAD_KEY_REASON = "API key not valid. Please pass a valid API key."


@dataclass
class GeminiRecord:
    """What one connection carried, for tests: headers, messages both ways, and the input audio at its rate."""

    request_headers: dict[str, str]
    path: str
    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    #: time.monotonic() of each message received and sent, index by index.
    received_at: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    input_audio: bytearray = field(default_factory=bytearray)
    input_rates: set[int] = field(default_factory=set)
    model: GeminiSimModel | None = None
    close_code: int | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def sent_kinds(self) -> list[str]:
        """The top-level key of every message sent, in order (`serverContent`, `toolCall`, ...)."""
        return [next(iter(m)) for m in self.sent]


class FakeGeminiServer:
    """A simulated Gemini Live server on a local port."""

    def __init__(self, options: GeminiOptions | None = None) -> None:
        self.options = options if options is not None else GeminiOptions()
        self.connections: list[GeminiRecord] = []
        self._memories: dict[str, Memory] = {}
        self._server: Server | None = None
        self._host = "127.0.0.1"
        self._tls = False
        self._changed = asyncio.Event()

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> FakeGeminiServer:
        """Listen on `host:port` (0: a free port), with TLS when `tls` is given. Returns self."""
        self._host = host
        self._tls = tls is not None
        self._server = await serve(
            self._handle, host, port, process_request=self._process_request, max_size=2**25, ssl=tls
        )
        return self

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), 5.0)
        except TimeoutError:
            for connection in list(server.connections):
                connection.transport.abort()

    @property
    def port(self) -> int:
        """The listening port."""
        if self._server is None:
            raise RuntimeError("server not started")
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """The `BidiGenerateContent` WebSocket URL (v1beta), as Google's."""
        return f"{'wss' if self._tls else 'ws'}://{self._host}:{self.port}{PATH_PREFIX}v1beta{METHOD}"

    @property
    def base_url(self) -> str:
        """What google-genai's `http_options.base_url` should be to reach this server."""
        return f"{'https' if self._tls else 'http'}://{self._host}:{self.port}"

    async def wait_for_connection(self, count: int = 1, timeout: float = 5.0) -> GeminiRecord:
        """Wait until `count` connections were accepted; return the `count`-th."""
        async with asyncio.timeout(timeout):
            while len(self.connections) < count:
                changed = self._changed
                await changed.wait()
        return self.connections[count - 1]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if not (path.startswith(PATH_PREFIX) and path.endswith(METHOD)):
            body = json.dumps(
                {"error": {"code": 404, "message": "Not found.", "status": "NOT_FOUND"}}
            ).encode()
            response = connection.respond(404, "")
            response.body = body
            response.headers["Content-Type"] = "application/json"
            return response
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        options = dataclasses.replace(self.options)
        assert ws.request is not None
        headers = {k.lower(): v for k, v in ws.request.headers.raw_items()}
        record = GeminiRecord(request_headers=headers, path=ws.request.path)
        if options.record:
            self.connections.append(record)
            self._notify()
        query = parse_qs(ws.request.path.partition("?")[2])
        key = headers.get("x-goog-api-key") or (query.get("key") or [""])[-1]
        try:
            if options.api_key is not None and key != options.api_key:
                # The key is judged when the setup arrives, as Google's service does: the refusal is a close frame.
                with contextlib.suppress(ConnectionClosed, TimeoutError):
                    await asyncio.wait_for(ws.recv(), 5)
                await ws.close(1008, BAD_KEY_REASON)
                return
            await _Connection(ws, options, record, self._memories).run()
        finally:
            record.close_code = ws.close_code
            record.closed.set()
            self._notify()


class _Connection:
    def __init__(
        self, ws: ServerConnection, options: GeminiOptions, record: GeminiRecord, memories: dict[str, Memory]
    ) -> None:
        self._ws = ws
        self._options = options
        self._record = record
        self.model = GeminiSimModel(options.models, memories)
        self.model.first_delay = options.first_audio_delay
        self.model.speed = options.audio_speed
        self.model.chunk_ms = options.chunk_ms
        record.model = self.model
        self._lock = asyncio.Lock()
        self._turn: asyncio.Task[None] | None = None

    async def run(self) -> None:
        limit = asyncio.create_task(self._time_limit())
        try:
            async for raw in self._ws:
                try:
                    message = json.loads(raw)
                except ValueError:
                    await self._ws.close(1007, "Invalid JSON payload received.")
                    return
                self._note(message)
                output = self.model.handle(message)
                if not await self._carry_out(output):
                    return
        except ConnectionClosed:
            pass
        finally:
            limit.cancel()
            if self._turn is not None:
                self._turn.cancel()

    def _note(self, message: Any) -> None:
        if not self._options.record or not isinstance(message, dict):
            return
        self._record.received.append(message)
        self._record.received_at.append(time.monotonic())
        body = normalize(message).get("realtimeInput")
        blob = body.get("audio") if isinstance(body, dict) else None
        if isinstance(blob, dict):
            mime = str(blob.get("mimeType", ""))
            rate = mime.partition("rate=")[2]
            if rate.isdigit():
                self._record.input_rates.add(int(rate))
            with contextlib.suppress(ValueError):
                self._record.input_audio += decode_bytes(blob.get("data"))

    async def _carry_out(self, output: Output) -> bool:
        if output.interrupt and self._turn is not None and not self._turn.done():
            self._turn.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._turn
            self.model.speaking = False
            await self._send({"serverContent": {"interrupted": True}})
        for message in output.now:
            await self._send(message)
        if output.close is not None:
            code, reason = output.close
            log.info("fake_gemini_refused", code=code, reason=reason)
            await self._ws.close(code, reason)
            return False
        if output.turn is not None:
            if self._turn is not None and not self._turn.done():
                self._turn.cancel()
            self.model.speaking = True
            self._turn = asyncio.create_task(self._stream(output.turn))
        return True

    async def _stream(self, steps: list[tuple[float, dict[str, Any]]]) -> None:
        try:
            for delay, message in steps:
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._send(message)
        finally:
            self.model.speaking = False

    async def _send(self, message: dict[str, Any]) -> None:
        if self._options.check is not None:
            self._options.check(message)
        async with self._lock:
            if self._options.record:
                self._record.sent.append(message)
                self._record.sent_at.append(time.monotonic())
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(json.dumps(message))

    async def _time_limit(self) -> None:
        warn_after = max(0.0, self._options.connection_seconds - self._options.go_away_seconds)
        await asyncio.sleep(warn_after)
        await self._send({"goAway": {"timeLeft": f"{self._options.go_away_seconds:g}s"}})
        await asyncio.sleep(self._options.connection_seconds - warn_after)
        await self._ws.close(1000, "The connection reached its time limit.")


async def run_fake_gemini(host: str, port: int, options: GeminiOptions) -> None:
    """Serve the simulated Gemini Live model on `host:port` until cancelled (recordings off)."""
    server = FakeGeminiServer(dataclasses.replace(options, record=False))
    await server.start(host, port)
    log.info("fake_gemini_started", url=server.url)
    try:
        await asyncio.Future()
    finally:
        await server.stop()
