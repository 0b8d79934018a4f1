"""The bench's load generator counts what it claims to: against the echo upstream nothing is lost, and an upstream
that drops, reorders and corrupts answers is caught each time (so `lost: 0` in a bench run means something)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
from aiohttp import WSMsgType, web

from relay.bench import echo_upstream
from relay.bench.load import LoadError, client_session, open_sessions, stream

KEY = "sk-test-bench"


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"ws://127.0.0.1:{port}/v1/realtime"
    finally:
        await runner.cleanup()


def misbehaving_app() -> web.Application:
    """Answers like the echo, except: append #3 is never answered, #5 comes after #6, #8's audio is altered."""

    async def realtime(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"type":"session.created","session":{}}')
        held: bytes | None = None
        count = -1
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            count += 1
            answer = echo_upstream.answer(orjson.loads(message.data), {}, count)
            assert answer is not None
            if count == 3:
                continue
            if count == 5:
                held = answer
                continue
            if count == 8:
                answer = answer[: -len(b'"}') - 4] + b'AAAA"}'  # the last 3 bytes of its audio
            await ws.send_frame(answer, WSMsgType.TEXT)
            if count == 6 and held is not None:
                await ws.send_frame(held, WSMsgType.TEXT)
        return ws

    app = web.Application()
    app.router.add_get("/v1/realtime", realtime)
    return app


def _marks() -> tuple[Callable[[], None], Callable[[], None]]:
    return (lambda: None), (lambda: None)


async def test_nothing_is_lost_through_the_echo_upstream() -> None:
    async with serving(echo_upstream.make_app(KEY)) as url, client_session() as http:
        sessions = await open_sessions(http, url, {"Authorization": f"Bearer {KEY}"}, 3)
        result = await stream(sessions, warmup=0.1, seconds=0.4, drain=2, marks=_marks())
        for session in sessions:
            await session.close()
    tally = result.tally
    assert tally.sent >= 3 * 24
    assert tally.ok == tally.sent and tally.lost == 0
    # Round trips only of frames sent in the window (0.4 of the 0.5 s).
    assert 0.6 * tally.sent < len(result.round_trips) < tally.sent
    assert all(0 < rtt < 1 for rtt in result.round_trips)


async def test_dropped_reordered_and_corrupted_answers_are_each_counted() -> None:
    async with serving(misbehaving_app()) as url, client_session() as http:
        (session,) = await open_sessions(http, url, {}, 1)
        result = await stream([session], warmup=0, seconds=0.3, drain=0.5, marks=_marks())
        await session.close()
    tally = result.tally
    assert tally.sent >= 12
    assert (tally.unanswered, tally.disordered, tally.corrupted) == (1, 1, 1)
    assert tally.ok == tally.sent - 3 and tally.lost == 3


async def test_a_refused_session_is_a_load_error() -> None:
    async with serving(echo_upstream.make_app(KEY)) as url, client_session() as http:
        with pytest.raises(LoadError, match="was not opened"):
            await open_sessions(http, url, {"Authorization": "Bearer wrong"}, 2)


async def test_a_session_closed_by_the_other_side_is_counted_and_named() -> None:
    async def realtime(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"type":"session.created","session":{}}')
        await ws.receive()
        await ws.close(code=1013, message=b"too slow")
        return ws

    app = web.Application()
    app.router.add_get("/v1/realtime", realtime)
    async with serving(app) as url, client_session() as http:
        (session,) = await open_sessions(http, url, {}, 1)
        result = await stream([session], warmup=0, seconds=0.2, drain=0.5, marks=_marks())
        await session.close()
    tally = result.tally
    assert tally.closed_early == 1 and tally.ok == 0 and tally.lost == tally.sent
    assert tally.first_error is not None and "closed by the other side (code 1013)" in tally.first_error
