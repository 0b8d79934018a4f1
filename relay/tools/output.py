"""What the model reads back from a tool call: its `function_call_output.output`, always one JSON object text.

A result becomes `{"result": ...}`; a failure becomes `{"error": "..."}` in words the model can say to the user.
Whatever a tool returns (text that is not JSON, images, a huge blob) ends up as a bounded, valid JSON string.
"""

from __future__ import annotations

from typing import Any

import orjson

from relay.protocol import dumps

#: The longest output the model is given; a longer result is cut (and says so).
MAX_OUTPUT_CHARS = 16_000


def result_output(structured: Any, texts: list[str], other_kinds: list[str]) -> str:
    """The output for a tool's result: its structured content, else its text (parsed when it is JSON)."""
    if structured is not None:
        value: Any = structured.get("result", structured) if _only_result(structured) else structured
    else:
        text = "\n".join(texts)
        value = _parsed(text) if text else None
        if value is None and other_kinds:
            value = (
                f"(the tool returned {', '.join(sorted(set(other_kinds)))} content, which is not read aloud)"
            )
    output = dumps({"result": value})
    if len(output) <= MAX_OUTPUT_CHARS:
        return output
    shown = output[: MAX_OUTPUT_CHARS // 2]
    return dumps({"result": shown, "note": "the result was too long and was cut"})


def error_output(message: str) -> str:
    """The output for a failed call: what went wrong, for the model to tell the user."""
    return dumps({"error": message[:500]})


def _only_result(structured: Any) -> bool:
    # MCP wraps a plain return value as {"result": value}; the model needs the value only once.
    return isinstance(structured, dict) and set(structured) == {"result"}


def _parsed(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # Not JSON (or broken JSON): the model reads it as text.
        return text
