"""The demo tool server: a real MCP server with a clock, a unit converter and a small lookup.

`python -m relay.demo_tools` serves it over stdio (how `--demo` starts it); `--http PORT` over streamable HTTP.
"""
