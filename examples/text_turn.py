"""One typed turn through the relay with the official `openai` SDK, reading the reply from the event loop.

Start the relay first (`./run-relay`: without OPENAI_API_KEY it answers with the built-in simulated model), then:

    .tools/bin/uv run python examples/text_turn.py "What is the capital of France?"

(or `uv run …` if uv is on your PATH). The reply's transcript is printed as it streams in, and its audio (24 kHz
PCM16 mono) is saved to reply.wav. RELAY_URL sets where the relay is (default http://127.0.0.1:8080/v1) and
RELAY_TOKEN the relay access token; a relay without access tokens serves this machine and takes any value.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import wave

from openai import AsyncOpenAI


async def text_turn(prompt: str, wav_path: str) -> int:
    """Ask `prompt` as a typed turn; print the transcript, save the audio; 0 on success, 1 on an error event."""
    client = AsyncOpenAI(
        api_key=os.environ.get("RELAY_TOKEN", "no-token-needed-on-this-machine"),
        base_url=os.environ.get("RELAY_URL", "http://127.0.0.1:8080/v1"),
    )
    audio = bytearray()
    async with client.realtime.connect(model="gpt-realtime") as connection:
        await connection.session.update(
            session={"type": "realtime", "instructions": "Answer in one short sentence."}
        )
        await connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]}
        )
        await connection.response.create()
        async for event in connection:
            if event.type == "response.output_audio_transcript.delta":
                print(event.delta, end="", flush=True)
            elif event.type == "response.output_audio.delta":
                audio += base64.b64decode(event.delta)
            elif event.type == "error":
                print(f"\nerror {event.error.code}: {event.error.message}", file=sys.stderr)
                return 1
            elif event.type == "response.done":
                print()
                break
    with wave.open(wav_path, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(24000)
        wav.writeframes(bytes(audio))
    print(f"{len(audio) / 48000:.2f} s of audio saved to {wav_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    question = " ".join(sys.argv[1:]) or "Hello! Who are you?"
    raise SystemExit(asyncio.run(text_turn(question, os.environ.get("REPLY_WAV", "reply.wav"))))
