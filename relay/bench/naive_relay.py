"""Reference relay (a), naive: Starlette + uvicorn for the client, the `websockets` client for the upstream, every
event parsed and serialised again (stdlib json) in both directions. Framework defaults throughout (uvicorn's own
WebSocket and loop choice); no policy, no metrics, no access control: the cost of the plumbing alone.

Run: ``OPENAI_API_KEY=... python -m relay.bench.naive_relay --port P --upstream ws://127.0.0.1:U/v1/realtime``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from relay.bench.serving import READY_PATH, api_key, server_arguments


def make_app(upstream_url: str, key: str) -> Starlette:
    """The naive relay's Starlette application."""

    async def realtime(client: WebSocket) -> None:
        await client.accept()
        query = client.url.query
        url = upstream_url + ("?" + query if query else "")
        async with websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {key}"}, max_size=None, compression=None
        ) as upstream:

            async def to_upstream() -> None:
                while True:
                    message = await client.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    text = message.get("text")
                    if text is not None:
                        await upstream.send(json.dumps(json.loads(text)))
                    elif message.get("bytes") is not None:
                        await upstream.send(message["bytes"])

            async def to_client() -> None:
                async for message in upstream:
                    if isinstance(message, str):
                        await client.send_text(json.dumps(json.loads(message)))
                    else:
                        await client.send_bytes(message)

            tasks = [asyncio.create_task(to_upstream()), asyncio.create_task(to_client())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(
                    asyncio.CancelledError, WebSocketDisconnect, websockets.ConnectionClosed, RuntimeError
                ):
                    await task
        with contextlib.suppress(RuntimeError):
            await client.close()

    async def ready(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ready\n")

    return Starlette(routes=[WebSocketRoute("/v1/realtime", realtime), Route(READY_PATH, ready)])


def main() -> None:
    """Entry point of the naive relay process."""
    args = server_arguments("relay.bench.naive_relay", "Reference relay: naive.", upstream=True)
    uvicorn.run(make_app(args.upstream, api_key()), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
