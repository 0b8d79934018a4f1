"""One model turn of Gemini Live as an OpenAI GA response: the events that open, stream and close it.

Pure builders: the translator says what Gemini sent (audio, a transcript piece, text, a tool call, the end of
the turn) and gets the OpenAI server events that carry it, in the order the GA protocol sends them.
"""

from __future__ import annotations

from typing import Any

from relay.protocol import new_event_id, new_id

Event = dict[str, Any]


def server_event(kind: str, **fields: Any) -> Event:
    """An OpenAI server event with a fresh `event_id`."""
    return {"type": kind, "event_id": new_event_id(), **fields}


def usage_from(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """Gemini's `usageMetadata` in the shape of an OpenAI response's `usage`."""
    if not isinstance(metadata, dict):
        return None

    def by_modality(key: str) -> dict[str, int]:
        counts = {"TEXT": 0, "AUDIO": 0}
        for entry in metadata.get(key) or []:
            if isinstance(entry, dict) and entry.get("modality") in counts:
                counts[entry["modality"]] += int(entry.get("tokenCount") or 0)
        return counts

    prompt = int(metadata.get("promptTokenCount") or 0)
    output = int(metadata.get("responseTokenCount") or 0) + int(metadata.get("thoughtsTokenCount") or 0)
    cached = int(metadata.get("cachedContentTokenCount") or 0)
    prompt_parts, output_parts = by_modality("promptTokensDetails"), by_modality("responseTokensDetails")
    if not any(prompt_parts.values()):
        prompt_parts["TEXT"] = prompt
    if not any(output_parts.values()):
        output_parts["AUDIO"] = output
    return {
        "total_tokens": int(metadata.get("totalTokenCount") or prompt + output),
        "input_tokens": prompt,
        "output_tokens": output,
        "input_token_details": {
            "text_tokens": prompt_parts["TEXT"],
            "audio_tokens": prompt_parts["AUDIO"],
            "image_tokens": 0,
            "cached_tokens": cached,
            "cached_tokens_details": {"text_tokens": cached, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": output_parts["TEXT"], "audio_tokens": output_parts["AUDIO"]},
    }


class TurnResponse:
    """The OpenAI response one Gemini model turn becomes. Items are opened lazily, as content arrives."""

    def __init__(self, modality: str, voice: str, conversation_id: str, previous_item_id: str | None) -> None:
        self.id = new_id("resp_")
        self.modality = modality
        self._voice = voice
        self._conversation_id = conversation_id
        self._previous = previous_item_id
        self._output: list[dict[str, Any]] = []  # items finished
        self._message: dict[str, Any] | None = None  # the assistant message being streamed
        self._message_previous: str | None = None
        self._said = ""
        self.finished = False
        #: The last item this response put into the conversation.
        self.last_item_id: str | None = None

    # -- opening ---------------------------------------------------------------------------------------------

    def created(self) -> Event:
        """`response.created`, before anything else of this response."""
        return server_event("response.created", response=self._object("in_progress", None, None))

    def _open_message(self) -> list[Event]:
        if self._message is not None:
            return []
        item: dict[str, Any] = {
            "id": new_id("item_"),
            "type": "message",
            "object": "realtime.item",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        self._message = item
        # conversation.item.done names the same previous item as conversation.item.added did.
        self._message_previous = self._previous
        index = len(self._output)
        part = (
            {"type": "audio", "transcript": ""} if self.modality == "audio" else {"type": "text", "text": ""}
        )
        out = [
            server_event(
                "response.output_item.added", response_id=self.id, output_index=index, item=dict(item)
            ),
            server_event("conversation.item.added", previous_item_id=self._previous, item=dict(item)),
            server_event("response.content_part.added", **self._ids(), content_index=0, part=part),
        ]
        self._previous = self.last_item_id = str(item["id"])
        return out

    def _ids(self) -> dict[str, Any]:
        assert self._message is not None
        return {"response_id": self.id, "item_id": self._message["id"], "output_index": len(self._output)}

    # -- streaming -------------------------------------------------------------------------------------------

    def audio(self, b64: str) -> list[Event]:
        """A piece of the spoken answer (base64 PCM16 at 24 kHz)."""
        out = self._open_message()
        return [*out, server_event("response.output_audio.delta", **self._ids(), content_index=0, delta=b64)]

    def transcript(self, text: str) -> list[Event]:
        """A piece of the spoken answer's transcript (audio modality) or of the answer itself (text modality)."""
        if not text:
            return []
        out = self._open_message()
        self._said += text
        kind = (
            "response.output_audio_transcript.delta"
            if self.modality == "audio"
            else "response.output_text.delta"
        )
        return [*out, server_event(kind, **self._ids(), content_index=0, delta=text)]

    def function_call(self, call_id: str, name: str, arguments: str) -> list[Event]:
        """One complete tool call of this turn: its own output item, added and done at once."""
        out = self._close_message("completed")
        item = {
            "id": new_id("item_"),
            "type": "function_call",
            "object": "realtime.item",
            "status": "in_progress",
            "call_id": call_id,
            "name": name,
            "arguments": "",
        }
        index = len(self._output)
        ids = {"response_id": self.id, "item_id": item["id"], "output_index": index}
        done = {**item, "status": "completed", "arguments": arguments}
        out += [
            server_event(
                "response.output_item.added", response_id=self.id, output_index=index, item=dict(item)
            ),
            server_event("conversation.item.added", previous_item_id=self._previous, item=dict(item)),
            server_event("response.function_call_arguments.delta", **ids, call_id=call_id, delta=arguments),
            server_event(
                "response.function_call_arguments.done",
                **ids,
                call_id=call_id,
                name=name,
                arguments=arguments,
            ),
            server_event("response.output_item.done", response_id=self.id, output_index=index, item=done),
            server_event("conversation.item.done", previous_item_id=self._previous, item=done),
        ]
        self._output.append(done)
        self._previous = self.last_item_id = item["id"]
        return out

    # -- ending ----------------------------------------------------------------------------------------------

    def _close_message(self, status: str) -> list[Event]:
        item = self._message
        if item is None:
            return []
        ids = self._ids()
        if self.modality == "audio":
            content = {"type": "output_audio", "transcript": self._said}
            part = {"type": "audio", "transcript": self._said}
            out = [
                server_event("response.output_audio.done", **ids, content_index=0),
                server_event(
                    "response.output_audio_transcript.done", **ids, content_index=0, transcript=self._said
                ),
            ]
        else:
            content = {"type": "output_text", "text": self._said}
            part = {"type": "text", "text": self._said}
            out = [server_event("response.output_text.done", **ids, content_index=0, text=self._said)]
        done = {**item, "status": status, "content": [content]}
        previous = self._message_previous
        out += [
            server_event("response.content_part.done", **ids, content_index=0, part=part),
            server_event(
                "response.output_item.done", response_id=self.id, output_index=ids["output_index"], item=done
            ),
            server_event("conversation.item.done", previous_item_id=previous, item=done),
        ]
        self._output.append(done)
        self._message = None
        self._said = ""
        return out

    def finish(self, usage: dict[str, Any] | None) -> list[Event]:
        """The turn is complete: close what is open, then `response.done` (status completed) with `usage`."""
        return self._end("completed", None, usage)

    def cancel(self, reason: str, usage: dict[str, Any] | None = None) -> list[Event]:
        """Cut short (barge-in, `turn_detected`; or the client's `response.cancel`, `client_cancelled`)."""
        return self._end("cancelled", {"type": "cancelled", "reason": reason}, usage)

    def _end(self, status: str, details: dict[str, Any] | None, usage: dict[str, Any] | None) -> list[Event]:
        if self.finished:
            return []
        self.finished = True
        out = self._close_message("completed" if status == "completed" else "incomplete")
        return [*out, server_event("response.done", response=self._object(status, details, usage))]

    def _object(
        self, status: str, details: dict[str, Any] | None, usage: dict[str, Any] | None
    ) -> dict[str, Any]:
        return {
            "object": "realtime.response",
            "id": self.id,
            "status": status,
            "status_details": details,
            "output": [dict(item) for item in self._output],
            "conversation_id": self._conversation_id,
            "output_modalities": [self.modality],
            "max_output_tokens": "inf",
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": self._voice}},
            "usage": usage,
            "metadata": None,
        }
