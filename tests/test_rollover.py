"""Sessions past the upstream's cap: the client's socket stays open while the relay moves to a new upstream, on the
upstream's expiry, after a drop, and proactively at an age; the new upstream gets the conversation as text (and
still answers aloud), the client sees one notice and never a second session.created, and no audio is lost."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

from openai import AsyncOpenAI

from relay.conversations.replay import SPEAK_ON_ID
from relay.conversations.rollover import NOTICE_TYPE
from relay.fake.server import ConnectionRecord, FakeRealtimeServer
from tests.conftest import TEST_API_KEY, ProxiedRelay
from tests.harness import InProcessRelay
from tests.test_relay_sdk import voiced_turn

Factory = Callable[..., Awaitable[ProxiedRelay[InProcessRelay]]]
TRANSCRIBED = "conversation.item.input_audio_transcription.completed"


async def _speak(connection: Any, audio: bytes) -> None:
    for start in range(0, len(audio), 960):
        await connection.input_audio_buffer.append(
            audio=base64.b64encode(audio[start : start + 960]).decode()
        )


async def _until(connection: Any, kind: str, seen: list[Any], count: int = 1, timeout: float = 20) -> Any:
    async with asyncio.timeout(timeout):
        while sum(e.type == kind for e in seen) < count:
            seen.append(await connection.recv())
    return [e for e in seen if e.type == kind][count - 1]


def _replayed(record: ConnectionRecord) -> list[dict[str, Any]]:
    return [e["item"] for e in record.received if e["type"] == "conversation.item.create"]


async def _two_turns(
    relay: ProxiedRelay[InProcessRelay],
    fake: FakeRealtimeServer,
    between: Callable[[Any, list[Any]], Awaitable[None]],
    second_turn: Callable[[Any], Awaitable[None]] | None = None,
) -> tuple[list[Any], ConnectionRecord, ConnectionRecord]:
    """A spoken turn, then `between`, then a second spoken turn answered in full; what the client saw."""
    client = AsyncOpenAI(api_key="client-token", base_url=f"{relay.base_url}/v1")
    seen: list[Any] = []
    async with client.realtime.connect(model="gpt-realtime") as connection:
        await connection.session.update(
            session={
                "type": "realtime",
                "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}},
            }
        )
        await _speak(connection, voiced_turn())
        await _until(connection, "response.done", seen)
        await _until(connection, TRANSCRIBED, seen)
        first = await fake.wait_for_connection()
        await between(connection, seen)
        await (second_turn or (lambda c: _speak(c, voiced_turn())))(connection)
        await _until(connection, "response.done", seen, count=2)
    second = await fake.wait_for_connection()
    return seen, first, second


def _assert_context_kept(
    seen: list[Any], first: ConnectionRecord, second: ConnectionRecord, reason: str
) -> None:
    types = [e.type for e in seen]
    assert types.count("session.created") == 1
    assert "error" not in types, [e for e in seen if e.type == "error"]
    (notice,) = [e for e in seen if e.type == NOTICE_TYPE]
    assert notice.reason == reason
    assert 0 < notice.gap_ms < 3000  # a short gap: connect, replay, answers (plus 0.2 s backoff after a drop)
    # The new upstream got the first turn as text: the user's transcript, the assistant's spoken words.
    transcript = next(e.transcript for e in seen if e.type == TRANSCRIBED).strip()
    said = next(e.transcript for e in seen if e.type == "response.output_audio_transcript.done")
    replayed = _replayed(second)
    assert [(i["role"], i["content"][0]["text"]) for i in replayed if i["id"] != SPEAK_ON_ID][:2] == [
        ("user", transcript),
        ("assistant", said),
    ]
    assert all(part["type"] != "output_audio" for i in replayed for part in i.get("content", []))
    # The configuration the client set came along.
    updates = [e for e in second.received if e["type"] == "session.update"]
    assert updates[0]["session"]["audio"]["input"]["transcription"]["model"] == "gpt-4o-transcribe"
    # And the model still answers aloud after a text-only history (the replay ends with the speak-on item).
    second_reply = [
        e for e in seen if e.type == "response.output_audio.delta" and e.response_id != seen_first(seen)
    ]
    assert second_reply, "the second answer has no audio"
    assert second.sent_types().count("response.done") >= 1
    assert first.close_code is not None


def seen_first(seen: list[Any]) -> str:
    return str(next(e for e in seen if e.type == "response.done").response.id)


async def test_an_expired_upstream_is_replaced_and_the_conversation_goes_on(
    relay_factory: Factory, fake_upstream: FakeRealtimeServer
) -> None:
    fake_upstream.options.session_seconds = 5
    fake_upstream.options.text_after_text_history = True
    relay = await relay_factory(rollover_seconds="0", rollover_retries="3")

    async def past_expiry(connection: Any, seen: list[Any]) -> None:
        await _until(connection, NOTICE_TYPE, seen, timeout=10)

    seen, first, second = await _two_turns(relay, fake_upstream, past_expiry)
    assert "session_expired" in str(first.sent)  # the old upstream did expire (the client never saw it)
    _assert_context_kept(seen, first, second, "expired")
    assert voiced_turn() in bytes(second.input_audio)
    registry = relay.inner.metrics.registry
    assert registry.get_sample_value("relay_upstream_rollovers_total", {"reason": "expired"}) == 1


async def test_a_dropped_upstream_mid_speech_is_replaced_without_losing_the_uncommitted_audio(
    relay_factory: Factory, fake_upstream: FakeRealtimeServer
) -> None:
    # Cut TCP as the user's second turn starts: part of that speech reached the old upstream, uncommitted.
    fake_upstream.options.drop_at_event = "input_audio_buffer.speech_started:2"
    fake_upstream.options.text_after_text_history = True
    relay = await relay_factory(rollover_seconds="0", rollover_retries="3")

    async def nothing(connection: Any, seen: list[Any]) -> None:
        return None

    turn = voiced_turn()
    seen, first, second = await _two_turns(relay, fake_upstream, nothing, lambda c: _speak(c, turn))
    _assert_context_kept(seen, first, second, "dropped")
    # Every byte of the second turn reached the new upstream in order: what the old one had not committed was
    # sent again, then the rest as it came.
    assert turn in bytes(second.input_audio)
    assert bytes(first.input_audio).startswith(turn)


async def test_an_old_upstream_is_replaced_between_responses(
    relay_factory: Factory, fake_upstream: FakeRealtimeServer
) -> None:
    fake_upstream.options.text_after_text_history = True
    relay = await relay_factory(rollover_seconds="2", rollover_retries="3")

    async def wait_for_age(connection: Any, seen: list[Any]) -> None:
        await _until(connection, NOTICE_TYPE, seen, timeout=10)

    seen, first, second = await _two_turns(relay, fake_upstream, wait_for_age)
    _assert_context_kept(seen, first, second, "age")
    # Between responses: the old upstream finished its response before it was closed.
    assert first.sent_types().count("response.done") == 1
    assert first.sent_types()[-1] != "response.created"


async def test_without_the_speak_on_item_the_model_drifts_to_text(fake_upstream: FakeRealtimeServer) -> None:
    """The measurement behind the replay's shape, against the simulated model's imitation of the drift."""
    from relay.conversations.items import Item
    from relay.conversations.replay import item_create_events
    from relay.protocol import dumps, loads

    fake_upstream.options.text_after_text_history = True
    history = [
        Item("item_u1", None, 1, role="user", text="What is the weather like?"),
        Item("item_a1", "item_u1", 2, role="assistant", text="It is sunny today."),
        Item("item_u2", "item_a1", 3, role="user", text="And tomorrow?"),
    ]
    import websockets

    answers: dict[bool, list[str]] = {}
    for speak_on in (False, True):
        async with websockets.connect(
            fake_upstream.url, additional_headers={"authorization": f"Bearer {TEST_API_KEY}"}
        ) as ws:
            for event in item_create_events(history, speak_on=speak_on):
                await ws.send(dumps(event))
            await ws.send(dumps({"type": "response.create"}))
            kinds: list[str] = []
            while "response.done" not in kinds:
                kinds.append(str(loads(await ws.recv())["type"]))
            answers[speak_on] = kinds
    assert "response.output_audio.delta" not in answers[False]
    assert "response.output_text.done" in answers[False]
    assert "response.output_audio.delta" in answers[True]


async def test_a_refused_key_on_the_new_upstream_is_not_retried(
    relay_factory: Factory, fake_upstream: FakeRealtimeServer
) -> None:
    fake_upstream.options.session_seconds = 1.5
    relay = await relay_factory(rollover_seconds="0", rollover_retries="3")
    client = AsyncOpenAI(api_key="client-token", base_url=f"{relay.base_url}/v1")
    seen: list[Any] = []
    async with client.realtime.connect(model="gpt-realtime") as connection:
        await _until(connection, "session.created", seen)
        await fake_upstream.wait_for_connection()
        fake_upstream.options.refuse_status = 401  # the next handshake is refused: the key no longer works
        error = await _until(connection, "error", seen, timeout=10)
    assert error.error.code == "relay_upstream_auth_failed"
    refused = await fake_upstream.wait_for_connection()
    assert refused.handshake_status == 401
    await asyncio.sleep(1.5)  # longer than the first backoffs: no further attempt follows
    assert len(fake_upstream.connections) == 2
    assert NOTICE_TYPE not in [e.type for e in seen]
