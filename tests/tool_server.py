"""A real MCP server whose tools misbehave on purpose, for the server tool tests.

`python -m tests.tool_server` serves it over stdio; `--http PORT` over streamable HTTP.
"""

from __future__ import annotations

import argparse
import asyncio

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
