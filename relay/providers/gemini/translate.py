"""OpenAI GA client events → Gemini Live messages, and Gemini Live server messages → OpenAI GA server events.

Pure: `GeminiTranslator` holds one session's mapping state and answers, for every frame, what goes to Gemini
and what goes to the client. The socket work (connecting, waiting for `setupComplete`, resuming after `goAway`)
is relay.providers.gemini.connection's.

What cannot be mapped faithfully is refused with an OpenAI-shaped `error` naming Gemini Live
(`relay_provider_unsupported`): `conversation.item.truncate`/`delete`, per-response overrides, a voice change once
the session has started, G.711 audio. What is emulated (`conversation.item.retrieve`, `response.cancel`, setup
changes) is said where it is done.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass, field
from typing import Any

from relay import protocol
from relay.audio import Resampler, make_resampler
from relay.protocol import API_RATE, new_id
from relay.providers.gemini import session_map
from relay.providers.gemini.responses import Event, TurnResponse, server_event, usage_from
from relay.providers.gemini.session_map import PROVIDER, Refused

UNSUPPORTED = "relay_provider_unsupported"
GEMINI_INPUT_RATE = 16000
INPUT_MIME = f"audio/pcm;rate={GEMINI_INPUT_RATE}"
#: The id the relay gives its own opening session.update (relay.session_state.DEFAULTS_EVENT_ID).
DEFAULTS_EVENT_ID = "relay_session_defaults"
_SAMPLES_PER_MS = API_RATE // 1000
_RESPONSE_KEYS_ALLOWED = frozenset({"metadata", "conversation"})


@dataclass
class Translation:
    """What one frame becomes: messages for Gemini, events for the client, and whether to resume with a new setup."""

    to_gemini: list[dict[str, Any]] = field(default_factory=list)
    to_client: list[Event] = field(default_factory=list)
    #: The setup changed after the session started: reconnect with the resumption handle and the new setup.
    resetup: bool = False
    #: Gemini announced the end of this connection (`goAway`): resume on a new one.
    go_away: bool = False
    #: Gemini confirmed the setup: held messages may go.
    setup_complete: bool = False


def _rate_of(mime: str) -> int:
    for piece in mime.split(";"):
        name, _, value = piece.strip().partition("=")
        if name == "rate" and value.isdigit():
            return int(value)
    return API_RATE


class GeminiTranslator:
    """One translated session's state. Not thread-safe; one per client connection."""

    def __init__(self, model: str, voice: str, voices: tuple[str, ...], resampler_quality: str) -> None:
        self.model = model
        self._voices = voices
        self.session = session_map.initial_session(model, voice)
        self._quality = resampler_quality
        self._to_16k: Resampler = make_resampler(API_RATE, GEMINI_INPUT_RATE, resampler_quality)
        self._from_gemini: dict[int, Resampler] = {}
        self.setup_sent = False
        self._setup_fields: dict[str, Any] | None = None
        self.conversation_id = new_id("conv_")
        self._last_item: str | None = None
        self.response: TurnResponse | None = None
        #: Cut by the client's response.cancel: Gemini's content for this turn is dropped until the turn ends.
        self._discarding = False
        self._usage: dict[str, Any] | None = None
        # The user's current spoken turn: its item id, whether speech_started went out, and its transcript.
        self._user_item: str | None = None
        self._user_item_added = False
        self._speaking = False
        self._heard = ""
        self._input_samples = 0  # 24 kHz samples received in the session, for audio_start_ms / audio_end_ms
        self._activity_open = False  # manual turns: activityStart sent, activityEnd not yet
        self._pending_turns: list[dict[str, Any]] = []
        self._call_names: dict[str, str] = {}
        self._tool_results_sent = False
        #: The newest session resumption handle Gemini gave (None until it gives one).
        self.resumption_handle: str | None = None
        # Every conversation item as the client was last shown it, for conversation.item.retrieve.
        self._items: dict[str, dict[str, Any]] = {}

    # -- opening and setup -----------------------------------------------------------------------------------

    def opening(self) -> list[Event]:
        """Events for the client as soon as the connection is open: `session.created`."""
        return [server_event("session.created", session=self._shown_session())]

    def setup(self, handle: str | None = None) -> dict[str, Any]:
        """The `setup` message for the session as it stands (resuming under `handle` when given)."""
        self.setup_sent = True
        self._setup_fields = session_map.setup_fields(self.session, self.model)
        return session_map.setup_message(self.session, self.model, handle)

    def _shown_session(self) -> dict[str, Any]:
        return dict(self.session)

    def _ensure_setup(self, out: Translation) -> None:
        if not self.setup_sent:
            out.to_gemini.append(self.setup())

    # -- client → Gemini -------------------------------------------------------------------------------------

    def from_client(self, text: str) -> Translation:
        """Translate one OpenAI client event (already checked by the relay's policy)."""
        out = Translation()
        try:
            event = protocol.loads(text)
        except ValueError:
            return out  # the relay's own checks answer unparsable frames before they get here
        if not isinstance(event, dict):
            return out
        kind = event.get("type")
        handler = _CLIENT_HANDLERS.get(str(kind))
        if handler is None:
            self._refuse(
                out, event, "type", f"{PROVIDER} has no equivalent of {kind}; the relay cannot forward it."
            )
            return out
        handler(self, out, event)
        self._remember(out)
        return out

    def _remember(self, out: Translation) -> None:
        for event in out.to_client:
            if event["type"] in ("conversation.item.added", "conversation.item.done"):
                self._items[event["item"]["id"]] = event["item"]
            elif event["type"] == "conversation.item.input_audio_transcription.completed":
                item = self._items.get(event["item_id"])
                if item is not None:
                    item["content"] = [{"type": "input_audio", "transcript": event["transcript"]}]

    def _retrieve(self, out: Translation, event: dict[str, Any]) -> None:
        # Emulated from what the relay has seen: the items and their transcripts, not Gemini's audio.
        item_id = event.get("item_id")
        item = self._items.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            self._error(out, event, "invalid_value", f"Item with item_id not found: {item_id}", "item_id")
            return
        out.to_client.append(server_event("conversation.item.retrieved", item=copy.deepcopy(item)))

    def _refuse(self, out: Translation, event: dict[str, Any], param: str | None, message: str) -> None:
        self._error(out, event, UNSUPPORTED, message, param)

    @staticmethod
    def _error(
        out: Translation, event: dict[str, Any], code: str, message: str, param: str | None = None
    ) -> None:
        client_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        out.to_client.append(protocol.error_event(code, message, param=param, client_event_id=client_id))

    def _session_update(self, out: Translation, event: dict[str, Any]) -> None:
        merged = session_map.merge_update(self.session, event.get("session"), self._voices)
        if isinstance(merged, Refused):
            self._refuse(out, event, f"session.{merged.param}", merged.message)
            return
        old_voice = self.session["audio"]["output"].get("voice")
        if self.setup_sent and merged["audio"]["output"].get("voice") != old_voice:
            self._refuse(
                out,
                event,
                "session.audio.output.voice",
                f"{PROVIDER} cannot change the voice of a session that has started; connect again with the "
                "new voice.",
            )
            return
        self.session = merged
        out.to_client.append(server_event("session.updated", session=self._shown_session()))
        if not self.setup_sent:
            # The relay's own defaults come first; the client's first update follows at once and completes the
            # setup, which Gemini takes only once per connection.
            if event.get("event_id") != DEFAULTS_EVENT_ID:
                out.to_gemini.append(self.setup())
            return
        if session_map.setup_fields(self.session, self.model) != self._setup_fields:
            # Emulated: Gemini takes a new setup only on a new connection, which resumption joins to this one.
            out.resetup = True

    def _append(self, out: Translation, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            return
        pcm = base64.b64decode(audio)
        self._input_samples += len(pcm) // 2
        self._ensure_setup(out)
        if session_map.manual_turns(self.session) and not self._activity_open:
            self._activity_open = True
            out.to_gemini.append({"realtimeInput": {"activityStart": {}}})
        self._send_audio(out, self._to_16k.process(pcm))

    def _send_audio(self, out: Translation, pcm16k: bytes) -> None:
        if pcm16k:
            data = base64.b64encode(pcm16k).decode("ascii")
            out.to_gemini.append({"realtimeInput": {"audio": {"data": data, "mimeType": INPUT_MIME}}})

    def _commit(self, out: Translation, event: dict[str, Any]) -> None:
        if not session_map.manual_turns(self.session):
            self._refuse(
                out,
                event,
                None,
                f"{PROVIDER} ends turns itself while turn detection is on; set audio.input.turn_detection to "
                "null to commit turns yourself.",
            )
            return
        if not self._activity_open:
            # As OpenAI answers a commit with nothing appended since the last one.
            self._error(
                out,
                event,
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer is empty.",
            )
            return
        self._send_audio(out, self._to_16k.flush())
        self._to_16k.reset()
        self._activity_open = False
        out.to_gemini.append({"realtimeInput": {"activityEnd": {}}})
        item_id = new_id("item_")
        out.to_client.append(
            server_event("input_audio_buffer.committed", previous_item_id=self._last_item, item_id=item_id)
        )
        self._user_item, self._user_item_added, self._heard = item_id, False, ""
        self._add_user_audio_item(out)

    def _clear(self, out: Translation, event: dict[str, Any]) -> None:
        # Audio goes to Gemini as it comes; only a buffer holding no speech can honestly be called cleared.
        if self._activity_open or self._speaking:
            self._refuse(
                out,
                event,
                None,
                f"{PROVIDER} has already received this turn's audio and cannot forget it; commit it or ignore it.",
            )
            return
        self._to_16k.reset()
        out.to_client.append(server_event("input_audio_buffer.cleared"))

    def _item_create(self, out: Translation, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            return
        kind = item.get("type")
        self._ensure_setup(out)
        if kind == "function_call_output":
            call_id = str(item.get("call_id") or "")
            output = item.get("output")
            try:
                result: Any = protocol.loads(output) if isinstance(output, str) else output
            except ValueError:
                result = output
            response = result if isinstance(result, dict) else {"output": result}
            function_response: dict[str, Any] = {"id": call_id, "response": response}
            if call_id in self._call_names:
                function_response["name"] = self._call_names[call_id]
            out.to_gemini.append({"toolResponse": {"functionResponses": [function_response]}})
            self._tool_results_sent = True
            self._added_item(out, {**item, "status": "completed"})
            return
        if kind != "message" or item.get("role") not in ("user", "assistant"):
            self._refuse(
                out,
                event,
                "item",
                f"{PROVIDER} takes user and assistant messages and function call outputs; instructions belong in "
                "session.instructions.",
            )
            return
        parts: list[dict[str, Any]] = []
        for part in item.get("content") or []:
            if isinstance(part, dict) and part.get("type") in ("input_text", "output_text", "text"):
                parts.append({"text": str(part.get("text") or "")})
            else:
                self._refuse(
                    out,
                    event,
                    "item.content",
                    f"{PROVIDER} takes text content in conversation.item.create; send audio with "
                    "input_audio_buffer.append.",
                )
                return
        role = "user" if item["role"] == "user" else "model"
        self._pending_turns.append({"role": role, "parts": parts})
        self._added_item(out, {**item, "status": "completed"})

    def _added_item(self, out: Translation, item: dict[str, Any]) -> None:
        item = {"id": item.get("id") or new_id("item_"), "object": "realtime.item", **item}
        item.pop("event_id", None)
        previous, self._last_item = self._last_item, item["id"]
        out.to_client.append(server_event("conversation.item.added", previous_item_id=previous, item=item))
        out.to_client.append(server_event("conversation.item.done", previous_item_id=previous, item=item))

    def _response_create(self, out: Translation, event: dict[str, Any]) -> None:
        overrides = event.get("response")
        if isinstance(overrides, dict):
            extra = sorted(set(overrides) - _RESPONSE_KEYS_ALLOWED)
            if extra or overrides.get("conversation") == "none":
                self._refuse(
                    out,
                    event,
                    f"response.{extra[0] if extra else 'conversation'}",
                    f"{PROVIDER} fixes instructions, tools, voice and modalities for the whole session; per-response "
                    "overrides cannot be honoured. Change the session instead (session.update).",
                )
                return
        self._ensure_setup(out)
        if self._tool_results_sent and not self._pending_turns:
            # Gemini continues by itself after a tool response; the turn that follows is this response.
            self._tool_results_sent = False
            return
        self._tool_results_sent = False
        turns, self._pending_turns = self._pending_turns, []
        content: dict[str, Any] = {"turnComplete": True}
        if turns:
            content["turns"] = turns
        out.to_gemini.append({"clientContent": content})

    def _response_cancel(self, out: Translation, event: dict[str, Any]) -> None:
        # Emulated: Gemini has no cancel, so the rest of this turn is dropped here (Gemini's context keeps it).
        if self.response is None:
            self._error(
                out, event, "response_cancel_not_active", "Cancellation failed: no active response found"
            )
            return
        out.to_client.extend(self.response.cancel("client_cancelled"))
        self._end_response()
        self._discarding = True

    def _not_mappable(self, out: Translation, event: dict[str, Any]) -> None:
        kind = event.get("type")
        self._refuse(
            out,
            event,
            "type",
            f"{PROVIDER} keeps its conversation to itself: {kind} cannot be translated. The relay refuses it "
            "rather than pretend it happened.",
        )

    # -- Gemini → client -------------------------------------------------------------------------------------

    def from_gemini(self, text: str | bytes) -> Translation:
        """Translate one Gemini server message."""
        out = Translation()
        try:
            message = protocol.loads(text)
        except ValueError:
            return out
        if not isinstance(message, dict):
            return out
        if "usageMetadata" in message:
            self._usage = usage_from(message["usageMetadata"])
        if "setupComplete" in message:
            out.setup_complete = True
        if "sessionResumptionUpdate" in message:
            update = message["sessionResumptionUpdate"] or {}
            if update.get("resumable") and update.get("newHandle"):
                self.resumption_handle = str(update["newHandle"])
        if "goAway" in message:
            out.go_away = True
        for key in ("voiceActivity", "voiceActivityDetectionSignal"):
            if key in message:
                self._voice_activity(out, message[key] or {})
        if "serverContent" in message:
            self._server_content(out, message["serverContent"] or {})
        if "toolCall" in message:
            self._tool_call(out, message["toolCall"] or {})
        self._remember(out)
        return out

    def _voice_activity(self, out: Translation, signal: dict[str, Any]) -> None:
        # On the wire Gemini names it `type` (google-genai renames it voice_activity_type).
        kind = signal.get("type") or signal.get("vadSignalType")
        if kind in ("ACTIVITY_START", "VAD_SIGNAL_TYPE_SOS"):
            self._speech_started(out)
        elif kind in ("ACTIVITY_END", "VAD_SIGNAL_TYPE_EOS") and self._speaking:
            self._speaking = False
            item_id = self._user_item or new_id("item_")
            out.to_client.append(
                server_event(
                    "input_audio_buffer.speech_stopped",
                    audio_end_ms=self._input_samples // _SAMPLES_PER_MS,
                    item_id=item_id,
                )
            )
            out.to_client.append(
                server_event(
                    "input_audio_buffer.committed", previous_item_id=self._last_item, item_id=item_id
                )
            )
            self._add_user_audio_item(out)

    def _speech_started(self, out: Translation) -> None:
        if self._speaking:
            return
        self._speaking = True
        self._user_item, self._user_item_added, self._heard = new_id("item_"), False, ""
        out.to_client.append(
            server_event(
                "input_audio_buffer.speech_started",
                audio_start_ms=self._input_samples // _SAMPLES_PER_MS,
                item_id=self._user_item,
            )
        )

    def _add_user_audio_item(self, out: Translation) -> None:
        if self._user_item is None or self._user_item_added:
            return
        self._user_item_added = True
        item = {
            "id": self._user_item,
            "type": "message",
            "object": "realtime.item",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        previous, self._last_item = self._last_item, self._user_item
        out.to_client.append(server_event("conversation.item.added", previous_item_id=previous, item=item))
        out.to_client.append(server_event("conversation.item.done", previous_item_id=previous, item=item))

    def _server_content(self, out: Translation, content: dict[str, Any]) -> None:
        if content.get("interrupted"):
            # Barge-in: Gemini stopped generating. The client hears speech_started first (to stop playback).
            self._speech_started(out)
            if self.response is not None:
                out.to_client.extend(self.response.cancel("turn_detected", self._usage))
                self._end_response()
            self._discarding = False
        transcription = content.get("inputTranscription")
        if isinstance(transcription, dict) and transcription.get("text"):
            self._heard_piece(out, str(transcription["text"]))
        if not self._discarding:
            turn = content.get("modelTurn")
            for part in (turn or {}).get("parts") or []:
                self._model_part(out, part)
            transcript = content.get("outputTranscription")
            if (
                isinstance(transcript, dict)
                and transcript.get("text")
                and self.session["output_modalities"] == ["audio"]
            ):
                out.to_client.extend(self._current_response(out).transcript(str(transcript["text"])))
        if content.get("turnComplete"):
            self._complete_heard(out)
            if self.response is not None:
                out.to_client.extend(self.response.finish(self._usage))
                self._end_response()
            self._discarding = False
            self._usage = None

    def _heard_piece(self, out: Translation, text: str) -> None:
        if self._user_item is None:
            # No activity signal came (real Gemini sends none by default): the transcript opens the user's item.
            self._user_item, self._user_item_added, self._heard = new_id("item_"), False, ""
        self._add_user_audio_item(out)
        self._heard += text
        if self.session["audio"]["input"].get("transcription") is not None:
            out.to_client.append(
                server_event(
                    "conversation.item.input_audio_transcription.delta",
                    item_id=self._user_item,
                    content_index=0,
                    delta=text,
                )
            )

    def _complete_heard(self, out: Translation) -> None:
        if self._user_item is None:
            return
        if self._user_item_added and self.session["audio"]["input"].get("transcription") is not None:
            out.to_client.append(
                server_event(
                    "conversation.item.input_audio_transcription.completed",
                    item_id=self._user_item,
                    content_index=0,
                    transcript=self._heard,
                    usage={"type": "duration", "seconds": 0},
                )
            )
        self._user_item = None
        self._heard = ""

    def _model_part(self, out: Translation, part: Any) -> None:
        if not isinstance(part, dict) or part.get("thought"):
            return
        inline = part.get("inlineData")
        if isinstance(inline, dict) and str(inline.get("mimeType", "")).startswith("audio/pcm"):
            data = str(inline.get("data") or "")
            rate = _rate_of(str(inline["mimeType"]))
            if rate != API_RATE:
                resampler = self._from_gemini.setdefault(rate, make_resampler(rate, API_RATE, self._quality))
                data = base64.b64encode(resampler.process(base64.b64decode(data))).decode("ascii")
            if data:
                out.to_client.extend(self._current_response(out).audio(data))
        elif isinstance(part.get("text"), str) and self.session["output_modalities"] == ["text"]:
            out.to_client.extend(self._current_response(out).transcript(part["text"]))

    def _current_response(self, out: Translation) -> TurnResponse:
        if self.response is None:
            if self._speaking:
                # The model answers: the user's turn is over even without an end-of-activity signal.
                self._voice_activity(out, {"type": "ACTIVITY_END"})
            self._add_user_audio_item(out)
            voice = str(self.session["audio"]["output"].get("voice") or "")
            modality = self.session["output_modalities"][0]
            self.response = TurnResponse(modality, voice, self.conversation_id, self._last_item)
            out.to_client.append(self.response.created())
        return self.response

    def _end_response(self) -> None:
        if self.response is not None and self.response.last_item_id is not None:
            self._last_item = self.response.last_item_id
        self.response = None

    def _tool_call(self, out: Translation, call: dict[str, Any]) -> None:
        calls = [c for c in call.get("functionCalls") or [] if isinstance(c, dict) and c.get("name")]
        if not calls:
            return
        response = self._current_response(out)
        for function_call in calls:
            call_id = str(function_call.get("id") or new_id("call_", 16))
            self._call_names[call_id] = str(function_call["name"])
            arguments = protocol.dumps(function_call.get("args") or {})
            out.to_client.extend(response.function_call(call_id, str(function_call["name"]), arguments))
        # Gemini now waits for the tool response: in OpenAI's terms this response is done.
        self._complete_heard(out)
        out.to_client.extend(response.finish(self._usage))
        self._end_response()
        self._usage = None


_CLIENT_HANDLERS = {
    "session.update": GeminiTranslator._session_update,
    "input_audio_buffer.append": GeminiTranslator._append,
    "input_audio_buffer.commit": GeminiTranslator._commit,
    "input_audio_buffer.clear": GeminiTranslator._clear,
    "conversation.item.create": GeminiTranslator._item_create,
    "response.create": GeminiTranslator._response_create,
    "response.cancel": GeminiTranslator._response_cancel,
    "conversation.item.truncate": GeminiTranslator._not_mappable,
    "conversation.item.delete": GeminiTranslator._not_mappable,
    "conversation.item.retrieve": GeminiTranslator._retrieve,
}
