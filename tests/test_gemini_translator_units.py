"""The Gemini translation's pure parts, without sockets: the setup compared with what google-genai itself would send
for the same configuration, and the translator's answers to single frames."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from google import genai
from google.genai import _common, _live_converters, types

from relay.fake.gemini.model import normalize
from relay.providers.gemini import session_map
from relay.providers.gemini.responses import usage_from
from relay.providers.gemini.translate import DEFAULTS_EVENT_ID, UNSUPPORTED, GeminiTranslator
from relay.providers.profiles import GEMINI_MODEL

MODEL = f"models/{GEMINI_MODEL}"
VOICES = ("Puck", "Kore")


def sdk_setup(config: types.LiveConnectConfig) -> dict[str, Any]:
    """The setup message google-genai's live client sends for `config` (as in `AsyncLive.connect`)."""
    client = genai.Client(api_key="unused")
    parameters = types.LiveConnectParameters(model=MODEL, config=config).model_dump(exclude_none=True)
    wire = _common.convert_to_dict(
        _live_converters._LiveConnectParameters_to_mldev(
            api_client=client._api_client, from_object=parameters
        )
    )
    del wire["config"]
    wire["setup"]["model"] = MODEL
    return dict(wire)


def session(**changes: Any) -> dict[str, Any]:
    current = session_map.initial_session(GEMINI_MODEL, "Puck")
    merged = session_map.merge_update(current, {"type": "realtime", **changes}, VOICES)
    assert isinstance(merged, dict), merged
    return merged


def test_the_setup_is_what_google_genai_sends_for_the_same_configuration() -> None:
    ours = session_map.setup_message(
        session(
            instructions="Be brief.",
            tools=[
                {
                    "type": "function",
                    "name": "get_weather",
                    "description": "d",
                    "parameters": {"type": "object"},
                }
            ],
            audio={"input": {"transcription": {"model": "gpt-4o-transcribe"}}, "output": {"voice": "Kore"}},
        ),
        GEMINI_MODEL,
        "handle-1",
    )
    theirs = sdk_setup(
        types.LiveConnectConfig(
            response_modalities=[types.Modality.AUDIO],
            speech_config=types.SpeechConfig(
                voice_config=types.VoiceConfig(
                    prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name="Kore")
                )
            ),
            system_instruction=types.Content(parts=[types.Part(text="Be brief.")]),
            tools=[
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name="get_weather", description="d", parameters_json_schema={"type": "object"}
                        )
                    ]
                )
            ],
            realtime_input_config=types.RealtimeInputConfig(
                automatic_activity_detection=types.AutomaticActivityDetection(
                    disabled=False, silence_duration_ms=500, prefix_padding_ms=300
                )
            ),
            input_audio_transcription=types.AudioTranscriptionConfig(),
            output_audio_transcription=types.AudioTranscriptionConfig(),
            session_resumption=types.SessionResumptionConfig(handle="handle-1"),
        )
    )
    # Google's JSON parser reads camel and snake case alike; the SDK itself sends a mixture.
    assert normalize(ours) == normalize(theirs)


def test_manual_turns_text_output_and_no_interruption_map_to_their_gemini_settings() -> None:
    manual = session_map.setup_message(session(audio={"input": {"turn_detection": None}}), GEMINI_MODEL, None)
    assert manual["setup"]["realtimeInputConfig"] == {"automaticActivityDetection": {"disabled": True}}
    assert manual["setup"]["sessionResumption"] == {}
    text = session_map.setup_message(session(output_modalities=["text"]), GEMINI_MODEL, None)
    assert text["setup"]["generationConfig"] == {"responseModalities": ["TEXT"]}
    calm = session(audio={"input": {"turn_detection": {"type": "server_vad", "interrupt_response": False}}})
    assert session_map.realtime_input_config(calm)["activityHandling"] == "NO_INTERRUPTION"


def test_what_a_session_update_cannot_carry_is_named() -> None:
    current = session_map.initial_session(GEMINI_MODEL, "Puck")
    for update, param in [
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"audio": {"output": {"voice": "Nova"}}}, "audio.output.voice"),
        ({"audio": {"input": {"format": {"type": "audio/pcma"}}}}, "audio.input.format"),
        (
            {"audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": False}}}},
            "audio.input.turn_detection.create_response",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"model": "gpt-realtime"}, "model"),
    ]:
        refused = session_map.merge_update(current, update, VOICES)
        assert isinstance(refused, session_map.Refused) and refused.param == param, update
        assert "Gemini Live" in refused.message


def test_an_openai_voice_keeps_the_providers_own_and_tracing_is_left_out() -> None:
    current = session_map.initial_session(GEMINI_MODEL, "Puck")
    merged = session_map.merge_update(
        current, {"audio": {"output": {"voice": "alloy"}}, "tracing": "auto"}, VOICES
    )
    assert isinstance(merged, dict)
    assert merged["audio"]["output"]["voice"] == "Puck" and "tracing" not in merged


def frames(translator: GeminiTranslator, *events: dict[str, Any]) -> list[Any]:
    out = []
    for event in events:
        out.append(translator.from_client(json.dumps(event)))
    return out


def test_setup_waits_for_the_clients_first_update_after_the_relays_defaults() -> None:
    translator = GeminiTranslator(GEMINI_MODEL, "Puck", VOICES, "low-latency")
    defaults, client = frames(
        translator,
        {
            "type": "session.update",
            "event_id": DEFAULTS_EVENT_ID,
            "session": {"type": "realtime", "instructions": "A"},
        },
        {"type": "session.update", "session": {"type": "realtime", "tools": []}},
    )
    assert defaults.to_gemini == [] and [e["type"] for e in defaults.to_client] == ["session.updated"]
    (setup,) = client.to_gemini
    assert setup["setup"]["systemInstruction"] == {"parts": [{"text": "A"}]}
    # A change of the setup later is emulated by a resumed connection; a voice change is refused.
    later = translator.from_client(json.dumps({"type": "session.update", "session": {"instructions": "B"}}))
    assert later.resetup and later.to_gemini == []
    voice = translator.from_client(
        json.dumps({"type": "session.update", "session": {"audio": {"output": {"voice": "Kore"}}}})
    )
    assert voice.to_client[0]["error"]["code"] == UNSUPPORTED and not voice.resetup


def test_audio_goes_up_at_16k_and_manual_turns_frame_it_with_activity_signals() -> None:
    translator = GeminiTranslator(GEMINI_MODEL, "Puck", VOICES, "low-latency")
    pcm24 = (3000 * np.sin(2 * np.pi * 440 * np.arange(2400) / 24000)).astype("<i2").tobytes()
    start, append, commit = frames(
        translator,
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        },
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm24).decode()},
        {"type": "input_audio_buffer.commit"},
    )
    assert "setup" in start.to_gemini[0]
    assert append.to_gemini[0] == {"realtimeInput": {"activityStart": {}}}
    sent = b"".join(
        base64.b64decode(m["realtimeInput"]["audio"]["data"])
        for t in (append, commit)
        for m in t.to_gemini
        if "audio" in m.get("realtimeInput", {})
    )
    assert {
        m["realtimeInput"]["audio"]["mimeType"]
        for t in (append, commit)
        for m in t.to_gemini
        if "audio" in m.get("realtimeInput", {})
    } == {"audio/pcm;rate=16000"}
    assert len(sent) == 2 * 1600  # 100 ms at 16 kHz, the resampler's tail flushed by the commit
    assert commit.to_gemini[-1] == {"realtimeInput": {"activityEnd": {}}}
    assert [e["type"] for e in commit.to_client] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]


def test_a_model_turn_becomes_one_response_with_usage() -> None:
    translator = GeminiTranslator(GEMINI_MODEL, "Puck", VOICES, "low-latency")
    audio = base64.b64encode(bytes(960)).decode()
    messages = [
        {"voiceActivity": {"type": "ACTIVITY_START"}},
        {"voiceActivity": {"type": "ACTIVITY_END"}},
        {
            "serverContent": {
                "modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": audio}}]}
            }
        },
        {"serverContent": {"outputTranscription": {"text": "Hi"}}},
        {"serverContent": {"generationComplete": True}},
        {
            "serverContent": {"turnComplete": True},
            "usageMetadata": {"promptTokenCount": 10, "responseTokenCount": 4, "totalTokenCount": 14},
        },
    ]
    events = [e for m in messages for e in translator.from_gemini(json.dumps(m)).to_client]
    kinds = [e["type"] for e in events]
    assert kinds[:3] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    ]
    assert kinds.count("response.created") == 1 and kinds[-1] == "response.done"
    delta = next(e for e in events if e["type"] == "response.output_audio.delta")
    assert delta["delta"] == audio  # 24 kHz passes through untouched
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": "Hi"}]
    assert done["usage"]["total_tokens"] == 14 and done["usage"]["output_tokens"] == 4


def test_retrieve_answers_with_the_item_as_the_client_was_shown_it() -> None:
    translator = GeminiTranslator(GEMINI_MODEL, "Puck", VOICES, "low-latency")
    created = translator.from_client(
        json.dumps(
            {
                "type": "conversation.item.create",
                "item": {
                    "id": "item_1",
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hi"}],
                },
            }
        )
    )
    assert [e["type"] for e in created.to_client] == ["conversation.item.added", "conversation.item.done"]
    (retrieved,) = translator.from_client(
        json.dumps({"type": "conversation.item.retrieve", "item_id": "item_1"})
    ).to_client
    assert retrieved["type"] == "conversation.item.retrieved"
    assert retrieved["item"]["content"] == [{"type": "input_text", "text": "hi"}]
    (missing,) = translator.from_client(
        json.dumps({"type": "conversation.item.retrieve", "item_id": "nope"})
    ).to_client
    assert missing["error"]["code"] == "invalid_value" and missing["error"]["param"] == "item_id"


def test_clear_is_refused_once_gemini_has_heard_speech_of_the_turn() -> None:
    translator = GeminiTranslator(GEMINI_MODEL, "Puck", VOICES, "low-latency")
    clear = json.dumps({"type": "input_audio_buffer.clear"})
    assert [e["type"] for e in translator.from_client(clear).to_client] == ["input_audio_buffer.cleared"]
    translator.from_gemini(json.dumps({"voiceActivity": {"type": "ACTIVITY_START"}}))
    (refused,) = translator.from_client(clear).to_client
    assert refused["error"]["code"] == UNSUPPORTED and "cannot forget" in refused["error"]["message"]


def test_usage_by_modality() -> None:
    usage = usage_from(
        {
            "promptTokenCount": 30,
            "responseTokenCount": 20,
            "totalTokenCount": 50,
            "promptTokensDetails": [
                {"modality": "AUDIO", "tokenCount": 25},
                {"modality": "TEXT", "tokenCount": 5},
            ],
            "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 20}],
        }
    )
    assert usage is not None
    assert (
        usage["input_token_details"]["audio_tokens"] == 25
        and usage["input_token_details"]["text_tokens"] == 5
    )
    assert usage["output_token_details"] == {"text_tokens": 0, "audio_tokens": 20}
    assert usage_from(None) is None
