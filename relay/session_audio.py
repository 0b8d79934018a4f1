"""Audio formats of one session as the relay presents them: pure decisions, no I/O, no resampling state.

Rates apply to `audio/pcm` only. G.711 (`audio/pcmu`, `audio/pcma`) is 8 kHz, one byte per sample, and passes the
relay untouched in both directions whatever rate the URL or a `session.update` declared.

Server events keep the spec's fields exactly as the upstream sent them (PCM rate 24000, which the `openai` SDK
types as `Literal[24000]`); the client's own PCM rates are told in the relay-owned top-level field `relay` of
`session.created`/`session.updated`, which validating clients ignore (the SDK's models allow extra keys).
"""

from __future__ import annotations

from typing import Any

#: The top-level key of session events that tells the client its own PCM rates.
RELAY_FIELD = "relay"
PCM = "audio/pcm"
G711_FORMATS = frozenset({"audio/pcmu", "audio/pcma"})


def format_of(container: Any, direction: str) -> dict[str, Any] | None:
    """`container["audio"][direction]["format"]` when every level is an object, else None."""
    audio = container.get("audio") if isinstance(container, dict) else None
    side = audio.get(direction) if isinstance(audio, dict) else None
    fmt = side.get("format") if isinstance(side, dict) else None
    return fmt if isinstance(fmt, dict) else None


def format_type(fmt: dict[str, Any] | None) -> str | None:
    """The format's `type` (`audio/pcm` when an object leaves it out), or None without a format object."""
    if fmt is None:
        return None
    kind = fmt.get("type", PCM)
    return kind if isinstance(kind, str) else None


def is_g711(kind: str | None) -> bool:
    """Whether a format type is one of the G.711 codecs, which carry no rate and are never resampled."""
    return kind in G711_FORMATS


def present_rates(event: dict[str, Any], input_rate: int, output_rate: int) -> None:
    """Tell the client its own PCM rates in the relay-owned field; the spec's fields stay as the upstream sent them."""
    event[RELAY_FIELD] = {"input_rate": input_rate, "output_rate": output_rate}


def audio_contents(item: Any) -> list[tuple[dict[str, Any], str]]:
    """The content parts of a conversation item that carry base64 audio, each with its direction.

    `input_audio` (what a user said) belongs to the input side, `output_audio`/`audio` (what the model said) to
    the output side.
    """
    content = item.get("content") if isinstance(item, dict) else None
    found: list[tuple[dict[str, Any], str]] = []
    for part in content if isinstance(content, list) else ():
        if isinstance(part, dict) and isinstance(part.get("audio"), str) and part["audio"]:
            direction = "input" if part.get("type") == "input_audio" else "output"
            found.append((part, direction))
    return found
