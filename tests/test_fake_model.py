"""Unit tests of the simulated model's protocol core and its VAD (no sockets)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from relay.fake.model import FakeOptions, SimulatedModel
from relay.fake.vad import EnergyVad, VadSettings
from tests.protocol_sequences import VOICE_TURN

RATE = 24000
Event = dict[str, Any]
SERVER_EVENT = TypeAdapter(RealtimeServerEvent)


def tone(seconds: float, dbfs: float = -12.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    amplitude = 10 ** (dbfs / 20) * np.sqrt(2)
    return amplitude * np.sin(2 * np.pi * freq * t)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE))


def pcm(signal: np.ndarray, noise_dbfs: float | None = -65.0, seed: int = 1) -> bytes:
    if noise_dbfs is not None:
        rng = np.random.default_rng(seed)
        signal = signal + rng.normal(0, 10 ** (noise_dbfs / 20), len(signal))
    return (np.clip(signal, -1, 1) * 32767).astype("<i2").tobytes()


def append(audio: bytes, event_id: str | None = None) -> Event:
    event: Event = {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()}
    if event_id:
        event["event_id"] = event_id
    return event


def manual_model(**options: Any) -> SimulatedModel:
    model = SimulatedModel(FakeOptions(**options), "gpt-realtime")
    model.handle(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
    )
    return model


def feed(model: SimulatedModel, audio: bytes, chunk_ms: int = 20) -> list[Event]:
    """Append audio in chunks, as a client streaming its microphone would; return all events produced."""
    size = chunk_ms * RATE // 1000 * 2
    out: list[Event] = []
    for offset in range(0, len(audio), size):
        out += model.handle(append(audio[offset : offset + size]))
    return out


def types(events: list[Event]) -> list[str]:
    return [e["type"] for e in events]


def error_of(events: list[Event]) -> dict[str, Any]:
    assert types(events) == ["error"], types(events)
    error: dict[str, Any] = events[0]["error"]
    return error


# ----- session -----


def test_session_created_carries_full_ga_session() -> None:
    model = SimulatedModel(FakeOptions(), "gpt-realtime-2025-08-28")
    [created] = model.opening_events()
    session = created["session"]
    assert created["type"] == "session.created"
    assert created["event_id"].startswith("event_") and len(created["event_id"]) == 27
    assert session["id"].startswith("sess_")
    assert session["object"] == "realtime.session"
    assert session["type"] == "realtime"
    assert session["model"] == "gpt-realtime-2025-08-28"
    assert session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "idle_timeout_ms": None,
        "create_response": True,
        "interrupt_response": True,
    }
    assert session["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "voice": "marin",
        "speed": 1.0,
    }
    for key in (
        "tools",
        "tool_choice",
        "max_output_tokens",
        "tracing",
        "truncation",
        "prompt",
        "include",
        "expires_at",
    ):
        assert key in session
    SERVER_EVENT.validate_python(created)


def test_session_update_requires_type_and_names_client_event() -> None:
    model = SimulatedModel(FakeOptions(), "gpt-realtime")
    error = error_of(
        model.handle({"type": "session.update", "event_id": "evt_1", "session": {"instructions": "x"}})
    )
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "missing_required_parameter"
    assert error["param"] == "session.type"
    assert error["event_id"] == "evt_1"


def test_session_update_deep_merges() -> None:
    model = SimulatedModel(FakeOptions(), "gpt-realtime")
    update = {
        "type": "realtime",
        "instructions": "Réponds en français.",
        "audio": {"input": {"turn_detection": {"silence_duration_ms": 200}}, "output": {"voice": "cedar"}},
    }
    [updated] = model.handle({"type": "session.update", "session": update})
    session = updated["session"]
    assert updated["type"] == "session.updated"
    assert session["instructions"] == "Réponds en français."
    detection = session["audio"]["input"]["turn_detection"]
    assert detection["silence_duration_ms"] == 200
    assert detection["threshold"] == 0.5 and detection["prefix_padding_ms"] == 300
    assert session["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "voice": "cedar",
        "speed": 1.0,
    }
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    SERVER_EVENT.validate_python(updated)


@pytest.mark.parametrize("direction", ["input", "output"])
def test_session_update_refuses_pcm_rate_other_than_24k(direction: str) -> None:
    model = SimulatedModel(FakeOptions(), "gpt-realtime")
    before = model.session
    update = {"type": "realtime", "audio": {direction: {"format": {"type": "audio/pcm", "rate": 16000}}}}
    error = error_of(model.handle({"type": "session.update", "session": update}))
    assert error["code"] == "invalid_value"
    assert error["param"] == f"session.audio.{direction}.format.rate"
    assert model.session == before


def test_session_update_unknown_key_and_model_change() -> None:
    model = SimulatedModel(FakeOptions(), "gpt-realtime")
    error = error_of(
        model.handle({"type": "session.update", "session": {"type": "realtime", "colour": "red"}})
    )
    assert (error["code"], error["param"]) == ("unknown_parameter", "session.colour")
    error = error_of(
        model.handle({"type": "session.update", "session": {"type": "realtime", "model": "other"}})
    )
    assert error["code"] == "invalid_value" and error["param"] == "session.model"
    [ok] = model.handle({"type": "session.update", "session": {"type": "realtime", "model": "gpt-realtime"}})
    assert ok["type"] == "session.updated"


def test_unknown_event_and_malformed_json() -> None:
    model = SimulatedModel(FakeOptions(), "gpt-realtime")
    error = error_of(model.handle({"type": "response.audio.delta", "event_id": "e9"}))
    assert error["code"] == "invalid_value"
    assert error["message"].startswith("Invalid value: 'response.audio.delta'.")
    assert error["event_id"] == "e9"
    error = error_of(model.handle_message("{not json"))
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_json"


# ----- input audio buffer -----


def test_commit_needs_100_ms() -> None:
    model = manual_model()
    model.handle(append(bytes(99 * 48)))
    error = error_of(model.handle({"type": "input_audio_buffer.commit", "event_id": "c1"}))
    assert error["code"] == "input_audio_buffer_commit_empty"
    assert error["event_id"] == "c1"
    model.handle(append(bytes(48)))
    events = model.handle({"type": "input_audio_buffer.commit"})
    assert types(events) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    committed = events[0]
    assert committed["item_id"].startswith("item_")
    assert committed["previous_item_id"] is None
    assert events[1]["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    # A manual commit never starts a response by itself.
    assert model.pop_started_response() is None


def test_append_rejects_bad_base64() -> None:
    model = manual_model()
    error = error_of(model.handle({"type": "input_audio_buffer.append", "audio": "%%%notbase64"}))
    assert (error["code"], error["param"]) == ("invalid_value", "audio")


def test_clear_empties_buffer() -> None:
    model = manual_model()
    model.handle(append(bytes(4800 * 2)))
    assert types(model.handle({"type": "input_audio_buffer.clear"})) == ["input_audio_buffer.cleared"]
    assert (
        error_of(model.handle({"type": "input_audio_buffer.commit"}))["code"]
        == "input_audio_buffer_commit_empty"
    )


# ----- VAD -----

# (start s, duration s, level dBFS, frequency Hz): syllable-sized to sentence-sized bursts.
BURSTS = [(0.437, 0.9, -12.0, 440.0), (2.203, 0.31, -30.0, 180.0), (3.61, 1.77, -20.0, 1000.0)]


def burst_signal(total: float = 6.0) -> np.ndarray:
    signal = silence(total)
    for start, duration, level, freq in BURSTS:
        burst = tone(duration, level, freq)
        begin = round(start * RATE)
        signal[begin : begin + len(burst)] += burst
    return signal


@pytest.mark.parametrize("chunk_ms", [7, 20, 100])
def test_vad_places_speech_boundaries(chunk_ms: int) -> None:
    audio = pcm(burst_signal())
    vad = EnergyVad(VadSettings(silence_duration_ms=500))
    size = chunk_ms * RATE // 1000 * 2 + 2  # odd-sized chunks do not line up with the 10 ms frames
    found = []
    for offset in range(0, len(audio), size):
        found += vad.process(audio[offset : offset + size])
    starts = [e.sample / RATE for e in found if e.kind == "speech_started"]
    stops = [e.sample / RATE for e in found if e.kind == "speech_stopped"]
    assert len(starts) == len(stops) == len(BURSTS)
    for (start, duration, _, _), got_start, got_stop in zip(BURSTS, starts, stops, strict=True):
        assert abs(got_start - start) <= 0.030, (start, got_start)
        assert abs(got_stop - (start + duration)) <= 0.030, (start + duration, got_stop)
    for event in found:
        if event.kind == "speech_stopped":
            # The decision comes after silence_duration_ms of quiet, not before.
            assert event.detected_at - event.sample >= 0.5 * RATE


def test_vad_threshold_and_hysteresis() -> None:
    quiet = pcm(np.concatenate([silence(0.3), tone(0.5, -50.0), silence(0.8)]))
    assert EnergyVad(VadSettings(threshold=0.5)).process(quiet) == []
    assert [e.kind for e in EnergyVad(VadSettings(threshold=0.2)).process(quiet)] == [
        "speech_started",
        "speech_stopped",
    ]
    # A voice that fades a little below the onset level (but stays above the lower release level) is one turn.
    fading = pcm(np.concatenate([silence(0.3), tone(0.4, -30.0), tone(1.0, -43.0), silence(0.8)]))
    events = EnergyVad(VadSettings(threshold=0.5)).process(fading)
    assert [e.kind for e in events] == ["speech_started", "speech_stopped"]
    assert abs(events[1].sample / RATE - 1.7) <= 0.03


def test_vad_turn_event_order_and_timeline() -> None:
    model = SimulatedModel(FakeOptions(), "gpt-realtime")
    audio = pcm(np.concatenate([silence(0.8), tone(1.2), silence(0.9)]))
    events = feed(model, audio)
    stream = model.pop_started_response()
    assert stream is not None
    events += stream.drain()
    collapsed = [t for t in types(events) if not t.endswith(".delta")]
    assert collapsed == VOICE_TURN
    first_delta = types(events).index("response.content_part.added") + 1
    last_delta = types(events).index("response.output_audio.done")
    deltas = types(events)[first_delta:last_delta]
    assert set(deltas) == {"response.output_audio.delta", "response.output_audio_transcript.delta"}
    assert deltas[:2] == ["response.output_audio_transcript.delta", "response.output_audio.delta"]
    started, stopped, committed = events[0], events[1], events[2]
    # As documented: the start includes the 300 ms prefix padding, the end the 500 ms of silence waited for.
    assert abs(started["audio_start_ms"] - (800 - 300)) <= 20
    assert abs(stopped["audio_end_ms"] - (2000 + 500)) <= 20
    assert started["item_id"] == stopped["item_id"] == committed["item_id"]
    for event in events:
        SERVER_EVENT.validate_python(event)


def test_voice_turn_reply_plays_the_speech_back() -> None:
    model = SimulatedModel(FakeOptions(), "gpt-realtime")
    speech = tone(1.0, -15.0, 300.0)
    feed(model, pcm(np.concatenate([silence(0.5), speech, silence(0.8)]), noise_dbfs=None))
    stream = model.pop_started_response()
    assert stream is not None
    events = stream.drain()
    played = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    reply = np.frombuffer(played, dtype="<i2").astype(np.float64) / 32767
    # Speech plus a little padding, and it is the same waveform the user sent.
    assert 1.0 <= len(reply) / RATE <= 1.2
    reply_onset = int(np.flatnonzero(np.abs(reply) > 0.05)[0])
    speech_onset = int(np.flatnonzero(np.abs(speech) > 0.05)[0])
    np.testing.assert_allclose(
        reply[reply_onset : reply_onset + 4800], speech[speech_onset : speech_onset + 4800], atol=1e-4
    )
    [transcript] = [e["transcript"] for e in events if e["type"] == "response.output_audio_transcript.done"]
    assert transcript == "You spoke for 1.0 seconds; here it is back."
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
    assert deltas == transcript
    done = events[types(events).index("response.done")]["response"]
    assert done["status"] == "completed"
    assert done["usage"]["output_token_details"]["audio_tokens"] > 0
    assert done["usage"]["total_tokens"] == done["usage"]["input_tokens"] + done["usage"]["output_tokens"]


def test_transcription_events_when_enabled() -> None:
    model = SimulatedModel(FakeOptions(), "gpt-realtime")
    model.handle(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}},
            },
        }
    )
    events = feed(model, pcm(np.concatenate([silence(0.3), tone(1.4), silence(0.7)])))
    # Asynchronous: nothing of the transcript comes with the commit; it is a paced stream of its own.
    assert not [t for t in types(events) if "transcription" in t]
    [transcription] = model.pop_background()
    events += transcription.drain()
    kinds = types(events)
    deltas = [e["delta"] for e in events if e["type"] == "conversation.item.input_audio_transcription.delta"]
    assert len(deltas) > 1  # incremental
    delta = events[kinds.index("conversation.item.input_audio_transcription.delta")]
    completed = events[kinds.index("conversation.item.input_audio_transcription.completed")]
    item_id = events[kinds.index("input_audio_buffer.committed")]["item_id"]
    assert delta["item_id"] == completed["item_id"] == item_id
    assert completed["content_index"] == 0
    assert completed["transcript"] == "(simulated transcript: 1.4 s of speech)" == "".join(deltas)
    assert completed["usage"]["type"] == "tokens"
    SERVER_EVENT.validate_python(completed)


# ----- responses -----


def text_turn(model: SimulatedModel, text: str) -> None:
    model.handle(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
        }
    )


def test_response_create_while_active_and_cancel() -> None:
    model = manual_model()
    text_turn(model, "hello there")
    created, limits = model.handle({"type": "response.create"})
    assert limits["type"] == "rate_limits.updated"  # at the start of the response, as the SDK documents
    assert created["response"]["id"].startswith("resp_")
    assert created["response"]["conversation_id"].startswith("conv_")
    stream = model.pop_started_response()
    assert stream is not None
    error = error_of(model.handle({"type": "response.create", "event_id": "r2"}))
    assert error["code"] == "conversation_already_has_active_response"
    assert error["event_id"] == "r2"
    for _ in range(4):  # item added, part added, first words and audio
        stream.emit()
    events = model.handle({"type": "response.cancel"})
    done = events[types(events).index("response.done")]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert done["output"][0]["status"] == "incomplete"
    assert stream.next_delay() is None and stream.emit() == []
    error = error_of(model.handle({"type": "response.cancel"}))
    assert error["code"] == "response_cancel_not_active"


def test_barge_in_cancels_with_turn_detected() -> None:
    model = SimulatedModel(FakeOptions(), "gpt-realtime")
    feed(model, pcm(np.concatenate([silence(0.3), tone(1.0), silence(0.6)])))
    stream = model.pop_started_response()
    assert stream is not None
    for _ in range(5):
        stream.emit()
    played = stream.audio_sent_ms
    assert played > 0
    events = feed(model, pcm(np.concatenate([silence(0.2), tone(0.3)]), seed=2))
    kinds = types(events)
    assert kinds[0] == "input_audio_buffer.speech_started"
    done = events[kinds.index("response.done")]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "turn_detected"
    assert model.active_response is None
    # The assistant item keeps exactly the audio that went out, which bounds a truncate.
    item_id = done["output"][0]["id"]
    error = error_of(
        model.handle(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": int(played) + 1,
            }
        )
    )
    assert (error["code"], error["param"]) == ("invalid_value", "audio_end_ms")
    [truncated] = model.handle(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": int(played),
        }
    )
    assert truncated == {
        **truncated,
        "type": "conversation.item.truncated",
        "item_id": item_id,
        "audio_end_ms": int(played),
    }


def test_truncate_unknown_item() -> None:
    model = manual_model()
    error = error_of(
        model.handle(
            {
                "type": "conversation.item.truncate",
                "item_id": "item_nope",
                "content_index": 0,
                "audio_end_ms": 0,
            }
        )
    )
    assert error["code"] == "invalid_value"


def test_text_modality_and_ids() -> None:
    model = manual_model()
    text_turn(model, "bonjour")
    model.handle({"type": "response.create", "response": {"output_modalities": ["text"]}})
    stream = model.pop_started_response()
    assert stream is not None
    events = stream.drain()
    kinds = types(events)
    assert "response.output_audio.delta" not in kinds
    assert (
        "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        == "You said: bonjour"
    )
    item = events[kinds.index("response.output_item.done")]["item"]
    assert item["id"].startswith("item_") and item["content"] == [
        {"type": "output_text", "text": "You said: bonjour"}
    ]
    for event in events:
        assert event["event_id"].startswith("event_")
        SERVER_EVENT.validate_python(event)


def test_function_call_when_tool_named() -> None:
    model = manual_model()
    tool = {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    model.handle({"type": "session.update", "session": {"type": "realtime", "tools": [tool]}})
    text_turn(model, "please get weather for Paris")
    model.handle({"type": "response.create"})
    stream = model.pop_started_response()
    assert stream is not None
    events = stream.drain()
    kinds = types(events)
    assert "response.content_part.added" not in kinds
    done = events[kinds.index("response.function_call_arguments.done")]
    assert done["name"] == "get_weather" and done["arguments"] == '{"city":"example"}'
    model.handle(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": done["call_id"], "output": "sunny"},
        }
    )
    model.handle({"type": "response.create"})
    stream = model.pop_started_response()
    assert stream is not None
    transcript = next(e for e in stream.drain() if e["type"] == "response.output_audio_transcript.done")[
        "transcript"
    ]
    assert transcript == "The function returned: sunny"


def test_max_output_tokens_makes_incomplete() -> None:
    model = manual_model()
    text_turn(model, "tell me a long story please")
    model.handle({"type": "response.create", "response": {"max_output_tokens": 20}})
    stream = model.pop_started_response()
    assert stream is not None
    done = next(e for e in stream.drain() if e["type"] == "response.done")["response"]
    assert done["status"] == "incomplete"
    assert done["status_details"]["reason"] == "max_output_tokens"
    assert done["usage"]["output_tokens"] <= 20


def test_item_create_retrieve_delete() -> None:
    model = manual_model()
    audio = pcm(tone(0.25), noise_dbfs=None)
    first = model.handle(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "audio": base64.b64encode(audio).decode()}],
            },
        }
    )
    assert types(first) == ["conversation.item.added", "conversation.item.done"]
    assert "audio" not in first[0]["item"]["content"][0]
    first_id = first[0]["item"]["id"]
    second = model.handle(
        {
            "type": "conversation.item.create",
            "previous_item_id": "root",
            "item": {
                "type": "message",
                "role": "system",
                "content": [{"type": "input_text", "text": "be brief"}],
            },
        }
    )
    assert second[0]["previous_item_id"] is None
    third = model.handle(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        }
    )
    assert third[0]["previous_item_id"] == first_id
    [retrieved] = model.handle({"type": "conversation.item.retrieve", "item_id": first_id})
    assert base64.b64decode(retrieved["item"]["content"][0]["audio"]) == audio
    assert types(model.handle({"type": "conversation.item.delete", "item_id": first_id})) == [
        "conversation.item.deleted"
    ]
    assert (
        error_of(model.handle({"type": "conversation.item.retrieve", "item_id": first_id}))["code"]
        == "invalid_value"
    )
    bad = model.handle(
        {
            "type": "conversation.item.create",
            "previous_item_id": "item_missing",
            "item": {"type": "message", "role": "user", "content": []},
        }
    )
    assert error_of(bad)["param"] == "previous_item_id"


# ----- formats, timeouts and edge cases -----


@pytest.mark.parametrize("codec", ["audio/pcmu", "audio/pcma"])
def test_g711_session_detects_speech_and_plays_it_back_bit_exact(codec: str) -> None:
    from relay.fake import g711

    model = SimulatedModel(FakeOptions(), "gpt-realtime")
    fmt = {"type": codec}
    model.handle(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"format": fmt}, "output": {"format": fmt}}},
        }
    )
    t = np.arange(8000 * 3) / 8000
    envelope = ((t >= 0.5) & (t < 1.5)).astype(float)
    # A non-periodic voice (a glide) so that the reply can be located in the input unambiguously.
    glide = np.sin(2 * np.pi * (200 * t + 150 * t * t))
    linear = (0.2 * glide * envelope * 32767).astype("<i2").tobytes()
    encoded = g711.from_pcm24k(np.repeat(np.frombuffer(linear, "<i2"), 3).astype("<i2").tobytes(), codec)
    assert len(encoded) == 8000 * 3
    events: list[Event] = []
    for offset in range(0, len(encoded), 160):  # 20 ms of 8 kHz G.711
        events += model.handle(append(encoded[offset : offset + 160]))
    started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
    stopped = next(e for e in events if e["type"] == "input_audio_buffer.speech_stopped")
    assert abs(started["audio_start_ms"] - 200) <= 20 and abs(stopped["audio_end_ms"] - 2000) <= 20
    stream = model.pop_started_response()
    assert stream is not None
    played = b"".join(
        base64.b64decode(e["delta"]) for e in stream.drain() if e["type"] == "response.output_audio.delta"
    )
    # The reply is the caller's own G.711 bytes: 1 s of speech plus 50 ms either side.
    assert abs(len(played) - 8800) <= 16
    offset = encoded.find(played[400:800]) - 400
    assert offset >= 0 and encoded[offset : offset + len(played)] == played


def test_idle_timeout_triggers_a_response() -> None:
    model = SimulatedModel(FakeOptions(), "gpt-realtime")
    model.handle(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"idle_timeout_ms": 1000}}},
            },
        }
    )
    feed(model, pcm(np.concatenate([silence(0.2), tone(0.5), silence(0.6)])))
    stream = model.pop_started_response()
    assert stream is not None
    stream.drain()
    reply_ms = stream.audio_sent_ms
    # Silence for the length of the reply (it is playing) plus just under the idle timeout: nothing yet.
    assert feed(model, pcm(silence((reply_ms + 900) / 1000))) == []
    events = feed(model, pcm(silence(0.2), seed=3))
    kinds = types(events)
    assert kinds[:4] == [
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert kinds[-2:] == ["response.created", "rate_limits.updated"]
    SERVER_EVENT.validate_python(events[0])


def test_semantic_vad_and_no_turn_detection() -> None:
    model = SimulatedModel(FakeOptions(), "gpt-realtime")
    [updated] = model.handle(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}},
            },
        }
    )
    assert updated["session"]["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "high",
        "create_response": True,
        "interrupt_response": True,
    }
    events = feed(model, pcm(np.concatenate([silence(0.2), tone(0.5), silence(0.5)])))
    assert "input_audio_buffer.speech_stopped" in types(events)
    model = manual_model()
    assert feed(model, pcm(np.concatenate([silence(0.2), tone(0.5), silence(0.8)]))) == []


def test_out_of_band_response_stays_out_of_the_conversation() -> None:
    model = manual_model()
    text_turn(model, "summarise")
    before = len(model.conversation)
    model.handle(
        {
            "type": "response.create",
            "response": {
                "conversation": "none",
                "metadata": {"topic": "summary"},
                "output_modalities": ["text"],
            },
        }
    )
    stream = model.pop_started_response()
    assert stream is not None
    events = stream.drain()
    assert "conversation.item.added" not in types(events)
    done = next(e for e in events if e["type"] == "response.done")["response"]
    assert done["conversation_id"] is None and done["metadata"] == {"topic": "summary"}
    assert len(model.conversation) == before


def test_binary_frame_oversized_append_and_webrtc_only_event() -> None:
    model = manual_model()
    assert error_of(model.handle_message(b"\x00\x01"))["type"] == "invalid_request_error"
    oversized = base64.b64encode(bytes(15 * 1024 * 1024 + 2)).decode()
    error = error_of(model.handle({"type": "input_audio_buffer.append", "audio": oversized}))
    assert (error["code"], error["param"]) == ("invalid_value", "audio")
    assert model.buffered_ms == 0
    assert error_of(model.handle({"type": "output_audio_buffer.clear"}))["code"] == "invalid_value"
    assert (
        error_of(model.handle({"type": "input_audio_buffer.append"}))["code"] == "missing_required_parameter"
    )


def spoken(text: str, tmp_path: Any) -> np.ndarray:
    """Real synthetic speech (espeak-ng), at 24 kHz, as floats."""
    import subprocess
    import wave

    import soxr

    path = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, timeout=30)
    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64) / 32768
    resampled: np.ndarray = soxr.resample(samples, rate, RATE)
    assert np.sqrt(np.mean(resampled**2)) > 0.01  # the synthesiser really produced sound
    return resampled


def test_vad_on_real_speech_honours_silence_duration(tmp_path: Any) -> None:
    voice = spoken("Hello, this is a test of the simulated model. It should hear one turn.", tmp_path)
    audio = pcm(np.concatenate([silence(0.5), voice, silence(1.0)]), noise_dbfs=-60.0)
    # Truth from the signal itself: the first and last 10 ms frames louder than -40 dBFS.
    frames = np.frombuffer(audio, dtype="<i2").astype(np.float64)[: len(audio) // 480 * 240].reshape(-1, 240)
    loud = np.flatnonzero(10 * np.log10(np.mean((frames / 32768) ** 2, axis=1) + 1e-20) >= -40.0)
    first_ms, last_ms = loud[0] * 10, (loud[-1] + 1) * 10

    model = SimulatedModel(FakeOptions(), "gpt-realtime")
    events = feed(model, audio)
    starts = [e["audio_start_ms"] for e in events if e["type"] == "input_audio_buffer.speech_started"]
    stops = [e["audio_end_ms"] for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
    assert len(starts) == len(stops) == 1  # pauses between words and sentences stay inside the turn
    # Prefix padding (300 ms) before the onset and the silence waited for (500 ms) after the end are included.
    assert abs(starts[0] - max(0, first_ms - 300)) <= 30 and abs(stops[0] - (last_ms + 500)) <= 30

    eager = SimulatedModel(FakeOptions(), "gpt-realtime")
    update = {"type": "realtime", "audio": {"input": {"turn_detection": {"silence_duration_ms": 200}}}}
    eager.handle({"type": "session.update", "session": update})
    events = feed(eager, audio)
    # The pause after "model." is longer than 200 ms: with that setting the sentence boundary ends a turn.
    assert types(events).count("input_audio_buffer.speech_stopped") >= 2
