"""Audio recording when the operator turns it on: a spoken turn's user and assistant audio end up as 24 kHz WAV
files beside the saved conversation, and go when it is deleted; with recording off no audio file is written."""

from __future__ import annotations

import asyncio
import base64
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI

from relay.fake.server import FakeRealtimeServer
from tests.conftest import ProxiedRelay
from tests.harness import InProcessRelay
from tests.test_relay_sdk import voiced_turn

Factory = Callable[..., Awaitable[ProxiedRelay[InProcessRelay]]]
TOKEN = "recording-test-token"


async def _one_spoken_turn(relay: ProxiedRelay[InProcessRelay]) -> tuple[str, bytes]:
    client = AsyncOpenAI(api_key=TOKEN, base_url=f"{relay.base_url}/v1")
    audio = voiced_turn()
    reply = bytearray()
    async with client.realtime.connect(model="gpt-realtime") as connection:
        for start in range(0, len(audio), 960):
            await connection.input_audio_buffer.append(
                audio=base64.b64encode(audio[start : start + 960]).decode()
            )
        async with asyncio.timeout(15):
            async for event in connection:
                if event.type == "response.output_audio.delta":
                    reply += base64.b64decode(event.delta)
                if event.type == "response.done":
                    break
    conversations = relay.inner.runtime.conversations
    assert conversations is not None and conversations.writer is not None
    async with asyncio.timeout(10):
        while relay.inner.runtime.sessions:
            await asyncio.sleep(0.05)
    assert await conversations.writer.flush(10)
    if conversations.recordings is not None:
        assert await asyncio.to_thread(conversations.recordings.flush, 10)
    return (await _listed(relay))[0]["id"], bytes(reply)


async def _listed(relay: ProxiedRelay[InProcessRelay]) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(
        base_url=relay.base_url, headers={"authorization": f"Bearer {TOKEN}"}
    ) as http:
        conversations: list[dict[str, Any]] = (await http.get("/api/conversations")).json()["conversations"]
    return conversations


def _frames(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 24000)
        return wav.readframes(wav.getnframes())


async def test_recording_keeps_both_sides_as_wav_and_deleting_removes_them(
    relay_factory: Factory, fake_upstream: FakeRealtimeServer, tmp_path: Path
) -> None:
    relay = await relay_factory(
        history="on", record_audio="true", data_dir=str(tmp_path), access_tokens=TOKEN
    )
    conversation_id, reply = await _one_spoken_turn(relay)
    folder = tmp_path / "recordings" / conversation_id
    assert _frames(folder / "user.wav") == voiced_turn()
    assert _frames(folder / "assistant.wav") == reply and len(reply) > 24000
    async with httpx.AsyncClient(
        base_url=relay.base_url, headers={"authorization": f"Bearer {TOKEN}"}
    ) as http:
        assert (await http.delete(f"/api/conversations/{conversation_id}")).status_code == 204
    assert not folder.exists()


async def test_without_recording_no_audio_is_kept(
    relay_factory: Factory, fake_upstream: FakeRealtimeServer, tmp_path: Path
) -> None:
    relay = await relay_factory(history="on", data_dir=str(tmp_path), access_tokens=TOKEN)
    await _one_spoken_turn(relay)
    assert not (tmp_path / "recordings").exists()
    kept = await asyncio.to_thread(lambda: [p.name for p in tmp_path.iterdir()])
    assert [name for name in kept if not name.startswith("history.sqlite3")] == []
