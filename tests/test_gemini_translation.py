"""The Gemini translation through the relay: audio at 16 kHz as an offline resample would make it, a goAway
bridged by session resumption, and what cannot be mapped refused with Gemini named (the session going on)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import numpy as np
import soxr
from openai import AsyncOpenAI

from tests.conftest import ProxiedRelay
from tests.harness import InProcessRelay
from tests.provider_fixtures import Upstreams
from tests.test_provider_scenarios import CLIENT_TOKEN, collect_until, is_done, send_audio, text_turn, voiced


def gemini(relay: ProxiedRelay[InProcessRelay], **query: str) -> Any:
    client = AsyncOpenAI(api_key=CLIENT_TOKEN, base_url=f"{relay.base_url}/v1")
    return client.realtime.connect(model="", extra_query={"provider": "gemini", **query})


def speech_band_signal(rate: int, seconds: float = 2.0) -> np.ndarray:
    """Speech-band content: a harmonic voice gliding in pitch, plus a 300 Hz → 6 kHz chirp."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = 140 + 60 * t
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    chirp = np.sin(2 * np.pi * (300 * t + (6000 - 300) / (2 * seconds) * t * t))
    return (5000 * voice + 4000 * chirp).astype(np.float64)


def best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 200) -> float:
    """Normalised correlation at the best alignment within ±max_lag samples (streaming filters add delay)."""
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        x, y = (a[lag:], b) if lag >= 0 else (a, b[-lag:])
        n = min(len(x), len(y))
        x, y = x[:n], y[:n]
        best = max(best, float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12)))
    return best


async def test_audio_reaches_gemini_at_16k_matching_an_offline_resample(
    both: ProxiedRelay[InProcessRelay], upstreams: Upstreams
) -> None:
    signal = speech_band_signal(48000)
    pcm = signal.astype("<i2").tobytes()
    async with gemini(both, input_rate="48000") as connection:
        await connection.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        )
        await send_audio(connection, pcm, frame=1920)  # 20 ms at 48 kHz
        await connection.input_audio_buffer.commit()
        await collect_until(connection, lambda e: e.type == "input_audio_buffer.committed")
        record = upstreams.gemini.connections[-1]
        async with asyncio.timeout(5):
            while not any("activityEnd" in (m.get("realtimeInput") or {}) for m in record.received):
                await asyncio.sleep(0.02)
    assert record.input_rates == {16000}
    received = np.frombuffer(bytes(record.input_audio), dtype="<i2").astype(np.float64)
    offline = soxr.resample(signal, 48000, 16000, "VHQ")
    # Everything the client sent arrived (the resampler's tail was flushed at the commit).
    assert abs(len(received) - len(offline)) <= 16
    skip = 800  # 50 ms of filter start-up at either end
    correlation = best_correlation(received[skip:-skip], offline[skip:-skip])
    print(
        f"\n48 kHz client audio at Gemini (16 kHz): correlation {correlation:.5f} with an offline VHQ resample"
    )
    assert correlation >= 0.99, correlation


async def test_go_away_is_bridged_by_resumption(
    both: ProxiedRelay[InProcessRelay], upstreams: Upstreams
) -> None:
    options = upstreams.gemini.options
    # The first connection is short-lived; the server copies its options at each handshake, so the next is not.
    options.connection_seconds, options.go_away_seconds = 2.5, 1.0
    async with gemini(both) as connection:
        await connection.session.update(
            session={
                "type": "realtime",
                "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}},
            }
        )
        await upstreams.gemini.wait_for_connection(1)
        options.connection_seconds = 600.0
        turn = voiced(0.8)
        await send_audio(connection, turn)
        await collect_until(connection, is_done)
        first = upstreams.gemini.connections[0]
        sent_bytes = len(turn)
        # The microphone keeps sending, in real time, across the goAway and the switch to a new connection.
        started = time.monotonic()
        silence = bytes(960)
        while time.monotonic() - started < 3.0:
            await connection.input_audio_buffer.append(audio=base64.b64encode(silence).decode())
            sent_bytes += len(silence)
            await asyncio.sleep(0.02)
        assert len(upstreams.gemini.connections) == 2
        second = upstreams.gemini.connections[1]
        after = await text_turn(connection, "still there?")
    assert not [e for e in after if e.type == "error"]
    transcript = next(e.transcript for e in after if e.type == "response.output_audio_transcript.done")
    assert transcript == "You said: still there?"
    # The new connection resumed the old conversation with a handle the old one gave.
    handles = [
        m["sessionResumptionUpdate"]["newHandle"] for m in first.sent if "sessionResumptionUpdate" in m
    ]
    resumed = second.received[0]["setup"]["sessionResumption"]["handle"]
    assert resumed in handles
    assert second.model is not None and second.model.memory is first.model.memory  # type: ignore[union-attr]
    # The gap the client could notice: from goAway to the first audio on the new connection.
    go_away_at = first.sent_at[first.sent_kinds().index("goAway")]
    first_audio_after = next(
        at for m, at in zip(second.received, second.received_at, strict=True) if "realtimeInput" in m
    )
    gap = first_audio_after - go_away_at
    print(f"\ngoAway → first audio on the resumed connection: {gap * 1000:.0f} ms")
    assert gap < 1.0
    # No audio was lost on the way: what the client sent (24 kHz) arrived (16 kHz) on one connection or the other,
    # but for what the streaming resampler still holds (a few milliseconds).
    arrived_s = (len(first.input_audio) + len(second.input_audio)) / 32000
    assert 0 <= sent_bytes / 48000 - arrived_s < 0.02, (sent_bytes / 48000, arrived_s)


async def test_what_cannot_map_is_refused_naming_gemini(both: ProxiedRelay[InProcessRelay]) -> None:
    async with gemini(both) as connection:
        await connection.session.update(session={"type": "realtime", "instructions": "Be brief."})
        done = await text_turn(connection, "hi")
        item_id = next(e.item.id for e in done if e.type == "response.output_item.done")
        refusals: list[Any] = []

        async def refused() -> Any:
            async with asyncio.timeout(5):
                async for event in connection:
                    if event.type == "error":
                        return event.error
            raise AssertionError("no error")

        await connection.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=100)
        refusals.append(await refused())
        await connection.conversation.item.delete(item_id=item_id)
        refusals.append(await refused())
        await connection.response.create(response={"instructions": "Shout."})
        refusals.append(await refused())
        await connection.session.update(session={"type": "realtime", "audio": {"output": {"voice": "Kore"}}})
        refusals.append(await refused())
        await connection.session.update(
            session={"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}}
        )
        refusals.append(await refused())
        # The session goes on.
        again = await text_turn(connection, "again")
    assert [r.code for r in refusals] == ["relay_provider_unsupported"] * 5
    assert all("Gemini Live" in r.message for r in refusals)
    assert [r.param for r in refusals][2:] == [
        "response.instructions",
        "session.audio.output.voice",
        "session.audio.input.format",
    ]
    assert again[-1].response.status == "completed"


async def test_instructions_changed_mid_session_resume_with_the_new_setup(
    both: ProxiedRelay[InProcessRelay], upstreams: Upstreams
) -> None:
    async with gemini(both) as connection:
        await connection.session.update(session={"type": "realtime", "instructions": "Be brief."})
        await text_turn(connection, "one")
        await connection.session.update(session={"type": "realtime", "instructions": "Be verbose."})
        await collect_until(connection, lambda e: e.type == "session.updated")
        second = await text_turn(connection, "two")
    assert second[-1].response.status == "completed"
    connections = upstreams.gemini.connections
    assert len(connections) == 2
    setup = connections[1].received[0]["setup"]
    assert setup["systemInstruction"] == {"parts": [{"text": "Be verbose."}]}
    assert setup["sessionResumption"]["handle"]


async def test_a_gemini_refusal_reaches_the_client_as_an_error_then_a_close(
    both: ProxiedRelay[InProcessRelay], upstreams: Upstreams
) -> None:
    upstreams.gemini.options.api_key = "another-key"  # the relay's key is now refused, as a close frame
    async with gemini(both) as connection:
        await connection.session.update(session={"type": "realtime"})
        async with asyncio.timeout(10):
            errors = [event async for event in connection if event.type == "error"]
    (error,) = errors
    assert error.error.code == "relay_upstream_protocol_error"
    assert "code 1008: API key not valid" in error.error.message
