"""Every message the simulated Gemini Live server sends, checked against the google-genai package's own code.

A message goes the way the SDK reads it: through its wire converter (`_LiveServerMessage_from_mldev`, which
renames some fields, e.g. `voiceActivity.type`) and into `LiveServerMessage`, which forbids unknown keys. The SDK
itself drops unknown keys before validating; the check keeps them, so a misspelt field is caught here rather than
silently ignored by a real client.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import google.genai
from google.genai import _live_converters, types
from pydantic import ValidationError

#: The top-level fields google-genai's converter reads from a server message.
WIRE_KEYS = frozenset(
    {
        "setupComplete",
        "serverContent",
        "toolCall",
        "toolCallCancellation",
        "usageMetadata",
        "goAway",
        "sessionResumptionUpdate",
        "voiceActivityDetectionSignal",
        "voiceActivity",
    }
)
SDK_VERSION = google.genai.__version__


@dataclass
class GeminiChecker:
    """Collects the messages that failed validation, to be asserted empty by the test."""

    problems: list[str] = field(default_factory=list)
    checked: int = 0

    def __call__(self, message: dict[str, Any]) -> None:
        self.checked += 1
        unknown = sorted(set(message) - WIRE_KEYS)
        if unknown:
            self.problems.append(f"{list(message)}: google-genai reads no top-level field {unknown}")
        converted = _live_converters._LiveServerMessage_from_mldev(json.loads(json.dumps(message)))
        try:
            types.LiveServerMessage.model_validate(converted)
        except ValidationError as exc:
            self.problems.append(f"{list(message)}: {exc.errors()[:3]}")
