"""The examples in examples/ run as written against a relay serving the simulated model."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

from tests.harness import REPO


async def test_text_turn_example_prints_the_reply_and_saves_its_audio(
    start_relay: Any, tmp_path: Path
) -> None:
    relay = await start_relay("--demo", api_key=None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_") and k != "OPENAI_API_KEY"}
    env.update({"RELAY_URL": f"{relay.base_url}/v1", "REPLY_WAV": str(tmp_path / "reply.wav")})
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(REPO / "examples" / "text_turn.py"), "Good morning, relay"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # The simulated model's transcript repeats the typed text, streamed through the SDK's event loop.
    assert "Good morning, relay" in result.stdout
    with wave.open(str(tmp_path / "reply.wav")) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24000, 1, 2)
        seconds = wav.getnframes() / 24000
    assert seconds > 0.5
    assert f"{seconds:.2f} s of audio saved" in result.stderr
