"""Finding duplicate keys in a JSON event, which orjson silently resolves to the last value.

A frame such as `{"type": "session.update", "session": {...}, "type": "input_audio_buffer.append", ...}` is judged
by the relay on one value and might be read by the upstream on the other. Such frames are refused.

Checking every frame exactly would mean parsing it twice. Instead the quotes are counted: each key and each string
value contributes exactly two `"` characters, so a frame without duplicates and without escaped quotes has exactly
as many as its parsed form implies. `str.count` runs at memory speed; only a frame that fails that test is parsed
again, with the standard library, to find the duplicate.
"""

from __future__ import annotations

import json
from typing import Any


class DuplicateKeyError(ValueError):
    """A JSON object in the frame has the same key twice."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _quotes_implied(value: Any) -> int:
    if isinstance(value, str):
        return 2
    if isinstance(value, dict):
        return sum(2 + _quotes_implied(v) for v in value.values())
    if isinstance(value, list):
        return sum(_quotes_implied(v) for v in value)
    return 0


def may_have_duplicate_keys(text: str, parsed: Any) -> bool:
    """False when `text` certainly has no duplicate keys; True when it might (duplicates or escaped quotes)."""
    return text.count('"') != _quotes_implied(parsed)


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKeyError(key)
        seen[key] = value
    return seen


def duplicate_key(text: str) -> str | None:
    """The first key found twice in one object of `text` (already known to be valid JSON), or None."""
    try:
        json.loads(text, object_pairs_hook=_refuse_duplicates)
    except DuplicateKeyError as exc:
        return exc.key
    except (
        ValueError
    ):  # orjson and the standard library disagree on an edge case (e.g. NaN); no duplicate found
        return None
    return None
