"""The bench's upstream: answers each `input_audio_buffer.append` at once with one `response.output_audio.delta`
carrying the same audio, so a load generator can match every answer to its request and check it byte for byte.

Minimal and fast on purpose (aiohttp on uvloop, orjson), so that its CPU is never the bottleneck of what is measured.
It speaks just enough of the GA protocol for a relay to open a session: `session.created` first (a complete session
object), `session.updated` for each `session.update`. It requires `Authorization: Bearer <OPENAI_API_KEY>`, which
proves that each relay passed the key on.

Run: ``OPENAI_API_KEY=... python -m relay.bench.echo_upstream --port P``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from relay.bench.serving import api_key, ready_route, run_on_uvloop, serve_aiohttp, server_arguments
from relay.fake.session_config import default_session

#: One response for the whole connection: a relay tracks first audio per response, once.
RESPONSE_ID = "resp_bench"


def answer(event: dict[str, Any], session: dict[str, Any], count: int) -> bytes | None:
    """The echo's reply to one client event (None: no reply)."""
    kind = event.get("type")
    if kind == "input_audio_buffer.append":
        return orjson.dumps(
            {
                "type": "response.output_audio.delta",
                "event_id": f"event_{count}",
                "response_id": RESPONSE_ID,
                "item_id": "item_bench",
                "output_index": 0,
                "content_index": 0,
                "delta": event["audio"],
            }
        )
    if kind == "session.update":
        return orjson.dumps({"type": "session.updated", "event_id": f"event_{count}", "session": session})
    return None


def make_app(key: str) -> web.Application:
    """The echo upstream's aiohttp application."""
    expected = f"Bearer {key}"

    async def realtime(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": {"message": "bad key", "code": "invalid_api_key"}}, status=401)
        ws = web.WebSocketResponse(compress=False, max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        session = default_session("gpt-realtime", int(time.time()) + 3600)
        created = orjson.dumps({"type": "session.created", "event_id": "event_0", "session": session})
        await ws.send_frame(created, WSMsgType.TEXT)
        count = 0
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            count += 1
            reply = answer(orjson.loads(message.data), session, count)
            if reply is not None:
                # orjson's bytes are UTF-8 already: sent as a text frame without a round trip through str.
                await ws.send_frame(reply, WSMsgType.TEXT)
        return ws

    app = web.Application()
    app.router.add_get("/v1/realtime", realtime)
    app.router.add_get(*ready_route())
    return app


def main() -> None:
    """Entry point of the echo upstream process."""
    args = server_arguments("relay.bench.echo_upstream", "The bench's echo upstream.", upstream=False)
    run_on_uvloop(serve_aiohttp(make_app(api_key()), args.port))


if __name__ == "__main__":
    main()
