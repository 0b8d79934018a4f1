"""A database that is locked, slow or gone does not delay frames (the forward latency histogram shows no change
beside a healthy one) nor end the session: what could not be written is logged and counted."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.conversations.store import ConversationStore
from relay.fake.server import FakeRealtimeServer
from tests.conftest import ProxiedRelay
from tests.harness import InProcessRelay, free_port
from tests.postgres_server import postgres_server
from tests.test_conversation_history import ALICE, BOB, fresh_database, spoken_conversation

Factory = Callable[..., Awaitable[ProxiedRelay[InProcessRelay]]]
FAST = 0.001  # a frame the relay forwards within a millisecond
STALLED = 0.01  # a frame held this long was waited on (a database write on the forwarding path would do that)


def _latency(relay: ProxiedRelay[InProcessRelay]) -> dict[str, tuple[float, float]]:
    """Per direction: the share of frames forwarded within FAST, and how many were held longer than STALLED."""
    registry = relay.inner.metrics.registry
    shown = {}
    for direction in ("to_upstream", "to_client"):
        labels = {"direction": direction}
        count = registry.get_sample_value("relay_forward_latency_seconds_count", labels) or 0
        fast, within = (
            registry.get_sample_value("relay_forward_latency_seconds_bucket", {**labels, "le": str(bound)})
            or 0
            for bound in (FAST, STALLED)
        )
        assert count > 20, f"too few frames {direction} to compare"
        shown[direction] = (fast / count, count - within)
    return shown


def _writes(relay: ProxiedRelay[InProcessRelay], outcome: str) -> float:
    value = relay.inner.metrics.registry.get_sample_value("relay_history_writes_total", {"outcome": outcome})
    return value or 0.0


async def _eventually(check: Callable[[], bool], timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.1)


def _unchanged(healthy: dict[str, tuple[float, float]], faulty: dict[str, tuple[float, float]]) -> None:
    for direction, (fast, stalled) in faulty.items():
        healthy_fast, healthy_stalled = healthy[direction]
        # Bounds for a shared machine: the share of sub-millisecond frames stays, and at most one more frame is
        # held 10 ms (a garbage-collector pause can hold one; a write on the forwarding path holds one per write).
        assert fast >= healthy_fast - 0.15, (direction, healthy, faulty)
        assert stalled <= healthy_stalled + 1, (direction, healthy, faulty)


async def test_a_locked_slow_or_gone_database_delays_no_frame_and_ends_no_session(
    relay_factory: Factory,
    fake_upstream: FakeRealtimeServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tokens = f"{ALICE},{BOB}"

    async def relay_on(name: str, **settings: str) -> ProxiedRelay[InProcessRelay]:
        data = tmp_path / name
        return await relay_factory(history="on", data_dir=str(data), access_tokens=tokens, **settings)

    # Healthy, beside which the others are judged.
    healthy = await relay_on("healthy")
    await spoken_conversation(healthy, fake_upstream)
    assert _writes(healthy, "failed") == 0 and _writes(healthy, "written") > 0
    baseline = _latency(healthy)

    # Locked: another process holds SQLite's write lock for the whole conversation.
    locked = await relay_on("locked")
    holder = sqlite3.connect(tmp_path / "locked" / "history.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        talk = await spoken_conversation(locked, fake_upstream, flush=False)
        assert [e.type for e in talk["seen"]].count("response.done") == 2
        _unchanged(baseline, _latency(locked))
        await _eventually(lambda: _writes(locked, "failed") > 0)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "history_write_failed" in capsys.readouterr().out

    # Slow: every write takes three seconds.
    real_apply = ConversationStore.apply

    async def slow_apply(self: ConversationStore, writes: Any) -> None:
        await asyncio.sleep(3)
        await real_apply(self, writes)

    monkeypatch.setattr(ConversationStore, "apply", slow_apply)
    slow = await relay_on("slow")
    talk = await spoken_conversation(slow, fake_upstream, flush=False)
    assert [e.type for e in talk["seen"]].count("response.done") == 2
    _unchanged(baseline, _latency(slow))
    monkeypatch.undo()

    # Gone: the PostgreSQL server stops before the conversation.
    with postgres_server() as server:
        url = await fresh_database(server.url, "gone")
        gone = await relay_on("gone", history_database_url=url)
        server.stop()
        talk = await spoken_conversation(gone, fake_upstream, flush=False)
        assert [e.type for e in talk["seen"]].count("response.done") == 2
        _unchanged(baseline, _latency(gone))
        await _eventually(lambda: _writes(gone, "failed") > 0)
    out = capsys.readouterr().out
    assert "history_write_failed" in out
    assert "relay-test-password" not in out  # the database password never reaches a log line


async def test_a_database_unreachable_at_start_up_leaves_sessions_running(
    relay_factory: Factory,
    fake_upstream: FakeRealtimeServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"postgresql://relay:not-shown-pw@127.0.0.1:{free_port()}/history"
    relay = await relay_factory(
        history="on", data_dir=str(tmp_path), access_tokens=f"{ALICE},{BOB}", history_database_url=url
    )
    talk = await spoken_conversation(relay, fake_upstream, flush=False)
    assert [e.type for e in talk["seen"]].count("response.done") == 2
    await _eventually(lambda: _writes(relay, "failed") > 0)
    async with httpx.AsyncClient(base_url=relay.base_url) as http:
        listed = await http.get("/api/conversations", headers={"authorization": f"Bearer {ALICE}"})
    assert listed.status_code == 503 and listed.json()["error"]["code"] == "history_unavailable"
    out = capsys.readouterr().out
    assert "history_unavailable" in out and "not-shown-pw" not in out
