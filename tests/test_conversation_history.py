"""A spoken conversation through the relay is saved in order, with the late transcription and the interrupted
item's heard milliseconds, and reads back identically over HTTP, on SQLite and on a real PostgreSQL server; one
identity never sees, exports or deletes another's history; a conversation continues as a new seeded session."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from relay.fake.server import FakeRealtimeServer
from tests.conftest import ProxiedRelay
from tests.harness import InProcessRelay
from tests.postgres_server import postgres_server
from tests.test_relay_sdk import voiced_turn

ALICE, BOB = "alice-token-for-history", "bob-token-for-history"
TRANSCRIBER = "gpt-4o-transcribe"
TRANSCRIBED = "conversation.item.input_audio_transcription.completed"


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """One PostgreSQL server for this module's tests."""
    with postgres_server() as server:
        yield server.url


@pytest.fixture(params=["sqlite", "postgresql"])
async def history_relay(
    request: pytest.FixtureRequest,
    relay_factory: Callable[..., Awaitable[ProxiedRelay[InProcessRelay]]],
    tmp_path: Path,
) -> AsyncIterator[ProxiedRelay[InProcessRelay]]:
    """The relay saving history, with two users, on each database."""
    settings = {"history": "on", "data_dir": str(tmp_path), "access_tokens": f"{ALICE},{BOB}"}
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        # A fresh database per test keeps the tests apart on the shared server.
        settings["history_database_url"] = await fresh_database(
            url, f"t{abs(hash(request.node.nodeid)) % 10**9}"
        )
    yield await relay_factory(**settings)


async def fresh_database(url: str, name: str) -> str:
    """A new empty database on the server of `url`; its URL."""
    import asyncpg  # type: ignore[import-untyped]

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {name}")
        await connection.execute(f"CREATE DATABASE {name}")
    finally:
        await connection.close()
    return url.rsplit("/", 1)[0] + "/" + name


def _of_type(wanted: str) -> Callable[[Any], bool]:
    return lambda event: bool(event.type == wanted)


async def _speak(connection: Any, audio: bytes) -> None:
    for start in range(0, len(audio), 960):  # 20 ms appends, as a live microphone sends them
        await connection.input_audio_buffer.append(
            audio=base64.b64encode(audio[start : start + 960]).decode()
        )


async def _until(connection: Any, wanted: Callable[[Any], bool], seen: list[Any], timeout: float = 15) -> Any:
    async with asyncio.timeout(timeout):
        async for event in connection:
            seen.append(event)
            if wanted(event):
                return event
    raise AssertionError("the connection ended first")


async def _history(
    relay: ProxiedRelay[InProcessRelay], token: str, path: str = "", method: str = "GET"
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=relay.base_url) as http:
        return await http.request(
            method, f"/api/conversations{path}", headers={"authorization": f"Bearer {token}"}
        )


async def _written(relay: ProxiedRelay[InProcessRelay]) -> None:
    conversations = relay.inner.runtime.conversations
    assert conversations is not None and conversations.writer is not None
    assert await conversations.writer.flush(10)


async def spoken_conversation(
    relay: ProxiedRelay[InProcessRelay], fake: FakeRealtimeServer, *, flush: bool = True
) -> dict[str, Any]:
    """Two spoken turns, the second cut by the user after 30 ms of its audio; what the client saw."""
    # The transcript arrives after the reply is done, as the API's asynchronous transcription can.
    fake.options.transcription_delay = 1.5
    client = AsyncOpenAI(api_key=ALICE, base_url=f"{relay.base_url}/v1")
    seen: list[Any] = []
    async with client.realtime.connect(model="gpt-realtime") as connection:
        await connection.session.update(
            session={"type": "realtime", "audio": {"input": {"transcription": {"model": TRANSCRIBER}}}}
        )
        await _speak(connection, voiced_turn())
        first_done = await _until(connection, lambda e: e.type == "response.done", seen)
        late = await _until(connection, lambda e: e.type == TRANSCRIBED, seen)
        await _speak(connection, voiced_turn())
        delta = await _until(connection, lambda e: e.type == "response.output_audio.delta", seen)
        await connection.response.cancel()
        await connection.conversation.item.truncate(item_id=delta.item_id, content_index=0, audio_end_ms=30)
        # The cancel's response.done and the truncate's answer may come in either order.
        for wanted in ("conversation.item.truncated", "response.done", TRANSCRIBED):
            if sum(e.type == wanted for e in seen) < (1 if wanted == "conversation.item.truncated" else 2):
                await _until(connection, _of_type(wanted), seen)
        second_done = [e for e in seen if e.type == "response.done"][1]
        session_id = next(e for e in seen if e.type == "session.created").session.id
    if flush:
        await _written(relay)
    return {
        "seen": seen,
        "first_done": first_done,
        "late": late,
        "cut_item": delta.item_id,
        "second_done": second_done,
        "session_id": session_id,
    }


async def test_a_spoken_conversation_is_saved_in_order_and_reads_back_over_http(
    history_relay: ProxiedRelay[InProcessRelay], fake_upstream: FakeRealtimeServer
) -> None:
    talk = await spoken_conversation(history_relay, fake_upstream)
    seen = talk["seen"]
    types = [e.type for e in seen]
    # The first transcript really came late: after its turn's response.done.
    assert types.index("conversation.item.input_audio_transcription.completed") > types.index("response.done")

    listed = (await _history(history_relay, ALICE)).json()["conversations"]
    assert len(listed) == 1
    summary = listed[0]
    conversation = (await _history(history_relay, ALICE, f"/{summary['id']}")).json()

    # In the order the API holds them, as the client saw them added.
    added = [e.item.id for e in seen if e.type == "conversation.item.added"]
    assert [item["id"] for item in conversation["items"]] == added
    user1, assistant1, user2, assistant2 = conversation["items"]
    transcripts = {
        e.item_id: e.transcript
        for e in seen
        if e.type == "conversation.item.input_audio_transcription.completed"
    }
    assert (user1["role"], user1["text"]) == ("user", transcripts[user1["id"]].strip())
    assert user1["text"].startswith("(simulated transcript")
    assert (user2["role"], user2["text"]) == ("user", transcripts[user2["id"]].strip())
    spoken = {e.item_id: e.transcript for e in seen if e.type == "response.output_audio_transcript.done"}
    assert (assistant1["role"], assistant1["text"]) == ("assistant", spoken[assistant1["id"]])
    assert "interrupted" not in assistant1
    assert assistant2["id"] == talk["cut_item"]
    assert (assistant2["interrupted"], assistant2["audio_end_ms"]) == (True, 30)
    assert all(item["spoken"] for item in conversation["items"])

    # Usage and cost per response and per transcription, adding up to the conversation's cost.
    kinds = sorted(u["kind"] for u in conversation["usage"])
    assert kinds == ["response", "response", "transcription", "transcription"]
    responses = [u for u in conversation["usage"] if u["kind"] == "response"]
    assert responses[0]["usage"] == talk["first_done"].response.usage.model_dump(exclude_none=True)
    assert conversation["cost"] == pytest.approx(sum(u["cost"] for u in conversation["usage"]), abs=1e-6)
    assert conversation["cost"] > 0
    assert summary["first_words"] == user1["text"][:80]
    assert summary["duration_s"] > 2

    export = await _history(history_relay, ALICE, f"/{summary['id']}/export")
    assert export.headers["content-disposition"].startswith("attachment")
    assert export.json() == conversation


async def test_one_identity_never_sees_anothers_history(
    history_relay: ProxiedRelay[InProcessRelay], fake_upstream: FakeRealtimeServer
) -> None:
    await spoken_conversation(history_relay, fake_upstream)
    (mine,) = (await _history(history_relay, ALICE)).json()["conversations"]
    assert (await _history(history_relay, BOB)).json() == {"conversations": []}
    for path in (f"/{mine['id']}", f"/{mine['id']}/export"):
        refused = await _history(history_relay, BOB, path)
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "conversation_not_found"
    assert (await _history(history_relay, BOB, f"/{mine['id']}", "DELETE")).status_code == 404
    assert (await _history(history_relay, BOB, "", "DELETE")).json() == {"deleted": 0}
    assert (await _history(history_relay, ALICE, f"/{mine['id']}")).status_code == 200
    # Without a token: the door's own refusal, as for the WebSocket.
    async with httpx.AsyncClient(base_url=history_relay.base_url) as http:
        anonymous = await http.get("/api/conversations")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "missing_token"
    # Alice's own deletion works, and then the conversation is gone.
    assert (await _history(history_relay, ALICE, f"/{mine['id']}", "DELETE")).status_code == 204
    assert (await _history(history_relay, ALICE, f"/{mine['id']}")).status_code == 404


async def _typed_turn(connection: Any, words: str, seen: list[Any]) -> None:
    await connection.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": words}]}
    )
    await connection.response.create()
    count = sum(e.type == "response.done" for e in seen) + 1
    while sum(e.type == "response.done" for e in seen) < count:
        seen.append(await connection.recv())


async def test_a_conversation_continues_as_a_new_session_seeded_with_its_text(
    history_relay: ProxiedRelay[InProcessRelay], fake_upstream: FakeRealtimeServer
) -> None:
    client = AsyncOpenAI(api_key=ALICE, base_url=f"{history_relay.base_url}/v1")
    seen: list[Any] = []
    async with client.realtime.connect(model="gpt-realtime") as connection:
        await _typed_turn(connection, "Remember the number forty-two.", seen)
    await _written(history_relay)
    (old,) = (await _history(history_relay, ALICE)).json()["conversations"]
    before = (await _history(history_relay, ALICE, f"/{old['id']}")).json()["items"]
    assert [i["role"] for i in before] == ["user", "assistant"]

    await fake_upstream.wait_for_connection()
    seen = []
    async with client.realtime.connect(
        model="gpt-realtime", extra_query={"continue": old["id"]}
    ) as connection:
        await _typed_turn(connection, "Which number was it?", seen)
    upstream = await fake_upstream.wait_for_connection()
    await _written(history_relay)
    # The old conversation's text items went up first, before the first response was asked for.
    received = [e["type"] for e in upstream.received]
    seeded = [e["item"] for e in upstream.received if e["type"] == "conversation.item.create"]
    assert [(i["id"], i["content"][0]["text"]) for i in seeded[:2]] == [(i["id"], i["text"]) for i in before]
    assert received.index("response.create") > max(
        i
        for i, e in enumerate(upstream.received)
        if e["type"] == "conversation.item.create" and e["item"].get("id") == before[-1]["id"]
    )
    listed = (await _history(history_relay, ALICE)).json()["conversations"]
    new = next(c for c in listed if c["id"] != old["id"])
    assert new["continued_from"] == old["id"]
    items = (await _history(history_relay, ALICE, f"/{new['id']}")).json()["items"]
    assert [i["text"] for i in items[:2]] == [i["text"] for i in before]
    assert items[-2]["text"] == "Which number was it?"

    # Another identity cannot continue it: refused at the handshake, like a conversation that never existed.
    bob = AsyncOpenAI(api_key=BOB, base_url=f"{history_relay.base_url}/v1")
    with pytest.raises(Exception) as refused:
        async with bob.realtime.connect(
            model="gpt-realtime", extra_query={"continue": old["id"]}
        ) as connection:
            await connection.recv()
    assert "404" in str(refused.value)
