"""Server tools without sockets: the call-tracking rules, tool merging, outputs, settings, and the words the
simulated model hears."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from relay.fake.replies import arguments_for
from relay.fake.spoken import hear, say
from relay.tools.calls import FOLLOW_UP, MARK, WAITING, ToolCalls
from relay.tools.output import MAX_OUTPUT_CHARS, error_output, result_output
from relay.tools.settings import ToolSettingsError, parse_tool_settings
from tests.audio_signals import speech_wav

CLOCK = {"type": "function", "name": "current_time", "description": "", "parameters": {"type": "object"}}
WEATHER = {"type": "function", "name": "get_weather", "description": "", "parameters": {"type": "object"}}


def calls(**options: Any) -> ToolCalls:
    return ToolCalls([CLOCK], waiting_instructions="say you are looking", **options)


def created(response_id: str, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    return {"type": "response.created", "response": {"id": response_id, "metadata": metadata, "output": []}}


def call_done(
    response_id: str, call_id: str, name: str = "current_time", status: str = "completed"
) -> dict[str, Any]:
    item = {
        "id": f"item_{call_id}",
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": "{}",
    }
    return {"type": "response.output_item.done", "response_id": response_id, "output_index": 0, "item": item}


def done(response_id: str, status: str = "completed", output: list[Any] | None = None) -> dict[str, Any]:
    return {
        "type": "response.done",
        "response": {"id": response_id, "status": status, "output": output or []},
    }


def kinds(frames: list[str]) -> list[tuple[str, Any]]:
    out = []
    for frame in frames:
        event = orjson.loads(frame)
        detail = (
            event.get("response", {}).get("metadata", {}).get("relay")
            if event["type"] == "response.create"
            else event["item"]["call_id"]
        )
        out.append((event["type"], detail))
    return out


def run_call(tracker: ToolCalls, response_id: str = "resp_1", call_id: str = "call_1") -> None:
    tracker.from_upstream(created(response_id))
    verdict = tracker.from_upstream(call_done(response_id, call_id))
    assert [r.call_id for r in verdict.start] == [call_id]


def test_the_follow_up_waits_for_both_the_output_and_the_response_end() -> None:
    tracker = calls()
    run_call(tracker)
    assert tracker.from_upstream(done("resp_1")).to_upstream == []  # the output is not there yet
    assert kinds(tracker.finished("call_1", '{"result":1}')) == [
        ("conversation.item.create", "call_1"),
        ("response.create", FOLLOW_UP),
    ]
    # An output that arrives before the response ends is sent at once; the follow-up waits for response.done.
    tracker = calls()
    run_call(tracker)
    assert kinds(tracker.finished("call_1", "{}")) == [("conversation.item.create", "call_1")]
    assert kinds(tracker.from_upstream(done("resp_1")).to_upstream) == [("response.create", FOLLOW_UP)]
    assert tracker.finished("call_1", "{}") == []  # once only


def test_a_long_session_forgets_settled_responses() -> None:
    tracker = calls()
    for turn in range(50):
        run_call(tracker, f"resp_{turn}", f"call_{turn}")
        tracker.from_upstream(done(f"resp_{turn}", "cancelled" if turn % 2 else "completed"))
        tracker.finished(f"call_{turn}", "{}")
        tracker.from_upstream(created(f"resp_f{turn}"))
        tracker.from_upstream(done(f"resp_f{turn}"))
    assert tracker.tracked_responses <= 1


@pytest.mark.parametrize("status", ["cancelled", "failed", "incomplete"])
def test_no_follow_up_after_a_response_that_did_not_complete(status: str) -> None:
    tracker = calls()
    run_call(tracker)
    tracker.from_upstream(done("resp_1", status))
    # The output still goes into the conversation, but the model is not asked to go on.
    assert kinds(tracker.finished("call_1", "{}")) == [("conversation.item.create", "call_1")]
    assert tracker.still_running("call_1") == []


def test_a_barge_in_or_a_new_response_supersedes_the_follow_up() -> None:
    tracker = calls()
    run_call(tracker)
    tracker.from_upstream(done("resp_1"))
    tracker.from_upstream(
        {"type": "input_audio_buffer.speech_started", "item_id": "item_x", "audio_start_ms": 0}
    )
    assert kinds(tracker.finished("call_1", "{}")) == [("conversation.item.create", "call_1")]

    tracker = calls()
    run_call(tracker)
    tracker.from_upstream(done("resp_1"))
    tracker.from_upstream(created("resp_2"))  # e.g. the user typed again and asked for a response
    assert kinds(tracker.finished("call_1", "{}")) == [("conversation.item.create", "call_1")]


def test_the_follow_up_waits_for_a_response_in_progress() -> None:
    tracker = calls()
    run_call(tracker)
    tracker.from_upstream(done("resp_1"))
    waiting = tracker.still_running("call_1")
    assert kinds(waiting) == [("response.create", WAITING)]
    assert tracker.still_running("call_1") == []  # said once
    tracker.from_upstream(created("resp_w", {"relay": WAITING}))
    assert kinds(tracker.finished("call_1", "{}")) == [("conversation.item.create", "call_1")]
    assert kinds(tracker.from_upstream(done("resp_w")).to_upstream) == [("response.create", FOLLOW_UP)]


def test_calls_are_run_only_when_complete_and_only_for_server_tools() -> None:
    tracker = calls()
    tracker.from_upstream(created("resp_1"))
    assert tracker.from_upstream(call_done("resp_1", "call_cut", status="incomplete")).start == []
    assert tracker.from_upstream(call_done("resp_1", "call_w", name="get_weather")).start == []
    delta = {"type": "response.function_call_arguments.delta", "item_id": "item_call_1", "delta": "{"}
    assert tracker.from_upstream(delta).start == []
    run_call(tracker, "resp_2", "call_1")
    assert tracker.from_upstream(call_done("resp_2", "call_1")).start == []  # seen twice, run once


def test_a_response_that_also_calls_a_client_tool_is_left_to_the_client() -> None:
    tracker = calls()
    run_call(tracker)
    tracker.from_upstream(call_done("resp_1", "call_w", name="get_weather"))
    tracker.from_upstream(done("resp_1"))
    assert kinds(tracker.finished("call_1", "{}")) == [("conversation.item.create", "call_1")]


def test_server_call_events_are_marked_or_hidden() -> None:
    visible = calls()
    visible.from_upstream(created("resp_1"))
    event = call_done("resp_1", "call_1")
    verdict = visible.from_upstream(event)
    assert verdict.changed and event["relay"] == MARK and not verdict.drop
    client_call = call_done("resp_1", "call_w", name="get_weather")
    assert not visible.from_upstream(client_call).changed and "relay" not in client_call

    assert not visible.reads_argument_deltas  # marking deltas is a courtesy; the items carry the mark
    hidden = calls(visible=False)
    assert hidden.reads_argument_deltas
    hidden.from_upstream(created("resp_1"))
    assert hidden.from_upstream(call_done("resp_1", "call_1")).drop
    delta = {"type": "response.function_call_arguments.delta", "item_id": "item_call_1", "delta": "{"}
    assert hidden.from_upstream(delta).drop
    output_item = {
        "type": "conversation.item.added",
        "item": {"id": "item_o", "type": "function_call_output", "call_id": "call_1", "output": "{}"},
    }
    assert hidden.from_upstream(output_item).drop
    # Items after hidden ones follow the last item the client saw.
    item = call_done("resp_1", "call_1")["item"]
    added_call = {"type": "conversation.item.added", "previous_item_id": "item_u", "item": item}
    assert hidden.from_upstream(added_call).drop
    output_item["previous_item_id"] = "item_call_1"
    hidden.from_upstream(output_item)
    answer = {
        "type": "conversation.item.added",
        "previous_item_id": "item_o",
        "item": {"id": "item_m", "type": "message"},
    }
    assert hidden.from_upstream(answer).changed and answer["previous_item_id"] == "item_u"
    committed = {"type": "input_audio_buffer.committed", "previous_item_id": "item_o", "item_id": "item_u2"}
    assert hidden.from_upstream(committed).changed and committed["previous_item_id"] == "item_u"
    end = done(
        "resp_1", output=[{"id": "item_call_1", "type": "function_call"}, {"id": "item_m", "type": "message"}]
    )
    verdict = hidden.from_upstream(end)
    assert verdict.changed and [i["id"] for i in end["response"]["output"]] == ["item_m"]


def test_client_tools_pass_as_they_came_beside_the_server_tools() -> None:
    tracker = calls()
    event: dict[str, Any] = {"type": "session.update", "session": {"type": "realtime", "tools": [WEATHER]}}
    refusal, merged = tracker.from_client(event)
    assert refusal is None and merged
    assert event["session"]["tools"] == [WEATHER, CLOCK]
    # Removing every tool keeps the server's.
    event = {"type": "response.create", "response": {"tools": []}}
    assert tracker.from_client(event) == (None, True) and event["response"]["tools"] == [CLOCK]
    untouched: dict[str, Any] = {"type": "session.update", "session": {"instructions": "hi"}}
    assert tracker.from_client(untouched) == (None, False)


def test_clients_cannot_take_a_server_tool_name_or_answer_a_server_call() -> None:
    tracker = calls()
    refusal, _ = tracker.from_client({"type": "session.update", "session": {"tools": [WEATHER, CLOCK]}})
    assert refusal is not None and refusal.param == "session.tools[1].name"
    run_call(tracker)
    answer = {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "call_1", "output": "{}"},
    }
    refusal, _ = tracker.from_client(answer)
    assert refusal is not None and "relay runs it" in refusal.message
    own = {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "call_w", "output": "{}"},
    }
    assert tracker.from_client(own) == (None, False)


def test_outputs_are_always_one_bounded_json_object() -> None:
    assert orjson.loads(result_output({"result": 3}, ["3"], [])) == {"result": 3}
    assert orjson.loads(result_output(None, ['{"a": 1}'], [])) == {"result": {"a": 1}}
    assert orjson.loads(result_output(None, ["{'answer': 42,"], [])) == {"result": "{'answer': 42,"}
    assert "image" in orjson.loads(result_output(None, [], ["image"]))["result"]
    long = result_output(None, ["x" * (3 * MAX_OUTPUT_CHARS)], [])
    assert len(long) <= MAX_OUTPUT_CHARS and "cut" in orjson.loads(long)["note"]
    assert orjson.loads(error_output("boom")) == {"error": "boom"}


def test_the_simulated_model_takes_arguments_from_the_users_words() -> None:
    units = ["km", "mi", "kg"]
    tool = {
        "name": "convert_units",
        "parameters": {
            "properties": {
                "value": {"type": "number"},
                "from_unit": {"enum": units},
                "to_unit": {"enum": units},
            }
        },
    }
    assert orjson.loads(arguments_for(tool, "convert units 5 km to mi")) == {
        "value": 5,
        "from_unit": "km",
        "to_unit": "mi",
    }
    clock = {
        "name": "current_time",
        "parameters": {"properties": {"timezone": {"type": "string", "default": "UTC"}}},
    }
    assert orjson.loads(arguments_for(clock, "what is the current time")) == {"timezone": "UTC"}


@pytest.mark.parametrize("rate", [16000, 24000, 44100, 48000])
def test_spoken_words_are_heard_and_speech_is_not(rate: int) -> None:
    from relay.audio import make_resampler

    silence = bytes(int(0.3 * rate) * 2)
    audio = silence + say("what is the current time", rate) + silence
    if rate != 24000:
        resampler = make_resampler(rate, 24000, "low-latency")
        audio = resampler.process(audio) + resampler.flush()
    assert hear(audio) == "what is the current time"
    assert hear(speech_wav("what is the current time", 24000).astype("<i2").tobytes()) == ""
    assert hear(bytes(48000)) == ""
    assert hear((np.random.default_rng(1).normal(0, 3000, 24000)).astype("<i2").tobytes()) == ""


def test_tools_file_errors_name_the_entry() -> None:
    good = parse_tool_settings(
        {
            "servers": {"a": {"command": ["x"]}, "b": {"url": "http://127.0.0.1:1/mcp"}},
            "access": {"tailscale:*": ["*"], "anonymous": ["t1"]},
        }
    )
    assert [s.transport for s in good.servers] == ["stdio", "http"]
    names = frozenset({"t1", "t2"})
    assert good.allowed("tailscale:ann@example.com", names) == names
    assert good.allowed("anonymous", names) == {"t1"}
    assert good.allowed("token:x", names) == set()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"servers": {"a": {}}}, "exactly one of command"),
        ({"servers": {"a": {"url": "ftp://x"}}}, "http:// or https://"),
        ({"servers": {"a": {"command": []}}}, "command must be a list"),
        ({"servers": {"a": {"command": ["x"], "secret": 1}}}, "unknown key 'secret'"),
        ({"access": {"x": "t1"}}, "must be a list of tool names"),
        ({"tools": {}}, "unknown table 'tools'"),
    ]
    for bad, words in cases:
        with pytest.raises(ToolSettingsError, match=words):
            parse_tool_settings(bad, "tools.toml")
