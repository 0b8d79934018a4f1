"""The relay's MCP connections: one per configured server, opened at start-up, shared by every session.

Each connection is owned by one task (the `mcp` SDK's client is an anyio context that must be entered and left in
the same task); sessions call tools through it from their own tasks. Start-up is bounded: a server that does not
answer in time, a tool whose name is taken twice, or a name the Realtime API would refuse stops the relay with
one message naming the server.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
import structlog

if TYPE_CHECKING:
    from mcp import Client

from relay.tools.output import error_output, result_output
from relay.tools.settings import ServerSpec, ToolSettings

_log = structlog.get_logger("relay.tools")
#: What the Realtime API accepts as a function name.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: A server whose connection did not close within this is left to the process's end.
_CLOSE_SECONDS = 5.0


class ToolStartupError(RuntimeError):
    """A configured MCP server cannot be used; the message names it and says what to check."""


@dataclass(frozen=True)
class ServerTool:
    """One tool a server offers, as the model is shown it."""

    name: str
    server: str
    description: str
    parameters: dict[str, Any]

    def definition(self) -> dict[str, Any]:
        """The Realtime function tool for `session.tools`."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }


@dataclass(frozen=True)
class ToolOutcome:
    """How a call ended: `ok`, `error` (the tool or its server failed) or `timeout`; and the output text."""

    status: str
    output: str


def describe(spec: ServerSpec) -> str:
    """Where a server is, for messages: the program or the URL's host and path (never env values or userinfo)."""
    if spec.url:
        parts = urlsplit(spec.url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"
    return f"stdio: {os.path.basename(spec.command[0])} {' '.join(spec.command[1:3])}".rstrip()


class _Connection:
    """One MCP server's client, held open by its own task until `close()`."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.client: Client | None = None
        self.tools: list[Any] = []
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._failure: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    def _target(self) -> Any:
        # Imported here: a relay without tool servers does not load the MCP SDK (tens of MiB of models).
        from mcp import StdioServerParameters
        from mcp.client.stdio import get_default_environment

        if self.spec.url:
            return self.spec.url
        return StdioServerParameters(
            command=self.spec.command[0],
            args=list(self.spec.command[1:]),
            env={**get_default_environment(), **dict(self.spec.env)},
        )

    async def open(self, timeout: float) -> None:
        self._task = asyncio.create_task(self._hold(), name=f"mcp-{self.spec.name}")
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            raise ToolStartupError(
                f"MCP server {self.spec.name!r} ({describe(self.spec)}) did not answer within {timeout:g} s "
                "(RELAY_TOOL_CONNECT_TIMEOUT); check that it starts and speaks MCP"
            ) from None
        if self._failure is not None:
            raise ToolStartupError(
                f"MCP server {self.spec.name!r} ({describe(self.spec)}) could not be used: "
                f"{_short(self._failure)}; check its command or URL in RELAY_TOOLS_FILE"
            ) from None

    async def _hold(self) -> None:
        from mcp import Client

        try:
            async with Client(self._target()) as client:
                tools: list[Any] = []
                cursor: str | None = None
                for _ in range(100):  # a server that pages forever cannot hold start-up
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if cursor is None:
                        break
                self.client, self.tools = client, tools
                self._ready.set()
                await self._stop.wait()
        except Exception as exc:  # any failure to connect or list is reported by open()
            self._failure = exc
            if self._ready.is_set():
                _log.warning("tool_server_lost", server=self.spec.name, problem=_short(exc))
        finally:
            self.client = None
            self._ready.set()

    async def close(self) -> None:
        self._stop.set()
        task = self._task
        if task is None:
            return
        if not self._ready.is_set() or self._failure is not None:
            task.cancel()  # still connecting: nothing to close politely
        # The SDK stops a stdio server itself (terminate, then kill) as its context ends; wait for that, bounded.
        done, _ = await asyncio.wait({task}, timeout=_CLOSE_SECONDS)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=_CLOSE_SECONDS)


def _short(exc: BaseException) -> str:
    # An ExceptionGroup from a task group says little; its first leaf says what happened.
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


class ToolHub:
    """The tools of every configured MCP server, by name; `call()` runs one."""

    def __init__(self, settings: ToolSettings) -> None:
        self.settings = settings
        self.tools: dict[str, ServerTool] = {}
        self._connections: dict[str, _Connection] = {}

    @property
    def names(self) -> frozenset[str]:
        """Every server tool's name."""
        return frozenset(self.tools)

    async def start(self, timeout: float) -> None:
        """Connect to every server (together, each within `timeout` seconds) and list their tools."""
        connections = [_Connection(spec) for spec in self.settings.servers]
        self._connections = {c.spec.name: c for c in connections}
        results = await asyncio.gather(*(c.open(timeout) for c in connections), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.close()
            raise failures[0]
        for connection in connections:
            for tool in connection.tools:
                self._add(connection.spec, tool)
        unknown = self.settings.unknown_tools(self.names)
        if unknown:
            await self.close()
            raise ToolStartupError(
                f"RELAY_TOOLS_FILE grants {unknown[0]!r} in [access], but no MCP server offers a tool of that name; "
                f"the tools are: {', '.join(sorted(self.names)) or 'none'}"
            )
        for connection in connections:
            _log.info(
                "tool_server_connected",
                server=connection.spec.name,
                transport=connection.spec.transport,
                tools=sorted(t.name for t in connection.tools),
            )

    def _add(self, spec: ServerSpec, tool: Any) -> None:
        name = str(tool.name)
        if not _NAME.match(name):
            raise ToolStartupError(
                f"MCP server {spec.name!r} offers a tool named {name!r}; the Realtime API takes function names of "
                "1-64 letters, digits, '_' or '-'"
            )
        taken = self.tools.get(name)
        if taken is not None:
            raise ToolStartupError(
                f"Tool name {name!r} is offered by both MCP servers {taken.server!r} and {spec.name!r}; the model "
                "needs one tool per name: remove one of the servers or rename the tool"
            )
        schema = dict(tool.input_schema or {"type": "object", "properties": {}})
        self.tools[name] = ServerTool(name, spec.name, " ".join(str(tool.description or "").split()), schema)

    async def call(self, name: str, arguments: str) -> ToolOutcome:
        """Run tool `name` with the model's `arguments` (JSON text); never raises for the tool's failures.

        The caller bounds the time (the relay's timeout cancels this).
        """
        tool = self.tools[name]
        try:
            parsed = _arguments(arguments)
        except ValueError as exc:
            return ToolOutcome(
                "error", error_output(f"The arguments were not a JSON object ({exc}); call again.")
            )
        connection = self._connections[tool.server]
        client = connection.client
        if client is None:
            return ToolOutcome("error", error_output(f"The {name} tool is unavailable right now; try later."))
        try:
            result = await client.call_tool(name, parsed)
        except Exception as exc:
            _log.warning("tool_call_failed", tool=name, server=tool.server, problem=_short(exc))
            return ToolOutcome("error", error_output(f"The {name} tool failed: {_short(exc)}."))
        texts = [
            str(getattr(block, "text", ""))
            for block in result.content
            if getattr(block, "type", "") == "text"
        ]
        others = [
            str(getattr(block, "type", "unknown"))
            for block in result.content
            if getattr(block, "type", "") != "text"
        ]
        if result.is_error:
            return ToolOutcome(
                "error",
                error_output(f"The {name} tool failed: {' '.join(texts)[:300] or 'no reason given'}."),
            )
        try:
            return ToolOutcome("ok", result_output(result.structured_content, texts, others))
        except (TypeError, ValueError) as exc:
            return ToolOutcome(
                "error", error_output(f"The {name} tool returned a result that is not JSON ({exc}).")
            )

    async def close(self) -> None:
        """Close every connection (stdio servers are stopped)."""
        await asyncio.gather(*(c.close() for c in self._connections.values()))


def _arguments(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError as exc:
        raise ValueError(str(exc).split(":")[0]) from None
    if not isinstance(value, dict):
        raise ValueError(f"got {type(value).__name__}")
    return value
