"""Knobs of the simulated Gemini Live server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GEMINI_MODELS = ("gemini-live-2.5-flash-preview", "gemini-2.5-flash-native-audio-preview-09-2025")


@dataclass
class GeminiOptions:
    """How the simulated server behaves; the defaults give a well-behaved, paced server."""

    #: When set, the handshake must carry `x-goog-api-key: <api_key>` (or `?key=`); else the connection is
    #: accepted and closed 1008 with Google's "API key not valid" reason, as the real service does.
    api_key: str | None = None
    #: Models `setup.model` may name (as `models/<name>`).
    models: tuple[str, ...] = GEMINI_MODELS
    #: Seconds from the end of the user's turn to the first audio of the answer.
    first_audio_delay: float = 0.3
    #: Audio leaves this many times faster than real time (0: as fast as possible).
    audio_speed: float = 3.0
    #: Milliseconds of audio per `modelTurn` message.
    chunk_ms: int = 100
    #: A connection lasts at most this long: `goAway` comes `go_away_seconds` before, then close 1000.
    connection_seconds: float = 600.0
    go_away_seconds: float = 1.0
    #: Called with every message the server sends (tests validate them against google-genai's types).
    check: Callable[[dict[str, Any]], None] | None = None
    #: Keep per-connection recordings for inspection. Off for long-running demos.
    record: bool = True
