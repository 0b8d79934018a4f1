"""What the simulated model answers: the user's own speech played back, an echo of typed text, or a call of
a tool the user named. Pure functions of the conversation context."""

from __future__ import annotations

import re
from typing import Any

from relay.fake.conversation import StoredItem
from relay.fake.response import Reply
from relay.fake.signals import BYTES_PER_MS, ms_to_bytes, speech_like
from relay.protocol import dumps

#: Silence kept around the speech when the model plays a voice turn back.
ECHO_PADDING_MS = 50


def compose_reply(
    context: list[StoredItem],
    modalities: list[str],
    tools: list[dict[str, Any]],
    tool_choice: Any,
    *,
    parallel_tool_calls: bool = True,
) -> Reply:
    """Decide what the simulated model answers, from the newest meaningful item in the context."""
    last_user_text = ""
    reply_text = "Hello! This is the simulated realtime model."
    reply_audio: bytes | None = None
    last_kind = ""
    for stored in reversed(context):
        item = stored.item
        if item.get("type") == "function_call_output":
            reply_text = f"The function returned: {item.get('output', '')}"
            last_kind = "function_call_output"
            break
        if item.get("type") != "message" or item.get("role") != "user":
            continue
        audio_parts = [i for i, p in enumerate(item["content"]) if p.get("type") == "input_audio"]
        heard = [speech_audio(stored, i) for i in audio_parts if stored.audio.get(i)]
        texts = [str(p.get("text", "")) for p in item["content"] if p.get("type") == "input_text"]
        if heard:
            reply_audio = b"".join(bytes(a) for a in heard)
            reply_text = f"You spoke for {speech_ms(stored) / 1000:.1f} seconds; here it is back."
            last_user_text = stored.heard or " ".join(str(p.get("transcript") or "") for p in item["content"])
        elif texts:
            last_user_text = " ".join(texts)
            reply_text = f"You said: {last_user_text}"
        else:
            continue
        last_kind = "user"
        break
    chosen = _choose_tools(tools, tool_choice, last_user_text, last_kind)
    if chosen:
        # Every tool the user named is called in one response, one output item each, unless parallel calls are off.
        first, *rest = chosen if parallel_tool_calls else chosen[:1]
        more = [(str(tool["name"]), arguments_for(tool, last_user_text)) for tool in rest]
        return Reply(
            "function_call",
            function_name=str(first["name"]),
            arguments=arguments_for(first, last_user_text),
            more_calls=more,
        )
    if modalities == ["text"]:
        return Reply("text", text=reply_text)
    if reply_audio is None:
        reply_audio = speech_like(reply_text)
    return Reply("audio", text=reply_text, audio=reply_audio)


def answers_in_text(context: list[StoredItem]) -> bool:
    """The drift reported of the real model (`FakeOptions.text_after_text_history`): when the assistant's turns in
    the context are text only (a transcript replayed with `conversation.item.create`), it follows their form and
    answers in text, unless a later system item asks it to keep speaking."""
    assistant_text_only = False
    for stored in context:
        item = stored.item
        if item.get("type") != "message":
            continue
        parts = [str(p.get("type")) for p in item.get("content", [])]
        if item.get("role") == "assistant":
            assistant_text_only = bool(parts) and all(p in ("output_text", "text") for p in parts)
        elif item.get("role") == "system" and assistant_text_only:
            words = " ".join(str(p.get("text", "")) for p in item.get("content", [])).lower()
            if "aloud" in words or "audio" in words:
                assistant_text_only = False
    return assistant_text_only


def speech_ms(stored: StoredItem) -> float:
    """How long the user actually spoke in an item (its whole audio when the VAD did not mark the speech)."""
    if stored.speech is not None:
        return (stored.speech[1] - stored.speech[0]) / BYTES_PER_MS
    return sum(stored.audio_ms(index) for index in stored.audio)


def speech_audio(stored: StoredItem, content_index: int) -> bytes:
    """The spoken part of an audio content part, with a little of the padding the VAD kept around it."""
    audio = bytes(stored.audio.get(content_index, b""))
    if stored.speech is None or content_index != 0:
        return audio
    pad = ms_to_bytes(ECHO_PADDING_MS)
    start, end = stored.speech
    return audio[max(0, start - pad) : end + pad]


def _choose_tools(
    tools: list[dict[str, Any]], tool_choice: Any, user_text: str, last_kind: str
) -> list[dict[str, Any]]:
    functions = [t for t in tools if t.get("type") == "function"]
    if not functions or tool_choice == "none":
        return []
    if isinstance(tool_choice, dict):
        return [t for t in functions if t["name"] == tool_choice.get("name")][:1]
    if tool_choice == "required":
        return functions[:1]
    # "auto": call the functions the user named, but never right after a function result (no call loops).
    if last_kind != "user":
        return []
    spoken = user_text.lower()
    named = []
    for tool in functions:
        name = str(tool["name"]).lower()
        if name in spoken or name.replace("_", " ") in spoken:
            named.append(tool)
    return named


def arguments_for(tool: dict[str, Any], user_text: str = "") -> str:
    """Arguments that fit the tool's JSON schema, taken from the user's words where they give them.

    An enum takes the allowed values the user named, in the order named (so "5 km to mi" gives from km, to mi);
    a number takes the numbers the user said, in order; otherwise a declared default, else a placeholder.
    """
    properties = (tool.get("parameters") or {}).get("properties") or {}
    words = re.findall(r"[a-z]+|-?\d+(?:\.\d+)?", user_text.lower())
    numbers = [w for w in words if w[-1].isdigit()]
    examples = {"string": "example", "number": 1, "integer": 1, "boolean": True, "array": [], "object": {}}
    taken: set[int] = set()
    args: dict[str, Any] = {}
    for name, spec in properties.items():
        spec = spec if isinstance(spec, dict) else {}
        kind = str(spec.get("type", ""))
        enum = spec.get("enum")
        if isinstance(enum, list) and enum:
            named = [i for i, w in enumerate(words) if w in enum and i not in taken]
            if named:
                taken.add(named[0])
            args[name] = words[named[0]] if named else spec.get("default", enum[0])
        elif kind in ("number", "integer") and numbers:
            value = float(numbers.pop(0))
            args[name] = int(value) if kind == "integer" or value.is_integer() else value
        elif "default" in spec:
            args[name] = spec["default"]
        else:
            args[name] = examples.get(kind)
    return dumps(args)
