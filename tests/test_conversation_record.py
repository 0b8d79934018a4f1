"""The conversation record's decisions, without sockets: order by previous_item_id, late transcripts, what a
truncated item keeps, tool calls, cost per usage, and what the replay and the store make of it."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from relay.conversations.items import Item, in_order
from relay.conversations.pricing import DEFAULT_PRICES, PriceTable
from relay.conversations.record import ConversationRecord, ConversationWrite, ItemWrite, UsageWrite
from relay.conversations.replay import SPEAK_ON_ID, item_create_events
from relay.conversations.store import ConversationStore, database_url, shown_url
from relay.conversations.writer import coalesce


def _record() -> ConversationRecord:
    clock = iter(range(1000, 2000))
    return ConversationRecord(
        "rs_test", "alice", PriceTable(DEFAULT_PRICES), model="gpt-realtime", clock=lambda: next(clock)
    )


def _added(item_id: str, previous: str | None, role: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "conversation.item.added",
        "previous_item_id": previous,
        "item": {"id": item_id, "type": "message", "role": role, "content": parts},
    }


def test_items_follow_previous_item_id_not_arrival() -> None:
    items = [
        Item("a", None, 1),
        Item("b", "a", 2),
        Item("d", "b", 3),
        Item("c", "a", 4),  # inserted after a, before b: the latest follower of a comes first
        Item("x", "unknown", 5),  # its predecessor was never seen: a run of its own, in arrival order
    ]
    assert [i.item_id for i in in_order(items)] == ["a", "c", "b", "d", "x"]
    # A cycle from a misbehaving upstream loses nothing.
    looped = [Item("p", "q", 1), Item("q", "p", 2)]
    assert sorted(i.item_id for i in in_order(looped)) == ["p", "q"]


def test_a_late_transcript_lands_on_its_item_and_a_truncation_keeps_the_words_heard() -> None:
    record = _record()
    record.from_upstream(_added("u1", None, "user", [{"type": "input_audio", "transcript": None}]))
    record.from_upstream(_added("a1", "u1", "assistant", []))
    record.from_upstream(
        {
            "type": "response.output_audio_transcript.done",
            "item_id": "a1",
            "transcript": "Sure, the answer is",
        }
    )
    writes = record.from_client(
        {"type": "conversation.item.truncate", "item_id": "a1", "content_index": 0, "audio_end_ms": 640}
    )
    assert (
        isinstance(writes[0], ItemWrite) and writes[0].item.interrupted and writes[0].item.audio_end_ms == 640
    )
    # The API returns the truncated item with an empty transcript: the words already kept stay.
    record.from_upstream(
        {"type": "conversation.item.done", "previous_item_id": "u1",
         "item": {"id": "a1", "type": "message", "role": "assistant", "content": [{"type": "output_audio", "transcript": ""}]}}
    )  # fmt: skip
    writes, spent = record.from_upstream(
        {"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1", "transcript": " What is it? ",
         "usage": {"type": "tokens", "input_tokens": 100, "output_tokens": 10, "total_tokens": 110}}
    )  # fmt: skip
    assert spent is None  # no transcription model known yet: no price, nothing counted
    ordered = record.text_items()
    assert [(i.item_id, i.text, i.interrupted) for i in ordered] == [
        ("u1", "What is it?", False),
        ("a1", "Sure, the answer is", True),
    ]
    assert any(isinstance(w, ConversationWrite) and w.first_words == "What is it?" for w in writes)


def test_usage_is_priced_and_summed_per_response_and_per_transcription() -> None:
    record = _record()
    record.from_upstream({"type": "session.updated", "session": {"model": "gpt-realtime",
                          "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}}})  # fmt: skip
    usage = {"input_token_details": {"audio_tokens": 1000}, "output_token_details": {"audio_tokens": 1000}}
    writes, spent = record.from_upstream(
        {"type": "response.done", "response": {"id": "resp_1", "usage": usage, "output": []}}
    )
    assert spent is not None and spent.cost == Decimal("0.096")  # 1000 × $32/M + 1000 × $64/M
    (row,) = [w for w in writes if isinstance(w, UsageWrite)]
    assert (row.usage_id, row.kind, row.cost) == ("response:resp_1", "response", Decimal("0.096"))
    _, spent = record.from_upstream(
        {"type": "conversation.item.input_audio_transcription.completed", "item_id": "u9", "transcript": "hi",
         "usage": {"type": "tokens", "input_tokens": 400, "output_tokens": 0, "total_tokens": 400,
                   "input_token_details": {"audio_tokens": 400}}}
    )  # fmt: skip
    assert spent is not None and spent.model == "gpt-4o-transcribe" and spent.cost == Decimal("0.001")
    assert record.cost == Decimal("0.097") and record.summary().cost == Decimal("0.097")


def test_tool_calls_and_outputs_are_kept_and_replayed_as_they_were() -> None:
    record = _record()
    record.from_upstream(_added("u1", None, "user", [{"type": "input_text", "text": "Weather in Paris?"}]))
    record.from_upstream({"type": "conversation.item.added", "previous_item_id": "u1",
                          "item": {"id": "f1", "type": "function_call", "call_id": "call_1", "name": "weather"}})  # fmt: skip
    record.from_upstream({"type": "response.function_call_arguments.done", "item_id": "f1", "call_id": "call_1",
                          "name": "weather", "arguments": '{"city": "Paris"}'})  # fmt: skip
    record.from_upstream({"type": "conversation.item.added", "previous_item_id": "f1",
                          "item": {"id": "o1", "type": "function_call_output", "call_id": "call_1", "output": "sunny"}})  # fmt: skip
    events = item_create_events(record.text_items())
    assert [e["item"]["type"] for e in events] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert events[1]["item"] == {"id": "f1", "type": "function_call", "call_id": "call_1", "name": "weather",
                                 "arguments": '{"city": "Paris"}'}  # fmt: skip
    assert events[-1]["item"]["id"] == SPEAK_ON_ID and events[-1]["item"]["role"] == "system"
    # The relay's own speak-on item, seen coming back from an upstream, is never recorded.
    assert record.from_upstream(
        _added(SPEAK_ON_ID, "o1", "system", [{"type": "input_text", "text": "x"}])
    ) == ([], None)


def test_writes_of_one_row_coalesce_to_the_latest() -> None:
    record = _record()
    first = record.from_upstream(_added("u1", None, "user", [{"type": "input_text", "text": "one"}]))[0]
    second = record.from_upstream(
        {"type": "conversation.item.done", "item": {"id": "u1", "type": "message", "role": "user",
                                                    "content": [{"type": "input_text", "text": "two"}]}}
    )[0]  # fmt: skip
    merged = coalesce([*first, *second])
    items = [w for w in merged if isinstance(w, ItemWrite)]
    assert len(items) == 1 and items[0].item.text == "two"


def test_database_urls_name_the_async_drivers_and_hide_the_password(tmp_path: Path) -> None:
    assert database_url("", tmp_path) == f"sqlite+aiosqlite:///{tmp_path / 'history.sqlite3'}"
    url = database_url("postgresql://relay:secret@db:5432/history", tmp_path)
    assert url.startswith("postgresql+asyncpg://relay:secret@db:5432/")
    assert "secret" not in shown_url(url)


async def test_retention_and_deletion_per_identity(tmp_path: Path) -> None:
    store = ConversationStore(database_url("", tmp_path))
    assert await store.open() == 1
    try:
        for name, identity, when in (
            ("rs_old", "alice", 100.0),
            ("rs_new", "alice", 5000.0),
            ("rs_bob", "bob", 100.0),
        ):
            await store.apply(
                [ConversationWrite(name, identity, when, when, "gpt-realtime", "hi", Decimal(0))]
            )
        assert set(await store.delete_older_than(1000.0)) == {"rs_old", "rs_bob"}
        assert [c["id"] for c in await store.list_conversations("alice")] == ["rs_new"]
        assert await store.delete_identity("alice") == ["rs_new"]
        assert await store.count("alice") == 0
    finally:
        await store.close()
    # Opening again migrates nothing and keeps the version.
    again = ConversationStore(database_url("", tmp_path))
    assert await again.open() == 1
    await again.close()


async def test_the_retention_sweep_removes_expired_conversations_and_their_recordings(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from relay.conversations.metrics import HistoryMetrics
    from relay.conversations.recording import Recordings
    from relay.conversations.writer import HistoryWriter

    store = ConversationStore(database_url("", tmp_path))
    await store.open()
    recordings = Recordings(tmp_path / "recordings")
    for name in ("rs_old", "rs_new"):
        (tmp_path / "recordings" / name).mkdir(parents=True)
    now = 10 * 86400.0
    writer = HistoryWriter(
        store,
        HistoryMetrics(CollectorRegistry(), (), identity_label=False),
        queue_size=10,
        retention_days=3,
        on_expired=recordings.delete,
        clock=lambda: now,
    )
    try:
        for name, when in (("rs_old", now - 4 * 86400), ("rs_new", now - 2 * 86400)):
            await store.apply([ConversationWrite(name, "alice", when, when, None, "", Decimal(0))])
        assert await writer.sweep() == 1
        assert [c["id"] for c in await store.list_conversations("alice")] == ["rs_new"]
        assert not (tmp_path / "recordings" / "rs_old").exists()
        assert (tmp_path / "recordings" / "rs_new").exists()
    finally:
        recordings.stop()
        await store.close()
