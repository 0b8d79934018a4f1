"""The session's decisions, without sockets: what goes where for each frame."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest

from relay.audio import make_resampler
from relay.bounds import SessionBounds
from relay.metrics import RelayMetrics
from relay.policy import SessionPolicy
from relay.session_state import DEFAULTS_EVENT_ID, SessionState

CREATED = json.dumps({"type": "session.created", "event_id": "event_0", "session": {"type": "realtime"}})


def make_state(*, created: bool = True, **kwargs: Any) -> SessionState:
    """A session state; with `created`, past the upstream's session.created (which the client sees first)."""
    options: dict[str, Any] = {
        "metrics": RelayMetrics(),
        "policy": SessionPolicy(),
        "resampler_quality": "low-latency",
        "bounds": SessionBounds(max_message_bytes=1 << 20),
    }
    options.update(kwargs)
    state = SessionState(**options)
    if created and "session_defaults" not in kwargs:
        state.from_upstream_text(CREATED)
    return state


def sent(texts: list[str]) -> list[dict[str, Any]]:
    return [json.loads(t) for t in texts]


def pcm(samples: int, rate: int, freq: float = 440.0) -> bytes:
    t = np.arange(samples) / rate
    return (np.sin(2 * np.pi * freq * t) * 8000).astype("<i2").tobytes()


def test_text_events_pass_through_unchanged() -> None:
    state = make_state()
    text = '{"type":"response.create","event_id":"e1","response":{"instructions":"hi"}}'
    actions = state.from_client_text(text)
    assert actions.to_upstream == [text]
    assert actions.to_client == []


def test_malformed_json_gets_error_and_nothing_goes_upstream() -> None:
    state = make_state()
    actions = state.from_client_text("{not json")
    assert actions.to_upstream == []
    [error] = sent(actions.to_client)
    assert error["type"] == "error"
    assert error["error"]["code"] == "relay_bad_event"
    assert "JSON" in error["error"]["message"]
    # The session carries on: the next event is forwarded.
    assert state.from_client_text('{"type":"input_audio_buffer.clear"}').to_upstream


def test_unknown_event_type_is_refused_as_openai_refuses_it() -> None:
    state = make_state()
    actions = state.from_client_text('{"type":"session.hack","event_id":"x1"}')
    assert actions.to_upstream == []
    [error] = sent(actions.to_client)
    assert (error["error"]["type"], error["error"]["code"], error["error"]["param"]) == (
        "invalid_request_error",
        "invalid_value",
        "type",
    )
    assert error["error"]["event_id"] == "x1"


def test_oversized_message_is_refused_and_named() -> None:
    state = make_state(bounds=SessionBounds(max_message_bytes=2048))
    actions = state.from_client_text(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 4000}))
    assert actions.to_upstream == []
    [error] = sent(actions.to_client)
    assert error["error"]["code"] == "relay_limit_exceeded"
    assert "RELAY_MAX_MESSAGE_BYTES" in error["error"]["message"]


def test_binary_frame_at_24k_becomes_append_with_same_bytes() -> None:
    state = make_state()
    data = pcm(480, 24000)
    [append] = sent(state.from_client_bytes(data).to_upstream)
    assert append["type"] == "input_audio_buffer.append"
    assert base64.b64decode(append["audio"]) == data


def test_odd_binary_frame_is_bad_audio_and_session_continues() -> None:
    state = make_state()
    actions = state.from_client_bytes(b"\x01\x02\x03")
    assert actions.to_upstream == []
    assert sent(actions.to_client)[0]["error"]["code"] == "relay_bad_audio"
    assert state.from_client_bytes(pcm(480, 24000)).to_upstream


def test_declared_rate_is_resampled_and_rewritten_to_24k() -> None:
    state = make_state()
    update = {
        "type": "session.update",
        "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 48000}}}},
    }
    [forwarded] = sent(state.from_client_text(json.dumps(update)).to_upstream)
    assert forwarded["session"]["audio"]["input"]["format"]["rate"] == 24000
    assert state.input_rate == 48000
    out = b"".join(
        base64.b64decode(e["audio"]) for e in sent(state.from_client_bytes(pcm(960, 48000)).to_upstream)
    )
    out += b"".join(base64.b64decode(e["audio"]) for e in sent(state.finish()))
    assert abs(len(out) // 2 - 480) <= 1


def test_commit_flushes_what_the_resampler_holds_before_the_commit() -> None:
    state = make_state(input_rate=44100)
    total = b"".join(
        base64.b64decode(e["audio"]) for e in sent(state.from_client_bytes(pcm(882, 44100)).to_upstream)
    )
    events = sent(state.from_client_text('{"type":"input_audio_buffer.commit"}').to_upstream)
    assert events[-1]["type"] == "input_audio_buffer.commit"
    total += b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    # 882 samples at 44.1 kHz are exactly 480 at 24 kHz: nothing is left behind the commit.
    assert abs(len(total) // 2 - 480) <= 1


@pytest.mark.parametrize("rate", [7999, 192001, "48000", 48000.0, True])
def test_bad_declared_rate_gets_bad_audio_naming_the_range(rate: Any) -> None:
    state = make_state()
    update = {
        "type": "session.update",
        "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": rate}}}},
    }
    actions = state.from_client_text(json.dumps(update))
    assert actions.to_upstream == []
    [error] = sent(actions.to_client)
    assert error["error"]["code"] == "relay_bad_audio"
    assert "8000" in error["error"]["message"] and "192000" in error["error"]["message"]
    assert state.input_rate == 24000


def test_client_sees_its_own_rates_in_session_events() -> None:
    state = make_state(created=False, input_rate=44100, output_rate=48000)
    created = {
        "type": "session.created",
        "event_id": "event_1",
        "session": {
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 24000}},
                "output": {"format": {"type": "audio/pcm", "rate": 24000}},
            }
        },
    }
    [shown] = sent(state.from_upstream_text(json.dumps(created)).to_client)
    # The spec's fields stay as the upstream sent them (the SDK types them as 24000); the relay says the rest.
    assert shown["session"]["audio"]["input"]["format"]["rate"] == 24000
    assert shown["session"]["audio"]["output"]["format"]["rate"] == 24000
    assert shown["relay"] == {"input_rate": 44100, "output_rate": 48000}


def test_defaults_reply_becomes_session_created() -> None:
    state = make_state(session_defaults={"instructions": "Be brief."})
    [opening] = sent(state.opening_events())
    assert opening["event_id"] == DEFAULTS_EVENT_ID
    assert opening["session"] == {"type": "realtime", "instructions": "Be brief."}
    created = {"type": "session.created", "event_id": "event_1", "session": {"instructions": ""}}
    assert state.from_upstream_text(json.dumps(created)).to_client == []
    updated = {"type": "session.updated", "event_id": "event_2", "session": {"instructions": "Be brief."}}
    [shown] = sent(state.from_upstream_text(json.dumps(updated)).to_client)
    assert shown["type"] == "session.created"
    assert shown["session"]["instructions"] == "Be brief."
    # Later updates are the client's own and pass as session.updated.
    [later] = sent(state.from_upstream_text(json.dumps(updated)).to_client)
    assert later["type"] == "session.updated"


def test_output_audio_is_resampled_per_response_and_flushed_at_done() -> None:
    state = make_state(output_rate=48000)
    chunk = pcm(2400, 24000)
    got = b""
    for _ in range(3):
        delta = {
            "type": "response.output_audio.delta",
            "response_id": "resp_1",
            "item_id": "item_1",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(chunk).decode(),
        }
        [event] = sent(state.from_upstream_text(json.dumps(delta)).to_client)
        got += base64.b64decode(event["delta"])
    done = {
        "type": "response.output_audio.done",
        "response_id": "resp_1",
        "item_id": "item_1",
        "output_index": 0,
        "content_index": 0,
    }
    events = sent(state.from_upstream_text(json.dumps(done)).to_client)
    assert events[-1]["type"] == "response.output_audio.done"
    got += b"".join(base64.b64decode(e["delta"]) for e in events[:-1])
    assert abs(len(got) // 2 - 3 * 4800) <= 1
    reference = make_resampler(24000, 48000, "low-latency")
    expected = reference.process(chunk * 3) + reference.flush()
    assert np.max(np.abs(np.frombuffer(got, "<i2").astype(int) - np.frombuffer(expected, "<i2"))) <= 1


def test_malformed_upstream_frame_gives_protocol_error_and_is_dropped() -> None:
    state = make_state()
    [error] = sent(state.from_upstream_text("<html>oops").to_client)
    assert error["error"]["code"] == "relay_upstream_protocol_error"


def test_first_audio_wait_is_measured_from_speech_stopped() -> None:
    now = [100.0]
    state = make_state(clock=lambda: now[0])
    state.from_upstream_text('{"type":"input_audio_buffer.speech_stopped","item_id":"i","audio_end_ms":900}')
    now[0] += 0.35
    state.from_upstream_text('{"type":"response.output_audio.delta","response_id":"r1","delta":"AAAA"}')
    now[0] += 0.2
    state.from_upstream_text('{"type":"response.output_audio.delta","response_id":"r1","delta":"AAAA"}')
    assert state.first_audio_waits == [pytest.approx(0.35)]


def test_usage_is_counted_and_reported() -> None:
    seen: list[int] = []
    state = make_state(on_usage=seen.append)
    done = {
        "type": "response.done",
        "response": {
            "id": "resp_1",
            "usage": {
                "total_tokens": 30,
                "input_tokens": 20,
                "output_tokens": 10,
                "input_token_details": {"text_tokens": 5, "audio_tokens": 15, "cached_tokens": 0},
                "output_token_details": {"text_tokens": 2, "audio_tokens": 8},
            },
        },
    }
    state.from_upstream_text(json.dumps(done))
    assert seen == [30]
    assert state.tokens_used == 30
