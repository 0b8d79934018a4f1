"""Roll-over decisions without sockets: when a proactive roll-over is due, which upstream errors are the relay's
business, what is fatal, the backoff, and what a new upstream is sent."""

from __future__ import annotations

import json

from relay.conversations.items import Item
from relay.conversations.rollover import BACKOFF_SECONDS, NOTICE_TYPE, UNCOMMITTED_BYTES, Rollover


def _rollover(now: list[float], **kwargs: object) -> Rollover:
    options = {"age_seconds": 100, "retries": 3, **kwargs}
    return Rollover(clock=lambda: now[0], **options)  # type: ignore[arg-type]


def test_a_proactive_roll_over_waits_for_the_age_a_quiet_moment_and_no_response() -> None:
    now = [0.0]
    rollover = _rollover(now)
    assert not rollover.due(0)
    now[0] = 100.0
    assert rollover.due(0)
    assert not rollover.due(1)  # a response is in progress
    rollover.swallow({"type": "input_audio_buffer.speech_started"})
    assert not rollover.due(0)  # the user is speaking
    rollover.swallow({"type": "input_audio_buffer.speech_stopped"})
    assert rollover.due(0)
    rollover.renewed()
    assert not rollover.due(0) and rollover.seconds_until_due() == 100
    assert not _rollover(now, age_seconds=0).due(0)  # 0: never


def test_expiry_is_swallowed_and_fatal_errors_stop_retries() -> None:
    now = [0.0]
    rollover = _rollover(now)
    assert rollover.swallow({"type": "error", "error": {"code": "session_expired", "message": "…"}})
    assert rollover.expired and rollover.may_retry()
    assert not rollover.swallow(
        {"type": "error", "error": {"code": "insufficient_quota"}}
    )  # the client hears it
    assert not rollover.may_retry()
    # Without retries an expiry reaches the client as the API sent it.
    assert not _rollover(now, retries=0).swallow({"type": "error", "error": {"code": "session_expired"}})


def test_retries_back_off_and_only_transient_failures_are_retried() -> None:
    rollover = _rollover([0.0], retries=3)
    assert rollover.may_retry("relay_upstream_unavailable") and rollover.may_retry("relay_upstream_timeout")
    assert not rollover.may_retry("relay_upstream_auth_failed")
    assert not rollover.may_retry("relay_upstream_rate_limited")
    delays = [rollover.next_delay("dropped") for _ in range(3)]
    assert delays == list(BACKOFF_SECONDS[:3])
    assert not rollover.may_retry()
    rollover.swallow({"type": "response.done", "response": {}})  # a useful upstream earns fresh attempts
    assert rollover.may_retry()
    # A planned roll-over or an expiry starts at once; a second attempt backs off.
    planned = _rollover([0.0])
    assert [planned.next_delay("age"), planned.next_delay("age")] == [0.0, BACKOFF_SECONDS[1]]


def test_the_replay_carries_the_configuration_the_text_and_the_uncommitted_audio() -> None:
    rollover = _rollover(
        [0.0], defaults={"instructions": "Be brief.", "audio": {"output": {"voice": "marin"}}}
    )
    rollover.from_client(
        {"type": "session.update", "session": {"type": "realtime",
         "audio": {"input": {"format": {"type": "audio/pcm", "rate": 48000}, "transcription": {"model": "whisper-1"}}}}}
    )  # fmt: skip
    rollover.sent('{"type":"input_audio_buffer.append","audio":"AAAA"}')
    rollover.swallow({"type": "input_audio_buffer.committed"})
    rollover.sent('{"type":"input_audio_buffer.append","audio":"BBBB"}')
    rollover.sent('{"type":"response.create"}')  # not audio: not kept
    replay = rollover.replay(
        [Item("u1", None, 1, role="user", text="Hi"), Item("a1", "u1", 2, role="assistant", text="Hello")]
    )
    session = json.loads(replay.frames[0])["session"]
    assert session["instructions"] == "Be brief." and session["audio"]["output"]["voice"] == "marin"
    assert (
        session["audio"]["input"]["format"]["rate"] == 24000
    )  # the relay goes on resampling the client's 48000
    assert session["audio"]["input"]["transcription"]["model"] == "whisper-1"
    creates = [json.loads(f) for f in replay.frames[1:]]
    assert [c["item"]["id"] for c in creates] == ["u1", "a1", "relay_speak_on"]
    assert replay.audio == ['{"type":"input_audio_buffer.append","audio":"BBBB"}']
    assert set(replay.items_by_event.values()) == {"u1", "a1", "relay_speak_on"}
    notice = json.loads(rollover.notice("age", 0.25, 3))
    assert (notice["type"], notice["reason"], notice["gap_ms"], notice["replayed_items"]) == (
        NOTICE_TYPE,
        "age",
        250,
        3,
    )


def test_uncommitted_audio_is_bounded() -> None:
    rollover = _rollover([0.0])
    frame = '{"type":"input_audio_buffer.append","audio":"' + "A" * 100_000 + '"}'
    for _ in range(3 * UNCOMMITTED_BYTES // len(frame)):
        rollover.sent(frame)
    kept = rollover.replay([]).audio
    assert sum(len(f) for f in kept) <= UNCOMMITTED_BYTES
    assert len(kept) >= UNCOMMITTED_BYTES // len(frame) - 1
