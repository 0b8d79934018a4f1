"""Client audio at 44.1 kHz reaches the model as the same speech at 24 kHz, through real sockets."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soxr
import websockets

from relay.fake.server import FakeRealtimeServer
from tests.audio_signals import speech_wav
from tests.conftest import ProxiedRelay

MANUAL_TURNS = {
    "type": "session.update",
    "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
}


def best_alignment(
    received: npt.NDArray[Any], reference: npt.NDArray[Any], max_lag: int
) -> tuple[float, int]:
    """Highest normalised correlation of `received` against `reference` over lags within ±max_lag samples."""
    a = received.astype(np.float64)
    b = reference.astype(np.float64)
    best = (-1.0, 0)
    for lag in range(-max_lag, max_lag + 1):
        x = a[max(lag, 0) : len(a) + min(lag, 0)]
        y = b[max(-lag, 0) : len(b) - max(lag, 0)]
        n = min(len(x), len(y))
        x, y = x[:n], y[:n]
        corr = float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))
        if corr > best[0]:
            best = (corr, lag)
    return best


async def wait_for(ws: Any, event_type: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            event = json.loads(await ws.recv())
            assert event["type"] != "error", event
            if event["type"] == event_type:
                return dict(event)


def random_frames(samples: npt.NDArray[np.int16], seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    frames, start = [], 0
    while start < len(samples):
        size = int(rng.integers(1, 4097))
        frames.append(samples[start : start + size].tobytes())
        start += size
    return frames


@pytest.mark.parametrize("carrier", ["binary", "base64"])
async def test_44k1_recording_arrives_as_the_same_speech_at_24k(
    relay: ProxiedRelay, fake_upstream: FakeRealtimeServer, carrier: str
) -> None:
    recording = speech_wav("The quick brown fox jumps over the lazy dog.", 44100)
    assert np.sqrt(np.mean(recording.astype(float) ** 2)) > 100, "espeak-ng produced silence"
    url = relay.ws_url + ("?input_rate=44100" if carrier == "binary" else "")
    async with websockets.connect(url, max_size=None) as ws:
        await wait_for(ws, "session.created")
        await ws.send(json.dumps(MANUAL_TURNS))
        if carrier == "base64":
            await ws.send(
                json.dumps(
                    {
                        "type": "session.update",
                        "session": {
                            "type": "realtime",
                            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 44100}}},
                        },
                    }
                )
            )
            updated = await wait_for(ws, "session.updated")
            while updated["relay"]["input_rate"] != 44100:
                updated = await wait_for(ws, "session.updated")
            # The spec's field keeps the API's rate (the SDK types it as 24000); the relay says the client's.
            assert updated["session"]["audio"]["input"]["format"]["rate"] == 24000
        for frame in random_frames(recording, seed=7):
            if carrier == "binary":
                await ws.send(frame)
            else:
                await ws.send(
                    json.dumps(
                        {"type": "input_audio_buffer.append", "audio": base64.b64encode(frame).decode()}
                    )
                )
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await wait_for(ws, "input_audio_buffer.committed")
    received = np.frombuffer(bytes(fake_upstream.connections[-1].input_audio), dtype="<i2")
    reference = soxr.resample(recording, 44100, 24000, quality="VHQ").astype(np.int16)
    # Nothing held back is lost: the commit flushed the resampler first.
    assert abs(len(received) - round(len(recording) * 24000 / 44100)) <= 1
    correlation, lag = best_alignment(received, reference, max_lag=96)
    assert correlation >= 0.99, correlation
    assert abs(lag) / 24000 <= 0.002, f"offset {lag / 24:.2f} ms"


async def test_rate_change_mid_session_flushes_the_old_rate_first(
    relay: ProxiedRelay, fake_upstream: FakeRealtimeServer
) -> None:
    speech = speech_wav("One two three four.", 48000)
    first = speech[: len(speech) // 2]
    second = soxr.resample(speech[len(speech) // 2 :], 48000, 16000, quality="VHQ").astype(np.int16)
    async with websockets.connect(relay.ws_url + "?input_rate=48000") as ws:
        await wait_for(ws, "session.created")
        await ws.send(json.dumps(MANUAL_TURNS))
        for frame in random_frames(first, seed=1):
            await ws.send(frame)
        await ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "realtime",
                        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
                    },
                }
            )
        )
        for frame in random_frames(second, seed=2):
            await ws.send(frame)
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await wait_for(ws, "input_audio_buffer.committed")
    received = np.frombuffer(bytes(fake_upstream.connections[-1].input_audio), dtype="<i2")
    expected_first = round(len(first) * 24000 / 48000)
    assert abs(len(received) - expected_first - round(len(second) * 24000 / 16000)) <= 2
    reference = soxr.resample(first, 48000, 24000, quality="VHQ").astype(np.int16)
    correlation, lag = best_alignment(received[: expected_first - 48], reference[: expected_first - 48], 96)
    assert correlation >= 0.99 and abs(lag) <= 48


async def test_output_at_the_clients_rate(relay: ProxiedRelay, fake_upstream: FakeRealtimeServer) -> None:
    speech = speech_wav("Hello there.", 24000)
    async with websockets.connect(relay.ws_url + "?output_rate=48000", max_size=None) as ws:
        created = await wait_for(ws, "session.created")
        assert created["relay"] == {"input_rate": 24000, "output_rate": 48000}
        assert created["session"]["audio"]["output"]["format"]["rate"] == 24000
        assert created["session"]["audio"]["input"]["format"]["rate"] == 24000
        await ws.send(json.dumps(MANUAL_TURNS))
        await ws.send(speech.tobytes())
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await ws.send(json.dumps({"type": "response.create"}))
        deltas: list[bytes] = []
        async with asyncio.timeout(10):
            while True:
                event = json.loads(await ws.recv())
                assert event["type"] != "error", event
                if event["type"] == "response.output_audio.delta":
                    deltas.append(base64.b64decode(event["delta"]))
                if event["type"] == "response.done":
                    break
    sent_24k = [e for e in fake_upstream.connections[-1].sent if e["type"] == "response.output_audio.delta"]
    model_samples = sum(len(base64.b64decode(e["delta"])) // 2 for e in sent_24k)
    played = np.frombuffer(b"".join(deltas), dtype="<i2")
    # Every sample the model sent arrives, at twice the rate, including what the resampler held at the end.
    assert abs(len(played) - 2 * model_samples) <= 1
    model_audio = np.frombuffer(b"".join(base64.b64decode(e["delta"]) for e in sent_24k), dtype="<i2")
    reference = soxr.resample(model_audio, 24000, 48000, quality="VHQ").astype(np.int16)
    correlation, lag = best_alignment(played, reference, max_lag=96)
    assert correlation >= 0.99 and abs(lag) <= 96


@pytest.mark.parametrize("query", ["input_rate=7999", "output_rate=192001", "input_rate=fast"])
async def test_bad_rate_on_the_url_is_refused_before_the_upgrade(relay: ProxiedRelay, query: str) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(f"{relay.ws_url}?{query}")
    response = refused.value.response
    assert response.status_code == 400
    error = json.loads(response.body)["error"]
    assert error["code"] == "relay_bad_audio"
    assert "8000" in error["message"] and "192000" in error["message"]
