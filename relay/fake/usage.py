"""Plausible token accounting of the simulated model: usage in `response.done`, and `rate_limits.updated`."""

from __future__ import annotations

import math
from typing import Any

from relay.fake.conversation import StoredItem
from relay.fake.response import Event, event, text_tokens

#: Input audio costs one token per 100 ms (600 per minute).
AUDIO_MS_PER_INPUT_TOKEN = 100
RATE_LIMIT_REQUESTS = 5000
RATE_LIMIT_TOKENS = 400_000


def input_usage(context: list[StoredItem], instructions: str, previous: dict[str, int]) -> dict[str, int]:
    """Input tokens a response reads: instructions plus every item of its context.

    What the `previous` response already read counts as cached, as the prompt cache would serve it.
    """
    text = text_tokens(instructions)
    audio = 0
    for stored in context:
        for index, part in enumerate(stored.item.get("content", [])):
            text += text_tokens(str(part.get("text") or part.get("transcript") or ""))
            audio += math.ceil(stored.audio_ms(index) / AUDIO_MS_PER_INPUT_TOKEN)
        if stored.item.get("type") != "message":
            text += text_tokens(str(stored.item.get("arguments") or stored.item.get("output") or ""))
    return {
        "text_tokens": text,
        "audio_tokens": audio,
        "cached_text_tokens": min(text, previous.get("text_tokens", 0)),
        "cached_audio_tokens": min(audio, previous.get("audio_tokens", 0)),
    }


def transcription_usage(model: str, seconds: float, transcript: str) -> dict[str, Any]:
    """Usage of an input transcription: by duration for whisper-1, by tokens for the GPT-4o transcribers."""
    if model == "whisper-1":
        return {"type": "duration", "seconds": round(seconds, 3)}
    audio_tokens = math.ceil(seconds * 1000 / AUDIO_MS_PER_INPUT_TOKEN)
    out_tokens = text_tokens(transcript)
    return {
        "type": "tokens",
        "total_tokens": audio_tokens + out_tokens,
        "input_tokens": audio_tokens,
        "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
        "output_tokens": out_tokens,
    }


def rate_limits_event(tokens_used: int, *, exhausted: bool = False) -> Event:
    """`rate_limits.updated` as a response starts that reads `tokens_used` tokens of a fresh per-minute window.

    `exhausted` reports no tokens left (the rate-limit fault switch)."""
    if exhausted:
        tokens_used = RATE_LIMIT_TOKENS
    return event(
        "rate_limits.updated",
        rate_limits=[
            {
                "name": "requests",
                "limit": RATE_LIMIT_REQUESTS,
                "remaining": RATE_LIMIT_REQUESTS - 1,
                "reset_seconds": round(60 / RATE_LIMIT_REQUESTS, 3),
            },
            {
                "name": "tokens",
                "limit": RATE_LIMIT_TOKENS,
                "remaining": max(0, RATE_LIMIT_TOKENS - tokens_used),
                "reset_seconds": round(60 * tokens_used / RATE_LIMIT_TOKENS, 3),
            },
        ],
    )
