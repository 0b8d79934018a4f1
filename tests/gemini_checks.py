"""Every message the simulated Gemini Live server sends, checked against the google-genai package's own types.

`LiveServerMessage` forbids unknown keys, so a message the real SDK would not parse (a misspelt field, a value of
the wrong type) is caught here rather than trusted to our reading of Google's documentation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import google.genai
from google.genai import types
from pydantic import ValidationError


@dataclass
class GeminiChecker:
    """Collects the messages that failed validation, to be asserted empty by the test."""

    problems: list[str] = field(default_factory=list)
    checked: int = 0

    def __call__(self, message: dict[str, Any]) -> None:
        self.checked += 1
        try:
            # As the SDK reads a frame: JSON text into the pydantic model (base64 bytes decoded on the way).
            types.LiveServerMessage.model_validate_json(json.dumps(message))
        except ValidationError as exc:
            self.problems.append(f"{list(message)}: {exc.errors()[:3]}")


SDK_VERSION = google.genai.__version__
