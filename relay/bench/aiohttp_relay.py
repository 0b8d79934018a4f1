"""Reference relay (b): an aiohttp middle tier in the style of the one in Azure's voice RAG sample, on uvloop.

The shape of that tier: an aiohttp server; per client socket, an aiohttp client session whose socket opens the
upstream with the key; two coroutines, one per direction, gathered; every text event parsed with the stdlib `json`
and looked at by type; the original text forwarded unless the tier changed the event, re-serialised when it did
(server-enforced `session.update` fields on the way up; `session.created` with instructions and tools hidden on the
way down). Unlike the sample, the end of either direction closes the other, so a departed client does not keep an
upstream session open.

Run: ``OPENAI_API_KEY=... python -m relay.bench.aiohttp_relay --port P --upstream ws://127.0.0.1:U/v1/realtime``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
from aiohttp import web

from relay.bench.serving import api_key, ready_route, run_on_uvloop, serve_aiohttp, server_arguments

#: What the server imposes on every session, whatever a client asks for.
SERVER_SESSION_FIELDS: dict[str, Any] = {
    "instructions": "You are a helpful assistant.",
    "tool_choice": "none",
}


class MiddleTier:
    """Relays each client socket to its own upstream socket, looking at every event on the way."""

    def __init__(self, upstream_url: str, key: str) -> None:
        self._upstream_url = upstream_url
        self._headers = {"Authorization": f"Bearer {key}"}

    @staticmethod
    def to_upstream(text: str) -> str | None:
        """The frame to send upstream for a client's text frame (None: drop it)."""
        event = json.loads(text)
        if event.get("type") == "session.update" and isinstance(event.get("session"), dict):
            event["session"].update(SERVER_SESSION_FIELDS)
            return json.dumps(event)
        return text

    @staticmethod
    def to_client(text: str) -> str | None:
        """The frame to send to the client for an upstream text frame (None: drop it)."""
        event = json.loads(text)
        kind = event.get("type")
        if kind in ("session.created", "session.updated") and isinstance(event.get("session"), dict):
            event["session"]["instructions"] = ""
            event["session"]["tools"] = []
            return json.dumps(event)
        if kind in ("response.function_call_arguments.delta", "response.function_call_arguments.done"):
            return None  # tool calls are the tier's own business
        return text

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """One client socket, until either side ends."""
        client = web.WebSocketResponse()
        await client.prepare(request)
        url = self._upstream_url + ("?" + request.query_string if request.query_string else "")
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, headers=self._headers, max_msg_size=0) as upstream,
        ):
            await self._relay(client, upstream)
        await client.close()
        return client

    async def _relay(self, client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
        async def up() -> None:
            async for message in client:
                if message.type == aiohttp.WSMsgType.TEXT:
                    out = self.to_upstream(message.data)
                    if out is not None:
                        await upstream.send_str(out)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    await upstream.send_bytes(message.data)

        async def down() -> None:
            async for message in upstream:
                if message.type == aiohttp.WSMsgType.TEXT:
                    out = self.to_client(message.data)
                    if out is not None:
                        await client.send_str(out)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    await client.send_bytes(message.data)

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, ConnectionError):
                await task


def make_app(upstream_url: str, key: str) -> web.Application:
    """The aiohttp relay's application."""
    app = web.Application()
    app.router.add_get("/v1/realtime", MiddleTier(upstream_url, key).handle)
    app.router.add_get(*ready_route())
    return app


def main() -> None:
    """Entry point of the aiohttp relay process."""
    args = server_arguments(
        "relay.bench.aiohttp_relay", "Reference relay: aiohttp middle tier.", upstream=True
    )
    run_on_uvloop(serve_aiohttp(make_app(args.upstream, api_key()), args.port))


if __name__ == "__main__":
    main()
