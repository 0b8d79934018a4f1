"""Property-based: random and hostile frames never crash the relay, each gets an answer, and a well-behaved session
beside them is unaffected. The number of examples is bounded for the default run; `PROPERTY_EXAMPLES=2000
./run-tests tests/test_hostile_properties.py` runs more."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.bounds import SessionBounds
from relay.metrics import RelayMetrics
from relay.policy import SessionPolicy
from relay.protocol import CLIENT_EVENTS
from relay.session_state import SessionState
from tests.test_access import next_event, opened
from tests.test_hostile_events import SESSION_CREATED
from tests.test_limits import ask_for_a_text_reply

pytestmark = pytest.mark.invalid_client_events

EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "60"))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
rates = st.one_of(
    st.integers(min_value=-5, max_value=10**7), st.sampled_from([True, 8000.5, "48000", None, 192001])
)


@st.composite
def event_objects(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": draw(st.sampled_from([*CLIENT_EVENTS, "session.hack", ""]) | st.text(max_size=20))
    }
    if draw(st.booleans()):
        event["event_id"] = draw(st.text(max_size=30) | st.integers())
    if event["type"] == "input_audio_buffer.append" or draw(st.booleans()):
        event["audio"] = draw(st.binary(max_size=600).map(lambda b: base64.b64encode(b).decode()) | scalars)
    if event["type"] == "session.update" or draw(st.booleans()):
        event["session"] = draw(
            st.fixed_dictionaries(
                {
                    "type": st.sampled_from(["realtime", "transcription", 5]),
                    "audio": st.fixed_dictionaries(
                        {
                            "input": st.fixed_dictionaries(
                                {
                                    "format": st.fixed_dictionaries(
                                        {"type": st.just("audio/pcm"), "rate": rates}
                                    )
                                }
                            )
                            | json_values,
                            "output": json_values,
                        }
                    )
                    | json_values,
                }
            )
            | json_values
        )
    if draw(st.booleans()):
        event["response"] = draw(json_values)
    return event


def _nested(depth: int) -> str:
    return '{"type":"session.update","session":' + '{"a":' * depth + "1" + "}" * depth + "}"


hostile_texts = st.one_of(
    event_objects().map(json.dumps),
    event_objects().map(lambda e: json.dumps(e)[:-1] + ',"type":"session.update"}'),  # a duplicate key
    st.text(max_size=200),  # not JSON, or JSON of the wrong shape
    json_values.map(json.dumps),
    st.integers(min_value=1, max_value=1100).map(_nested),  # deep JSON, past orjson's limit at the top
    st.just('{"type":"input_audio_buffer.append","audio":NaN}'),
    st.just(
        '{"type":"session.update","session":{"audio":{"input":{"format":{"type":"audio/pcm","rate":1e400}}}}}'
    ),
)
hostile_bytes = st.binary(max_size=3000)


def make_state(input_rate: int = 48000) -> SessionState:
    state = _new_state(input_rate)
    # The client's first server event must be session.created; until it arrives the relay holds its answers.
    state.from_upstream_text(json.dumps(SESSION_CREATED))
    return state


def _new_state(input_rate: int) -> SessionState:
    return SessionState(
        metrics=RelayMetrics(),
        policy=SessionPolicy(
            locked_fields=("instructions", "audio.output.voice"), allowed_models=("gpt-realtime",)
        ),
        resampler_quality="low-latency",
        bounds=SessionBounds(max_message_bytes=64 * 1024),
        input_rate=input_rate,
        output_rate=44100,
    )


def _answered(actions: Any) -> bool:
    upstream = list(actions.to_upstream)
    client = list(actions.to_client)
    if actions.more is not None:
        for step in actions.more:
            upstream.extend(step.to_upstream)
            client.extend(step.to_client)
    errors = [json.loads(t) for t in client]
    assert all(e["type"] == "error" and e["error"]["code"] for e in errors), errors
    for text in upstream:
        json.loads(text)  # everything forwarded is one JSON event
    # Accepted audio may be held by the resampler's filter delay: it goes up with the next frame or at the end.
    accepted_audio = actions.audio_from_client > 0 and not errors
    return bool(upstream) or len(errors) == 1 or accepted_audio


@settings(max_examples=EXAMPLES * 10, deadline=None)
@given(
    frames=st.lists(st.one_of(hostile_texts, hostile_bytes), min_size=1, max_size=8),
    rate=st.sampled_from([8000, 24000, 48000]),
)
def test_every_hostile_client_frame_gets_an_answer_and_never_raises(frames: list[Any], rate: int) -> None:
    state = make_state(rate)
    for frame in frames:
        actions = state.from_client_text(frame) if isinstance(frame, str) else state.from_client_bytes(frame)
        assert _answered(actions), frame
    state.finish()


upstream_events = st.one_of(
    st.builds(
        lambda t, body: json.dumps({"type": t, **body}),
        st.sampled_from(
            [
                "session.created",
                "session.updated",
                "response.output_audio.delta",
                "response.output_audio.done",
                "response.done",
                "response.created",
                "rate_limits.updated",
                "error",
                "conversation.item.input_audio_transcription.completed",
            ]
        ),
        st.dictionaries(
            st.sampled_from(["session", "delta", "response", "response_id", "rate_limits", "error", "usage"]),
            json_values,
            max_size=4,
        ),
    ),
    st.text(max_size=100),
)


@settings(max_examples=EXAMPLES * 10, deadline=None)
@given(events=st.lists(upstream_events, min_size=1, max_size=8))
def test_no_upstream_event_crashes_the_session(events: list[str]) -> None:
    state = make_state()
    for text in events:
        actions = state.from_upstream_text(text)
        for out in actions.to_client:
            assert isinstance(json.loads(out), dict)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=st.lists(st.one_of(hostile_texts, hostile_bytes), min_size=1, max_size=5))
async def test_hostile_frames_on_a_live_socket_leave_the_session_and_its_neighbour_working(
    relay: Any, frames: list[Any]
) -> None:
    async with opened(relay.ws_url + "?input_rate=16000") as ws, opened(relay.ws_url) as neighbour:
        assert (await next_event(ws))["type"] == "session.created"
        assert (await next_event(neighbour))["type"] == "session.created"
        for frame in frames:
            await ws.send(frame)
        # The hostile session still answers, in order, after every frame it sent...
        await ws.send(
            json.dumps({"type": "conversation.item.retrieve", "event_id": "probe", "item_id": "none"})
        )
        while True:
            event = await next_event(ws, timeout=10)
            if event.get("type") == "error" and (event["error"].get("event_id") == "probe"):
                break
            assert event.get("type") != "error" or event["error"].get("code") != "relay_internal_error", event
        assert ws.close_code is None
        # ...and the neighbour holds a whole turn.
        await ask_for_a_text_reply(neighbour)
        while (await next_event(neighbour, timeout=10))["type"] != "response.done":
            pass
