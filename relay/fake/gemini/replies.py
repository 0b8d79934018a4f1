"""What the simulated Gemini model answers, as lists of (delay, message) steps: the user's speech played back,
an echo of typed text, or a call of a tool the user named."""

from __future__ import annotations

import base64
import math
import re
from typing import Any

from relay.fake.signals import BYTES_PER_MS, speech_like

Step = tuple[float, dict[str, Any]]
#: Gemini bills about 25 tokens per second of audio (32 for input at 16 kHz would be the same order).
AUDIO_TOKENS_PER_SECOND = 25


def _words(text: str) -> list[str]:
    return re.findall(r"\s*\S+\s*", text) or [text]


def tokens_of_text(text: str) -> int:
    """Plausible token count of a text."""
    return math.ceil(len(text) / 4)


def tokens_of_audio(ms: float) -> int:
    """Plausible token count of audio."""
    return math.ceil(ms / 1000 * AUDIO_TOKENS_PER_SECOND)


def spoken_reply(
    text: str, audio: bytes | None, *, first_delay: float, speed: float, chunk_ms: int, modality: str
) -> list[Step]:
    """The steps of a model turn that says `text` (speaking `audio`, 24 kHz PCM16, or a speech-like signal)."""
    steps: list[Step] = []
    if modality == "TEXT":
        for index, word in enumerate(_words(text)):
            part = {"modelTurn": {"role": "model", "parts": [{"text": word}]}}
            steps.append((first_delay if index == 0 else 0.02, {"serverContent": part}))
        return steps
    pcm = audio if audio is not None else speech_like(text)
    size = chunk_ms * BYTES_PER_MS
    chunks = [pcm[i : i + size] for i in range(0, len(pcm), size)]
    words = _words(text)
    for index, chunk in enumerate(chunks):
        delay = first_delay if index == 0 else (chunk_ms / 1000 / speed if speed > 0 else 0.0)
        blob = {"mimeType": "audio/pcm;rate=24000", "data": base64.b64encode(chunk).decode("ascii")}
        steps.append(
            (delay, {"serverContent": {"modelTurn": {"role": "model", "parts": [{"inlineData": blob}]}}})
        )
        # The transcript runs alongside the audio, a word at a time, spread over the chunks.
        share = words[index * len(words) // len(chunks) : (index + 1) * len(words) // len(chunks)]
        if share:
            steps.append((0.0, {"serverContent": {"outputTranscription": {"text": "".join(share)}}}))
    return steps


def turn_end(prompt_tokens: int, prompt_audio_tokens: int, response_tokens: int, modality: str) -> list[Step]:
    """`generationComplete`, then `turnComplete` with the turn's `usageMetadata`."""
    out_modality = "AUDIO" if modality == "AUDIO" else "TEXT"
    usage = {
        "promptTokenCount": prompt_tokens,
        "responseTokenCount": response_tokens,
        "totalTokenCount": prompt_tokens + response_tokens,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": prompt_tokens - prompt_audio_tokens},
            {"modality": "AUDIO", "tokenCount": prompt_audio_tokens},
        ],
        "responseTokensDetails": [{"modality": out_modality, "tokenCount": response_tokens}],
    }
    return [
        (0.0, {"serverContent": {"generationComplete": True}}),
        (0.0, {"serverContent": {"turnComplete": True}, "usageMetadata": usage}),
    ]


def named_tools(declarations: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """The declared functions the user named in `text` (spaces may stand for underscores)."""
    spoken = text.lower()
    return [
        d
        for d in declarations
        if str(d.get("name", "")).lower() in spoken
        or str(d.get("name", "")).lower().replace("_", " ") in spoken
    ]


def example_args(declaration: dict[str, Any]) -> dict[str, Any]:
    """Arguments that fit a declaration's JSON schema, with placeholder values."""
    schema = declaration.get("parametersJsonSchema") or declaration.get("parameters") or {}
    examples = {"string": "example", "number": 1, "integer": 1, "boolean": True, "array": [], "object": {}}
    properties = schema.get("properties") or {}
    return {
        name: examples.get(str(spec.get("type", "")).lower() if isinstance(spec, dict) else "")
        for name, spec in properties.items()
    }
