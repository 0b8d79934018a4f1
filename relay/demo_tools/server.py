"""The demo tools as an MCP server (the `mcp` SDK's MCPServer)."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

from relay.demo_tools.tools import capital_city, convert_units, current_time


def build_server() -> MCPServer:
    """An MCP server offering the demo tools."""
    server: MCPServer = MCPServer("relay-demo-tools", log_level="WARNING")
    for tool in (current_time, convert_units, capital_city):
        server.add_tool(tool)
    return server
