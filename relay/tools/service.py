"""Server tools for the whole relay process: the MCP connections, their metrics, and what each session gets."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from relay.config import Config
from relay.tools.calls import ToolCalls
from relay.tools.hub import ToolHub
from relay.tools.metrics import ToolMetrics
from relay.tools.runner import RunnerLimits, ToolRunner
from relay.tools.settings import ToolSettings, load_tool_settings

#: What the model is asked to say while a call runs long.
WAITING_INSTRUCTIONS = (
    "A tool you called is still running. In one short sentence, in the language of the conversation, tell the user "
    "you are still looking it up. Do not guess the result."
)


@dataclass
class SessionTools:
    """One session's share: the calls it tracks and the runner that executes them."""

    calls: ToolCalls
    runner: ToolRunner


class ServerTools:
    """The relay's server tools. `start()` at start-up (bounded; raises `ToolStartupError`), `close()` at the end."""

    def __init__(self, config: Config, registry: CollectorRegistry) -> None:
        self.settings: ToolSettings = load_tool_settings(config.tools_file, demo=config.demo)
        self.hub = ToolHub(self.settings)
        self._config = config
        self._registry = registry
        self._metrics: ToolMetrics | None = None
        self._limits = RunnerLimits(
            config.tool_timeout_seconds, config.tool_concurrency, config.tool_waiting_seconds
        )

    @property
    def configured(self) -> bool:
        """True when any MCP server is named."""
        return bool(self.settings.servers)

    async def start(self) -> None:
        """Connect to the servers and list their tools."""
        if not self.configured or self._metrics is not None:
            return  # nothing to connect to, or already connected (the CLI connects before serving)
        await self.hub.start(self._config.tool_connect_timeout)
        self._metrics = ToolMetrics(self._registry, self.hub.names)

    def for_session(self, identity: str) -> SessionTools | None:
        """The tools `identity` may use in a new session (None: no server tools for it)."""
        if self._metrics is None:
            return None
        allowed = self.settings.allowed(identity, self.hub.names)
        if not allowed:
            return None
        definitions = [self.hub.tools[name].definition() for name in sorted(allowed)]
        calls = ToolCalls(
            definitions,
            visible=self._config.tool_calls == "visible",
            waiting_instructions=WAITING_INSTRUCTIONS if self._config.tool_waiting_seconds > 0 else "",
        )
        runner = ToolRunner(
            self.hub, calls, self._limits, self._metrics, debug=self._config.log_level == "debug"
        )
        return SessionTools(calls, runner)

    async def close(self) -> None:
        """Close the MCP connections."""
        if self.configured:
            await self.hub.close()
