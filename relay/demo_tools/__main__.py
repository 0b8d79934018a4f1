"""`python -m relay.demo_tools [--http PORT] [--host HOST]`: serve the demo tools over stdio or streamable HTTP."""

from __future__ import annotations

import argparse

from relay.demo_tools.server import build_server


def main() -> None:
    """Serve the demo tools until stopped."""
    parser = argparse.ArgumentParser(prog="python -m relay.demo_tools", description=__doc__)
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP at /mcp on PORT")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    server = build_server()
    if args.http is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host=args.host, port=args.http)


if __name__ == "__main__":
    main()
