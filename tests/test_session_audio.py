"""Audio formats through the relay as the API defines them: G.711 untouched, the API's rate in spec fields, audio
inside items converted, nothing of a cut response after the cut, session.created first."""

from __future__ import annotations

import base64
import json
from typing import Any

import websockets

from relay.fake.server import FakeRealtimeServer
from tests.conftest import ProxiedRelay
from tests.sdk_events import server_event_problems
from tests.test_session_state import make_state, pcm, sent

MULAW = bytes(range(256)) * 40  # 10,240 bytes, odd values included: any resampling would change them


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def session_event(kind: str, fmt: dict[str, Any], **extra: Any) -> str:
    audio = {"input": {"format": fmt}, "output": {"format": fmt}}
    return json.dumps(
        {"type": kind, "event_id": "event_1", "session": {"type": "realtime", "audio": audio}, **extra}
    )


def audio_delta(response_id: str, data: bytes) -> str:
    return json.dumps(
        {
            "type": "response.output_audio.delta",
            "event_id": "event_2",
            "response_id": response_id,
            "item_id": "item_1",
            "output_index": 0,
            "content_index": 0,
            "delta": b64(data),
        }
    )


def test_g711_input_passes_untouched_whatever_the_url_rate_says() -> None:
    state = make_state(input_rate=8000)
    update = session_event("session.update", {"type": "audio/pcmu"})
    assert sent(state.from_client_text(update).to_upstream)[0]["session"]["audio"]["input"]["format"] == {
        "type": "audio/pcmu"
    }
    append = json.dumps({"type": "input_audio_buffer.append", "audio": b64(MULAW)})
    assert state.from_client_text(append).to_upstream == [append]
    [binary] = sent(state.from_client_bytes(MULAW[:161]).to_upstream)  # odd length is fine for 8-bit G.711
    assert base64.b64decode(binary["audio"]) == MULAW[:161]


def test_g711_output_passes_untouched_and_a_per_response_override_too() -> None:
    state = make_state(output_rate=48000)
    state.from_upstream_text(session_event("session.updated", {"type": "audio/pcm", "rate": 24000}))
    created = {
        "type": "response.created",
        "event_id": "event_3",
        "response": {"id": "resp_g711", "audio": {"output": {"format": {"type": "audio/pcmu"}}}},
    }
    state.from_upstream_text(json.dumps(created))
    delta = audio_delta("resp_g711", MULAW)
    assert state.from_upstream_text(delta).to_client == [delta]
    # A PCM response of the same session is still converted to the client's 48 kHz.
    [converted] = sent(state.from_upstream_text(audio_delta("resp_pcm", pcm(2400, 24000))).to_client)
    assert abs(len(base64.b64decode(converted["delta"])) - 2 * 4800) <= 2 * 64


def test_session_events_keep_24000_and_carry_the_relay_field_the_sdk_accepts() -> None:
    state = make_state(created=False, input_rate=48000, output_rate=44100)
    [shown] = sent(
        state.from_upstream_text(
            session_event("session.created", {"type": "audio/pcm", "rate": 24000})
        ).to_client
    )
    assert shown["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert shown["relay"] == {"input_rate": 48000, "output_rate": 44100}
    assert server_event_problems(shown) == []
    # The checker is not a rubber stamp: the old way (the client's rate in the spec field) and a stray key fail.
    old_way = json.loads(json.dumps(shown))
    old_way["session"]["audio"]["input"]["format"]["rate"] = 48000
    assert server_event_problems(old_way)
    stray = {**shown, "relay": {**shown["relay"], "extra": 1}}
    assert server_event_problems(stray)


def test_input_audio_in_an_item_goes_up_at_24k() -> None:
    state = make_state(input_rate=48000)
    clip = pcm(4800, 48000)  # 100 ms
    item = {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": b64(clip)}]}
    [forwarded] = sent(
        state.from_client_text(json.dumps({"type": "conversation.item.create", "item": item})).to_upstream
    )
    up = base64.b64decode(forwarded["item"]["content"][0]["audio"])
    assert abs(len(up) // 2 - 2400) <= 1


def test_retrieved_audio_comes_back_at_the_clients_rates() -> None:
    state = make_state(input_rate=48000, output_rate=16000)
    content = [{"type": "input_audio", "audio": b64(pcm(2400, 24000))}]
    said = [{"type": "output_audio", "audio": b64(pcm(2400, 24000)), "transcript": "hi"}]
    for role, parts, expected in (("user", content, 4800), ("assistant", said, 1600)):
        event = {
            "type": "conversation.item.retrieved",
            "event_id": "event_4",
            "item": {"type": "message", "role": role, "id": "item_1", "content": parts},
        }
        [shown] = sent(state.from_upstream_text(json.dumps(event)).to_client)
        samples = len(base64.b64decode(shown["item"]["content"][0]["audio"])) // 2
        assert abs(samples - expected) <= 1, (role, samples)


def test_nothing_of_a_cut_response_follows_speech_started_or_cancel() -> None:
    for cut in ("speech_started", "cancel"):
        state = make_state(output_rate=48000)
        assert state.from_upstream_text(audio_delta("resp_1", pcm(2400, 24000))).to_client
        if cut == "cancel":
            state.from_client_text('{"type":"response.cancel"}')
        else:
            started = {
                "type": "input_audio_buffer.speech_started",
                "event_id": "e",
                "item_id": "i",
                "audio_start_ms": 0,
            }
            state.from_upstream_text(json.dumps(started))
        after = state.from_upstream_text(audio_delta("resp_1", pcm(240, 24000))).to_client
        done = {
            "type": "response.output_audio.done",
            "event_id": "e",
            "response_id": "resp_1",
            "item_id": "item_1",
        }
        after += state.from_upstream_text(
            json.dumps({**done, "output_index": 0, "content_index": 0})
        ).to_client
        assert [e["type"] for e in sent(after)] == ["response.output_audio.done"], cut


def test_session_created_is_always_the_first_server_event() -> None:
    state = make_state(created=False)
    assert state.from_client_text("{not json").to_client == []  # held until the session exists
    upstream_error = json.dumps(
        {"type": "error", "event_id": "e", "error": {"type": "server_error", "code": None, "message": "x"}}
    )
    assert state.from_upstream_text(upstream_error).to_client == []
    shown = sent(state.from_upstream_text(session_event("session.created", {"type": "audio/pcm"})).to_client)
    assert [e["type"] for e in shown] == ["session.created", "error", "error"]


async def test_g711_reaches_the_model_byte_for_byte_through_the_relay(
    relay: ProxiedRelay, fake_upstream: FakeRealtimeServer
) -> None:
    async with websockets.connect(relay.ws_url + "?input_rate=8000&output_rate=8000", max_size=None) as ws:
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created"
        await ws.send(session_event("session.update", {"type": "audio/pcmu"}))
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64(MULAW)}))
        await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        connection = await fake_upstream.wait_for_connection()
        await connection.wait_for_received("input_audio_buffer.clear")
    appended = [e for e in connection.received if e["type"] == "input_audio_buffer.append"]
    assert b"".join(base64.b64decode(e["audio"]) for e in appended) == MULAW
