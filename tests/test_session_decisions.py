"""The session's decisions in the detail a client, the model or a dashboard sees them.

Each test drives `SessionState` with the frames a client or the upstream would send and checks what goes out
(frames to each side, error fields) and what the metrics then say, with a clock the test controls.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import structlog

from relay.audio import make_resampler, pcm16_duration_seconds
from relay.bounds import SessionBounds
from relay.metrics import TO_CLIENT, TO_UPSTREAM, RelayMetrics
from tests.test_boundaries import exported
from tests.test_session_state import make_state, pcm, sent


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def append(data: bytes, **extra: Any) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": b64(data), **extra})


def one_error(actions: Any) -> dict[str, Any]:
    """The single error event of `actions`, which sent nothing upstream."""
    assert actions.to_upstream == []
    [event] = sent(actions.to_client)
    assert event["type"] == "error"
    error: dict[str, Any] = event["error"]
    return error


class Clock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- client events that are not events ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["[1, 2]", '"session.update"', "42", "null", '{"type": 5}', '{"event_id": "e"}']
)
def test_a_frame_that_is_not_an_event_object_is_a_bad_event(text: str) -> None:
    metrics = RelayMetrics()
    state = make_state(metrics=metrics)
    error = one_error(state.from_client_text(text))
    assert error["code"] == "relay_bad_event" and error["type"] == "invalid_request_error"
    assert '"type"' in error["message"]
    assert exported(metrics, "relay_errors_total", code="relay_bad_event") == 1


def test_an_error_names_the_clients_event_id_only_when_it_is_a_string() -> None:
    state = make_state()
    error = one_error(state.from_client_text('{"type": "made.up", "event_id": 7}'))
    assert error["event_id"] is None
    error = one_error(state.from_client_text('{"type": "made.up", "event_id": "evt_7"}'))
    assert error["event_id"] == "evt_7"


# -- appended audio ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nbytes", [960, 962, 964])  # base64 with no, two and one padding characters
def test_audio_at_24k_is_forwarded_untouched_and_counted_to_the_byte(nbytes: int) -> None:
    metrics = RelayMetrics()
    state = make_state(metrics=metrics)
    text = append(b"\1\0" * (nbytes // 2), event_id="evt_a")
    assert state.from_client_text(text).to_upstream == [text]
    assert state.from_client_text(text).to_upstream == [text]
    assert state.audio_seconds[TO_UPSTREAM] == pytest.approx(2 * nbytes / 48000, abs=1e-12)
    assert exported(metrics, "relay_audio_seconds_total", direction="to_upstream") == pytest.approx(
        2 * nbytes / 48000, abs=1e-12
    )
    assert (
        exported(metrics, "relay_events_total", direction="to_upstream", type="input_audio_buffer.append")
        == 2
    )


def test_audio_at_another_rate_is_resampled_by_the_configured_resampler_and_keeps_its_event_id() -> None:
    state = make_state(input_rate=48000, resampler_quality="hq")
    reference = make_resampler(48000, 24000, "hq")
    chunks = [pcm(4800, 48000, freq=200.0 * n) for n in range(1, 4)]
    got = b""
    for n, chunk in enumerate(chunks):
        forwarded = sent(state.from_client_text(append(chunk, event_id=f"evt_{n}")).to_upstream)
        for event in forwarded:
            assert event["type"] == "input_audio_buffer.append" and event["event_id"] == f"evt_{n}"
            got += base64.b64decode(event["audio"])
    expected = b"".join(reference.process(c) for c in chunks)
    assert got == expected
    assert state.audio_seconds[TO_UPSTREAM] == pytest.approx(len(got) / 48000, abs=1e-12)


@pytest.mark.parametrize(
    ("event", "says"),
    [
        ({"type": "input_audio_buffer.append"}, "needs"),
        ({"type": "input_audio_buffer.append", "audio": 5}, "needs"),
        ({"type": "input_audio_buffer.append", "audio": "AAAA!!!!"}, "not valid base64"),
        ({"type": "input_audio_buffer.append", "audio": "AA=A"}, "not valid base64"),
        ({"type": "input_audio_buffer.append", "audio": b64(b"\0\0\0")}, "even number"),
    ],
)
def test_bad_appended_audio_at_another_rate_is_refused_and_named(event: dict[str, Any], says: str) -> None:
    state = make_state(input_rate=48000)
    error = one_error(state.from_client_text(json.dumps({**event, "event_id": "evt_bad"})))
    assert error["code"] == "relay_bad_audio" and error["param"] == "audio" and error["event_id"] == "evt_bad"
    assert says in error["message"]
    assert state.audio_seconds[TO_UPSTREAM] == 0


def test_binary_frames_become_appends_without_an_event_id_and_are_counted_as_appends() -> None:
    metrics = RelayMetrics()
    state = make_state(metrics=metrics)
    [event] = sent(state.from_client_bytes(pcm(480, 24000)).to_upstream)
    assert set(event) == {"type", "audio"}
    assert (
        exported(metrics, "relay_events_total", direction="to_upstream", type="input_audio_buffer.append")
        == 1
    )


def test_only_a_clear_drops_held_audio() -> None:
    state = make_state(input_rate=48000)
    state.from_client_bytes(pcm(960, 48000))
    state.from_client_text('{"type": "conversation.item.create", "item": {"type": "message"}}')
    state.from_client_text('{"type": "response.cancel"}')
    commit = sent(state.from_client_text('{"type": "input_audio_buffer.commit"}').to_upstream)
    assert [e["type"] for e in commit] == ["input_audio_buffer.append", "input_audio_buffer.commit"]


def test_resampling_time_is_measured_with_the_sessions_clock() -> None:
    metrics = RelayMetrics()
    state = make_state(metrics=metrics, input_rate=48000, output_rate=48000, clock=Clock())
    state.from_client_bytes(pcm(960, 48000))
    state.from_upstream_text(
        json.dumps({"type": "response.output_audio.delta", "response_id": "r", "delta": b64(pcm(480, 24000))})
    )
    for direction in ("to_upstream", "to_client"):
        assert exported(metrics, "relay_resample_seconds_count", direction=direction) == 1
        assert exported(metrics, "relay_resample_seconds_sum", direction=direction) == 0


# -- declared rates in session.update ----------------------------------------------------------------------------


def update(audio: Any, **extra: Any) -> str:
    return json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": audio}, **extra})


def test_an_output_rate_alone_applies_and_is_rewritten() -> None:
    state = make_state()
    [forwarded] = sent(
        state.from_client_text(
            update({"output": {"format": {"type": "audio/pcm", "rate": 48000}}})
        ).to_upstream
    )
    assert forwarded["session"]["audio"]["output"]["format"]["rate"] == 24000
    assert (state.input_rate, state.output_rate) == (24000, 48000)
    delta = {"type": "response.output_audio.delta", "response_id": "r", "delta": b64(pcm(2400, 24000))}
    [shown] = sent(state.from_upstream_text(json.dumps(delta)).to_client)
    assert len(base64.b64decode(shown["delta"])) > 2 * 4000  # about twice the samples


def test_a_rate_without_a_format_type_is_pcm_and_g711_is_left_alone() -> None:
    state = make_state()
    state.from_client_text(update({"input": {"format": {"rate": 16000}}}))
    assert state.input_rate == 16000
    text = update({"input": {"format": {"type": "audio/pcmu", "rate": 16000}}, "output": {"voice": "ash"}})
    assert state.from_client_text(text).to_upstream == [text]
    assert state.input_rate == 16000


def test_an_input_that_is_not_pcm_does_not_hide_the_output_rate() -> None:
    state = make_state()
    state.from_client_text(
        update(
            {
                "input": {"format": {"type": "audio/pcmu"}},
                "output": {"format": {"type": "audio/pcm", "rate": 44100}},
            }
        )
    )
    assert state.output_rate == 44100


@pytest.mark.parametrize("direction", ["input", "output"])
def test_a_bad_rate_names_its_field_and_the_event(direction: str) -> None:
    state = make_state()
    error = one_error(
        state.from_client_text(
            update({direction: {"format": {"type": "audio/pcm", "rate": 5}}}, event_id="evt_r")
        )
    )
    assert error["code"] == "relay_bad_audio" and error["event_id"] == "evt_r"
    assert error["param"] == f"session.audio.{direction}.format.rate"
    assert f"session.audio.{direction}.format.rate must be" in error["message"]


@pytest.mark.parametrize(
    "session", [None, "realtime", {"audio": "pcm"}, {"audio": {"input": "pcm"}}, {"instructions": "x"}]
)
def test_a_session_update_without_rates_is_forwarded_as_it_came(session: Any) -> None:
    state = make_state()
    text = json.dumps({"type": "session.update", "session": session})
    assert state.from_client_text(text).to_upstream == [text]


def test_a_new_input_rate_sends_the_old_rates_audio_first() -> None:
    state = make_state(input_rate=48000)
    state.from_client_bytes(pcm(960, 48000))
    events = sent(
        state.from_client_text(
            update({"input": {"format": {"type": "audio/pcm", "rate": 16000}}})
        ).to_upstream
    )
    assert [e["type"] for e in events] == ["input_audio_buffer.append", "session.update"]
    # The same rate again changes nothing and holds nothing back.
    state.from_client_bytes(pcm(320, 16000))
    again = sent(
        state.from_client_text(
            update({"input": {"format": {"type": "audio/pcm", "rate": 16000}}})
        ).to_upstream
    )
    assert [e["type"] for e in again] == ["session.update"]


# -- audio from the upstream -------------------------------------------------------------------------------------


def test_audio_at_24k_reaches_the_client_untouched_and_is_counted() -> None:
    state = make_state()
    delta = json.dumps(
        {"type": "response.output_audio.delta", "response_id": "r", "delta": b64(b"\0\1" * 1200)}
    )
    assert state.from_upstream_text(delta).to_client == [delta]
    assert state.from_upstream_text(delta).to_client == [delta]
    assert state.audio_seconds[TO_CLIENT] == pytest.approx(0.1, abs=1e-12)


def test_g711_audio_is_counted_at_8000_bytes_per_second() -> None:
    metrics = RelayMetrics()
    state = make_state(metrics=metrics)
    formats = {"input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcma"}}}
    state.from_upstream_text(json.dumps({"type": "session.updated", "session": {"audio": formats}}))
    state.from_client_text(append(b"\x7f" * 800))
    state.from_upstream_text(
        json.dumps({"type": "response.output_audio.delta", "response_id": "r", "delta": b64(b"\xd5" * 1600)})
    )
    assert state.audio_seconds == {TO_UPSTREAM: pytest.approx(0.1), TO_CLIENT: pytest.approx(0.2)}


def test_the_tail_at_done_is_one_more_delta_of_the_same_part() -> None:
    state = make_state(output_rate=48000)
    ids = {"response_id": "resp_1", "item_id": "item_1", "output_index": 2, "content_index": 1}
    state.from_upstream_text(
        json.dumps({"type": "response.output_audio.delta", **ids, "delta": b64(pcm(2400, 24000))})
    )
    done = json.dumps({"type": "response.output_audio.done", **ids})
    tail, passed = sent(state.from_upstream_text(done).to_client)
    assert passed == json.loads(done)
    assert tail["type"] == "response.output_audio.delta" and tail["event_id"].startswith("event_")
    assert {k: tail[k] for k in ids} == ids and len(base64.b64decode(tail["delta"])) > 0


def test_the_tail_needs_no_ids_beyond_those_the_upstream_sent() -> None:
    state = make_state(output_rate=48000)
    state.from_upstream_text(
        json.dumps({"type": "response.output_audio.delta", "delta": b64(pcm(2400, 24000))})
    )
    tail, _ = sent(state.from_upstream_text('{"type": "response.output_audio.done"}').to_client)
    assert set(tail) == {"type", "event_id", "delta"}


@pytest.mark.parametrize(
    "event",
    [
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": 10},
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900},
        {"type": "response.created", "response": {"id": "r"}},
        {"type": "response.done", "response": {"id": "r", "usage": {"total_tokens": 5}}},
        {"type": "rate_limits.updated", "rate_limits": [{"name": "tokens", "remaining": 10}]},
    ],
)
def test_upstream_events_the_relay_watches_still_reach_the_client_as_they_came(event: dict[str, Any]) -> None:
    text = json.dumps(event)
    assert make_state().from_upstream_text(text).to_client == [text]


# -- turns and the wait for first audio --------------------------------------------------------------------------


def delta_of(response_id: str) -> str:
    return json.dumps({"type": "response.output_audio.delta", "response_id": response_id, "delta": "AAAA"})


def first_audio(metrics: RelayMetrics, trigger: str) -> tuple[float, float]:
    return (
        exported(metrics, "relay_response_first_audio_seconds_count", trigger=trigger),
        exported(metrics, "relay_response_first_audio_seconds_sum", trigger=trigger),
    )


@pytest.mark.parametrize(
    ("turn_end", "trigger"),
    [
        ("client:input_audio_buffer.commit", "commit"),
        ("client:response.create", "response_create"),
        ("upstream:input_audio_buffer.speech_stopped", "speech_stopped"),
    ],
)
def test_each_turn_is_timed_from_its_end_to_the_hand_off_of_its_first_audio(
    turn_end: str, trigger: str
) -> None:
    clock = Clock()
    metrics = RelayMetrics()
    state = make_state(metrics=metrics, clock=clock)
    side, event_type = turn_end.split(":")
    waits = []
    for n, (to_created, to_audio, to_hand_off) in enumerate([(0.1, 0.25, 0.05), (0.2, 0.5, 0.1)]):
        frame = json.dumps({"type": event_type})
        (state.from_client_text if side == "client" else state.from_upstream_text)(frame)
        clock.now += to_created
        state.from_upstream_text(json.dumps({"type": "response.created", "response": {"id": f"r{n}"}}))
        clock.now += to_audio
        assert state.from_upstream_text(delta_of(f"r{n}")).first_audio
        clock.now += to_hand_off
        state.first_audio_forwarded()
        # Later audio of the same response, and a second hand-off call, change nothing.
        assert not state.from_upstream_text(delta_of(f"r{n}")).first_audio
        state.first_audio_forwarded()
        state.from_upstream_text(json.dumps({"type": "response.done", "response": {"id": f"r{n}"}}))
        waits.append(to_created + to_audio + to_hand_off)
        clock.now += 1
    assert state.turns == 2
    assert state.first_audio_waits == [pytest.approx(w) for w in waits]
    count, total = first_audio(metrics, trigger)
    assert count == 2 and total == pytest.approx(sum(waits))


def test_events_that_end_no_turn_start_no_wait() -> None:
    clock = Clock()
    metrics = RelayMetrics()
    state = make_state(metrics=metrics, clock=clock)
    state.from_client_text('{"type": "conversation.item.create", "item": {"type": "message"}}')
    state.from_client_text('{"type": "input_audio_buffer.clear"}')
    state.from_upstream_text(json.dumps({"type": "response.created", "response": {"id": "r1"}}))
    assert not state.from_upstream_text(delta_of("r1")).first_audio
    assert state.turns == 0 and state.first_audio_waits == []


def waits_after(*script: float | tuple[str, str]) -> list[float]:
    """Play `script` (seconds to wait, or (side, event type) to receive), then answer with response r1's audio."""
    clock = Clock()
    state = make_state(clock=clock)
    for step in script:
        if isinstance(step, tuple):
            side, event_type = step
            frame = json.dumps({"type": event_type})
            (state.from_client_text if side == "client" else state.from_upstream_text)(frame)
        else:
            clock.now += step
    state.from_upstream_text(json.dumps({"type": "response.created", "response": {"id": "r1"}}))
    state.from_upstream_text(delta_of("r1"))
    state.first_audio_forwarded()
    return state.first_audio_waits


def test_the_earliest_end_of_a_turn_counts() -> None:
    # A client asking for a response after server VAD ended the turn does not restart the wait.
    waits = waits_after(
        ("upstream", "input_audio_buffer.speech_stopped"), 0.3, ("client", "response.create"), 0.2
    )
    assert waits == [pytest.approx(0.5)]


def test_speaking_again_before_a_response_moves_the_turns_end() -> None:
    waits = waits_after(
        ("upstream", "input_audio_buffer.speech_stopped"),
        1.0,
        ("upstream", "input_audio_buffer.speech_started"),
        1.0,
        ("upstream", "input_audio_buffer.speech_stopped"),
        0.4,
    )
    assert waits == [pytest.approx(0.4)]


def test_audio_without_a_response_created_answers_the_pending_turn() -> None:
    clock = Clock()
    state = make_state(clock=clock)
    state.from_client_text('{"type": "response.create"}')
    clock.now += 0.7
    assert state.from_upstream_text(delta_of("r9")).first_audio
    state.first_audio_forwarded()
    assert state.first_audio_waits == [pytest.approx(0.7)] and state.turns == 1


def test_a_response_that_answers_no_turn_is_not_timed() -> None:
    clock = Clock()
    state = make_state(clock=clock)
    state.from_upstream_text(json.dumps({"type": "response.created", "response": {"id": "r0"}}))
    state.from_client_text('{"type": "input_audio_buffer.commit"}')  # a later turn, for a later response
    clock.now += 0.5
    assert not state.from_upstream_text(delta_of("r0")).first_audio
    state.from_upstream_text(json.dumps({"type": "response.created", "response": {"id": "r1"}}))
    assert state.from_upstream_text(delta_of("r1")).first_audio
    assert state.turns == 1


# -- usage -------------------------------------------------------------------------------------------------------


def done_with(usage: Any) -> str:
    return json.dumps({"type": "response.done", "response": {"id": "resp", "usage": usage}})


def test_usage_is_counted_by_kind() -> None:
    metrics = RelayMetrics()
    state = make_state(metrics=metrics)
    usage = {
        "total_tokens": 63,
        "input_token_details": {"text_tokens": 1, "audio_tokens": 2, "image_tokens": 3, "cached_tokens": 4},
        "output_token_details": {
            "text_tokens": 5,
            "audio_tokens": 6,
            "image_tokens": 100,
            "cached_tokens": 100,
        },
    }
    state.from_upstream_text(done_with(usage))
    expected = {
        "input_text": 1,
        "input_audio": 2,
        "input_image": 3,
        "input_cached": 4,
        "output_text": 5,
        "output_audio": 6,
    }
    for kind, count in expected.items():
        assert exported(metrics, "relay_tokens_total", kind=kind) == count, kind


def test_usage_counts_only_whole_positive_numbers() -> None:
    seen: list[int] = []

    def on_usage(tokens: int) -> None:
        seen.append(tokens)

    metrics = RelayMetrics()
    state = make_state(metrics=metrics, on_usage=on_usage)
    for total in (None, "7", 0, -4, 1, 2):
        state.from_upstream_text(
            done_with({"total_tokens": total, "input_token_details": {"text_tokens": True}})
        )
    assert seen == [1, 2] and state.tokens_used == 3
    assert exported(metrics, "relay_tokens_total", kind="input_text") == 0
    state.from_upstream_text(done_with("lots"))
    assert state.tokens_used == 3


def test_usage_is_counted_for_the_identity() -> None:
    metrics = RelayMetrics(identity_label=True)
    state = make_state(metrics=metrics)
    state.identity_metrics = metrics.for_identity("token:abc")
    for total in (40, 2, 1):
        state.from_upstream_text(done_with({"total_tokens": total}))
    assert exported(metrics, "relay_identity_tokens_total", identity="token:abc") == 43


def test_a_spent_budget_delivers_the_response_then_ends_the_session() -> None:
    metrics = RelayMetrics()
    state = make_state(
        metrics=metrics, on_usage=lambda tokens: "Your daily budget is spent." if tokens >= 10 else None
    )
    assert state.from_upstream_text(done_with({"total_tokens": 9})).close is None
    text = done_with({"total_tokens": 10})
    actions = state.from_upstream_text(text)
    assert actions.to_client[0] == text
    [error] = sent(actions.to_client[1:])
    assert (
        error["error"]["code"] == "relay_limit_exceeded"
        and error["error"]["message"] == "Your daily budget is spent."
    )
    assert actions.close == (1008, "relay_limit_exceeded")
    assert exported(metrics, "relay_errors_total", code="relay_limit_exceeded") == 1


# -- upstream errors and rate limits -----------------------------------------------------------------------------


def test_upstream_errors_pass_unchanged_and_are_counted_by_their_code() -> None:
    metrics = RelayMetrics()
    state = make_state(metrics=metrics)
    text = json.dumps(
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "code": "input_audio_buffer_commit_empty"},
        }
    )
    assert state.from_upstream_text(text).to_client == [text]
    assert exported(metrics, "relay_errors_total", code="input_audio_buffer_commit_empty") == 1


def test_malformed_upstream_frames_are_server_errors() -> None:
    for text in ("<html>", '{"no": "type"}', '{"type": 3}', "[]"):
        error = one_error(make_state().from_upstream_text(text))
        assert error["code"] == "relay_upstream_protocol_error" and error["type"] == "server_error", text


def test_rate_limits_are_exported_by_name() -> None:
    metrics = RelayMetrics()
    state = make_state(metrics=metrics)
    limits = [
        {"name": "tokens", "remaining": 900},
        {"name": "requests", "remaining": 4.5},
        {"name": "x"},
        "junk",
    ]
    state.from_upstream_text(json.dumps({"type": "rate_limits.updated", "rate_limits": limits}))
    assert exported(metrics, "relay_upstream_rate_limit_remaining", name="tokens") == 900
    assert exported(metrics, "relay_upstream_rate_limit_remaining", name="requests") == 4.5


def test_a_long_append_is_resampled_in_slices_and_all_of_it_goes_up() -> None:
    state = make_state(input_rate=48000)
    reference = make_resampler(48000, 24000)
    long = pcm(48000 * 13 // 10, 48000, freq=300.0)  # 1.3 s: three slices of at most 0.5 s
    actions = state.from_client_text(append(long, event_id="evt_long"))
    events = sent(actions.to_upstream)
    for more in actions.more or ():
        events += sent(more.to_upstream)
    assert len(events) == 3 and events[0]["event_id"] == "evt_long"
    got = b"".join(base64.b64decode(e["audio"]) for e in events)
    assert got == reference.process(long)
    assert state.audio_seconds[TO_UPSTREAM] == pytest.approx(len(got) / 48000, abs=1e-12)


@pytest.mark.parametrize("quality", ["hq", "vhq"])
def test_each_quality_is_the_one_configured(quality: str) -> None:
    state = make_state(output_rate=48000, resampler_quality=quality)
    reference = make_resampler(24000, 48000, quality)
    chunk = pcm(4800, 24000, freq=5000.0)
    delta = {"type": "response.output_audio.delta", "response_id": "r", "delta": b64(chunk)}
    [shown] = sent(state.from_upstream_text(json.dumps(delta)).to_client)
    assert base64.b64decode(shown["delta"]) == reference.process(chunk)


def test_pcm_durations_need_a_positive_rate() -> None:
    assert pcm16_duration_seconds(96000, 48000) == 1.0
    assert pcm16_duration_seconds(10, 1) == 5.0
    with pytest.raises(ValueError, match="must be positive, got 0"):
        pcm16_duration_seconds(10, 0)


# -- audio the relay will not take at once -----------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "binary"), [(24000, False), (48000, False), (48000, True)])
def test_a_frame_of_exactly_the_audio_ahead_limit_passes_and_a_longer_one_is_refused(
    rate: int, binary: bool
) -> None:
    state = make_state(input_rate=rate, bounds=SessionBounds(audio_ahead_seconds=0.1))

    def send(samples: int) -> Any:
        data = pcm(samples, rate)
        return (
            state.from_client_bytes(data)
            if binary
            else state.from_client_text(append(data, event_id="evt_f"))
        )

    at_limit = send(rate // 10)
    assert at_limit.to_client == [] and at_limit.to_upstream
    error = one_error(send(rate // 10 + 1))
    assert error["code"] == "relay_limit_exceeded" and error["param"] == "audio"
    assert error["event_id"] == (None if binary else "evt_f")
    assert "RELAY_AUDIO_AHEAD_SECONDS" in error["message"]


@pytest.mark.parametrize("event_id", [None, "evt_empty"])
def test_an_empty_append_at_another_rate_is_passed_on_for_the_upstream_to_judge(event_id: str | None) -> None:
    state = make_state(input_rate=48000)
    extra = {} if event_id is None else {"event_id": event_id}
    [event] = sent(state.from_client_text(append(b"", **extra)).to_upstream)
    assert event == {"type": "input_audio_buffer.append", "audio": "", **extra}


# -- the upstream's refusals and faults --------------------------------------------------------------------------


def test_refused_defaults_show_the_session_as_it_is_and_say_why() -> None:
    state = make_state(session_defaults={"instructions": "Be brief."})
    state.opening_events()
    assert (
        state.from_upstream_text('{"type": "session.created", "session": {"instructions": ""}}').to_client
        == []
    )
    refused = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "code": "bad",
            "message": "No.",
            "event_id": "relay_session_defaults",
        },
    }
    created, error = sent(state.from_upstream_text(json.dumps(refused)).to_client)
    assert created["type"] == "session.created" and created["session"] == {"instructions": ""}
    assert error["error"]["message"] == "The relay's session defaults were refused upstream: No."
    # The session goes on as the client's own: its updates pass as they are.
    later = '{"type": "session.updated", "session": {"instructions": ""}}'
    assert sent(state.from_upstream_text(later).to_client)[0]["type"] == "session.updated"
    other = json.dumps({"type": "error", "error": {"code": "other", "message": "x", "event_id": "evt_1"}})
    assert state.from_upstream_text(other).to_client == [other]


def test_an_upstream_error_for_another_event_does_not_release_the_held_session() -> None:
    state = make_state(session_defaults={"instructions": "Be brief."})
    state.from_upstream_text('{"type": "session.created", "session": {}}')
    other = json.dumps({"type": "error", "error": {"code": "other", "message": "x", "event_id": "evt_1"}})
    # The error waits too: the client's first server event must be session.created.
    assert state.from_upstream_text(other).to_client == []
    created, error = sent(state.from_upstream_text('{"type": "session.updated", "session": {}}').to_client)
    assert created["type"] == "session.created"
    assert error == json.loads(other)


def test_each_kind_of_upstream_fault_is_logged_once() -> None:
    state = make_state()
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            state.from_upstream_text("<html>")
            state.from_upstream_text('{"type": "rate_limits.updated", "rate_limits": 5}')
    faults = [(e["event_type"], e["problem"][:20]) for e in logs if e["event"] == "upstream_event_malformed"]
    assert [kind for kind, _ in faults] == ["unparsable", "rate_limits.updated"]
    assert all(problem for _, problem in faults)


# -- transcription usage -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "tokens"),
    [
        ({"type": "duration", "seconds": 2.05}, 21),  # whisper-1: billed by audio duration
        ({"type": "tokens", "total_tokens": 7}, 7),
        ({"type": "tokens", "total_tokens": 1}, 1),
        ({"type": "tokens", "total_tokens": 7, "seconds": 30}, 7),
        ({"type": "duration"}, 0),
        (None, 0),
    ],
)
def test_transcription_is_charged_by_its_own_usage(usage: Any, tokens: int) -> None:
    charged: list[int] = []

    def on_usage(spent: int) -> None:
        charged.append(spent)

    metrics = RelayMetrics(identity_label=True)
    state = make_state(metrics=metrics, on_usage=on_usage)
    state.identity_metrics = metrics.for_identity("token:abc")
    event = {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": "i",
        "transcript": "hi",
    }
    text = json.dumps(event if usage is None else {**event, "usage": usage})
    assert state.from_upstream_text(text).to_client == [text]
    assert charged == ([tokens] if tokens else []) and state.tokens_used == tokens
    assert exported(metrics, "relay_identity_tokens_total", identity="token:abc") == tokens


def all_of(actions: Any) -> list[Any]:
    """`actions` and every further step it carries (a large frame is worked through a slice at a time)."""
    steps = [actions]
    for more in actions.more or ():
        steps.append(more)
    return steps


def test_a_very_long_append_is_decoded_in_slices_and_keeps_its_event_id() -> None:
    state = make_state(input_rate=48000)
    long = pcm(48000 * 4, 48000, freq=250.0)  # 4 s: more base64 than one decoding slice
    steps = all_of(state.from_client_text(append(long, event_id="evt_big")))
    events = [e for step in steps for e in sent(step.to_upstream)]
    assert events[0]["event_id"] == "evt_big" and all(
        e["type"] == "input_audio_buffer.append" for e in events
    )
    assert b"".join(base64.b64decode(e["audio"]) for e in events) == make_resampler(48000, 24000).process(
        long
    )


def test_a_bad_tail_refuses_the_whole_long_append() -> None:
    state = make_state(input_rate=48000)
    audio = b64(pcm(48000 * 4, 48000))
    text = json.dumps(
        {"type": "input_audio_buffer.append", "audio": audio[:-8] + "!!!!!!!!", "event_id": "evt_t"}
    )
    steps = all_of(state.from_client_text(text))
    assert [e for step in steps for e in step.to_upstream] == []
    [error] = [e for step in steps for e in sent(step.to_client)]
    assert error["error"]["code"] == "relay_bad_audio" and error["error"]["event_id"] == "evt_t"


# -- the budget charged as audio flows ---------------------------------------------------------------------------


def test_audio_is_charged_as_it_flows_and_settled_by_the_real_usage() -> None:
    charged: list[int] = []

    def on_usage(tokens: int) -> None:
        charged.append(tokens)

    state = make_state(on_usage=on_usage)
    all_of(state.from_client_bytes(b"\0\0" * 24000))  # 1 s of the user's audio: about 10 tokens
    half_second = json.dumps(
        {"type": "response.output_audio.delta", "response_id": "r", "delta": b64(b"\0\0" * 12000)}
    )
    state.from_upstream_text(half_second)  # 0.5 s of the assistant's audio each: about 10 tokens
    state.from_upstream_text(half_second)
    assert charged == [5, 5, 10, 10] and state.tokens_used == 30  # the user's second came in two slices
    state.from_upstream_text(done_with({"total_tokens": 45}))
    assert charged[-1] == 15 and state.tokens_used == 45  # the real usage replaces the estimate
    # A response whose usage is missing still settles what was estimated for it, at no extra cost.
    state.from_upstream_text(half_second)
    state.from_upstream_text(done_with("lost"))
    assert charged[-2:] == [10, 0] and state.tokens_used == 55
    # And with nothing estimated, a response without usage asks nothing of the budget.
    state.from_upstream_text(done_with(None))
    assert len(charged) == 7
    # Estimates are charged in whole tokens, each as soon as it is whole; a usage without a total settles them.
    tick = json.dumps(
        {"type": "response.output_audio.delta", "response_id": "r", "delta": b64(b"\0\0" * 600)}
    )
    state.from_upstream_text(tick)  # 25 ms: half a token, nothing to charge yet
    assert len(charged) == 7
    state.from_upstream_text(tick)
    assert charged[-1] == 1
    state.from_upstream_text(done_with({"input_tokens": 3}))
    assert charged[-1] == 0 and len(charged) == 9


def test_a_response_without_an_id_is_tracked_and_finished_like_any_other() -> None:
    state = make_state()
    state.from_upstream_text('{"type": "response.created", "response": {}}')
    assert state.finish() == ['{"type":"response.cancel","event_id":"relay_client_left"}']
    state.from_upstream_text('{"type": "response.done", "response": {}}')
    assert state.finish() == []


def test_rate_limits_with_odd_entries_still_reach_the_client() -> None:
    text = json.dumps({"type": "rate_limits.updated", "rate_limits": ["junk", {"name": "tokens"}, 5]})
    assert make_state().from_upstream_text(text).to_client == [text]
