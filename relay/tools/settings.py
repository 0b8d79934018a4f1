"""Which MCP servers the relay connects to, and which identities may use which of their tools.

The operator names them in a TOML file (`RELAY_TOOLS_FILE`):

    [servers.demo]
    command = ["python", "-m", "relay.demo_tools"]      # a stdio server, started by the relay

    [servers.search]
    url = "http://127.0.0.1:9000/mcp"                  # a streamable-HTTP server, already running

    [access]                                             # optional: identity pattern -> tool names
    "tailscale:*" = ["*"]
    "anonymous*" = ["current_time"]

Without an `[access]` table every identity may use every tool; with one, an identity gets the tools of every
pattern it matches (fnmatch), and none if it matches no pattern.
"""

from __future__ import annotations

import fnmatch
import shlex
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ToolSettingsError(ValueError):
    """The tools file cannot be used; the message names the file, the entry and what it accepts."""


@dataclass(frozen=True)
class ServerSpec:
    """One MCP server: a stdio `command` the relay starts, or the `url` of a streamable-HTTP server."""

    name: str
    command: tuple[str, ...] = ()
    url: str = ""
    env: tuple[tuple[str, str], ...] = ()

    @property
    def transport(self) -> str:
        """`stdio` or `http` (a bounded label for logs)."""
        return "http" if self.url else "stdio"


@dataclass(frozen=True)
class ToolSettings:
    """The servers to connect to and who may use which tool."""

    servers: tuple[ServerSpec, ...] = ()
    #: (identity pattern, tool names or "*"); empty: every identity may use every tool.
    access: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def allowed(self, identity: str, names: frozenset[str]) -> frozenset[str]:
        """The tools of `names` that `identity` may use."""
        if not self.access:
            return names
        granted: set[str] = set()
        for pattern, tools in self.access:
            if fnmatch.fnmatchcase(identity, pattern):
                granted |= names if "*" in tools else names & set(tools)
        return frozenset(granted)

    def unknown_tools(self, names: frozenset[str]) -> list[str]:
        """Tool names the access table grants that no server offers (a typo the operator should hear of)."""
        return sorted({t for _, tools in self.access for t in tools if t != "*"} - names)


#: The demo tool server, as `--demo` starts it when no tools file is given.
DEMO_SERVER = ServerSpec("demo", command=(sys.executable, "-m", "relay.demo_tools"))


def load_tool_settings(path: Path | None, *, demo: bool = False) -> ToolSettings:
    """Read the tools file at `path` (none: no servers, or the demo server in demo mode)."""
    if path is None:
        return ToolSettings(servers=(DEMO_SERVER,)) if demo else ToolSettings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ToolSettingsError(f"RELAY_TOOLS_FILE={str(path)!r} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ToolSettingsError(f"RELAY_TOOLS_FILE={str(path)!r} is not valid TOML: {exc}") from None
    return parse_tool_settings(data, str(path))


def parse_tool_settings(data: dict[str, Any], where: str = "the tools file") -> ToolSettings:
    """Check a parsed tools file; raise `ToolSettingsError` naming the bad entry."""
    unknown = set(data) - {"servers", "access"}
    if unknown:
        raise ToolSettingsError(
            f"{where}: unknown table {sorted(unknown)[0]!r}; use [servers.NAME] and [access]"
        )
    servers_table = data.get("servers", {})
    if not isinstance(servers_table, dict):
        raise ToolSettingsError(f"{where}: 'servers' must be a table of [servers.NAME] entries")
    servers = tuple(_server(name, entry, where) for name, entry in servers_table.items())
    access_table = data.get("access", {})
    if not isinstance(access_table, dict):
        raise ToolSettingsError(f"{where}: 'access' must be a table of \"identity pattern\" = [tool names]")
    access: list[tuple[str, tuple[str, ...]]] = []
    for pattern, tools in access_table.items():
        if not isinstance(tools, list) or not all(isinstance(t, str) and t for t in tools):
            raise ToolSettingsError(
                f'{where}: access {pattern!r} must be a list of tool names (or ["*"] for all of them)'
            )
        access.append((pattern, tuple(tools)))
    return ToolSettings(servers, tuple(access))


def _server(name: str, entry: Any, where: str) -> ServerSpec:
    what = f"{where}: [servers.{name}]"
    if not isinstance(entry, dict):
        raise ToolSettingsError(f'{what} must be a table with command = [...] or url = "http://..."')
    unknown = set(entry) - {"command", "url", "env"}
    if unknown:
        raise ToolSettingsError(f"{what}: unknown key {sorted(unknown)[0]!r}; use command, url or env")
    command, url = entry.get("command"), entry.get("url")
    if (command is None) == (url is None):
        raise ToolSettingsError(
            f"{what} needs exactly one of command (a stdio server) or url (streamable HTTP)"
        )
    env = entry.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ToolSettingsError(f"{what}: env must be a table of strings")
    if url is not None:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ToolSettingsError(
                f"{what}: url must be an http:// or https:// URL such as http://127.0.0.1:9000/mcp"
            )
        return ServerSpec(name, url=url, env=tuple(env.items()))
    if isinstance(command, str):
        command = shlex.split(command)
    if not isinstance(command, list) or not command or not all(isinstance(c, str) and c for c in command):
        raise ToolSettingsError(f'{what}: command must be a list such as ["python", "-m", "my_tools"]')
    return ServerSpec(name, command=tuple(command), env=tuple(env.items()))
