"""A real MCP server whose tools misbehave on purpose, for the server tool tests.

`python -m tests.tool_server` serves it over stdio; `--http PORT` over streamable HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from mcp.server.mcpserver import MCPServer

server: MCPServer = MCPServer("relay-test-tools", log_level="CRITICAL")


@server.tool()
async def slow_lookup(seconds: float) -> dict[str, float]:
    """Answers after the given number of seconds."""
    await asyncio.sleep(seconds)
    return {"waited": seconds}


@server.tool()
async def hang_forever() -> str:
    """Never answers."""
    await asyncio.sleep(3600)
    return "unreachable"


@server.tool()
def explode() -> str:
    """Always raises."""
    raise RuntimeError("the explode tool blew up")


@server.tool(structured_output=False)
def broken_json() -> str:
    """Returns text that claims to be JSON and is not."""
    return "{'answer': 42,"


@server.tool()
def garbage_then_exit() -> str:
    """Writes a line that is not JSON-RPC where the protocol runs (stdout over stdio), then dies."""
    sys.stdout.write("this is not JSON-RPC {\n")
    sys.stdout.flush()
    os._exit(3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int)
    args = parser.parse_args()
    if args.http is None:
        server.run("stdio")
    else:
        server.run("streamable-http", port=args.http)


if __name__ == "__main__":
    main()
