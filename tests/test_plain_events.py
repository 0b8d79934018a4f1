"""The two events of every audio frame are judged from their text alone when they are written the usual way; these
tests hold that shortcut to the full parse: the same decision, the same counts, and nothing it must not let by."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.bounds import SessionBounds
from relay.metrics import RelayMetrics
from relay.session_state import SessionState
from tests.test_boundaries import exported
from tests.test_hostile_properties import EXAMPLES
from tests.test_session_state import make_state, sent

COMPACT = (",", ":")


def _twins(**kwargs: Any) -> tuple[SessionState, SessionState, RelayMetrics, RelayMetrics]:
    fast_metrics, slow_metrics = RelayMetrics(), RelayMetrics()
    return (
        make_state(metrics=fast_metrics, **kwargs),
        make_state(metrics=slow_metrics, **kwargs),
        fast_metrics,
        slow_metrics,
    )


def _counts(state: SessionState, metrics: RelayMetrics) -> tuple[Any, ...]:
    return (
        state.audio_seconds,
        state.tokens_used,
        state.turns,
        exported(metrics, "relay_bytes_total", direction="to_upstream"),
        exported(metrics, "relay_bytes_total", direction="to_client"),
        exported(metrics, "relay_events_total", direction="to_upstream", type="input_audio_buffer.append"),
        exported(metrics, "relay_events_total", direction="to_client", type="response.output_audio.delta"),
        exported(metrics, "relay_audio_seconds_total", direction="to_upstream"),
        exported(metrics, "relay_audio_seconds_total", direction="to_client"),
    )


@settings(max_examples=EXAMPLES * 5, deadline=None)
@given(audio=st.binary(max_size=30_000), spaced=st.booleans())
def test_an_sdk_append_is_decided_as_the_full_parse_decides_it(audio: bytes, spaced: bool) -> None:
    fast, slow, fast_metrics, slow_metrics = _twins(bounds=SessionBounds(audio_ahead_seconds=0.5))
    b64 = base64.b64encode(audio).decode()
    usual = json.dumps(
        {"type": "input_audio_buffer.append", "audio": b64}, separators=None if spaced else COMPACT
    )
    # The same event and length, keys the other way round: parsed in full.
    unusual = json.dumps(
        {"audio": b64, "type": "input_audio_buffer.append"}, separators=None if spaced else COMPACT
    )
    a, b = fast.from_client_text(usual), slow.from_client_text(unusual)
    assert (a.to_upstream == [usual]) == (
        b.to_upstream == [unusual]
    )  # forwarded as it came, or refused, alike
    assert [e["error"]["code"] for e in sent(a.to_client)] == [e["error"]["code"] for e in sent(b.to_client)]
    assert a.audio_from_client == b.audio_from_client
    assert _counts(fast, fast_metrics) == _counts(slow, slow_metrics)


def test_an_append_that_hides_a_second_event_is_not_taken_for_an_append() -> None:
    state = make_state()
    smuggled = '{"type":"input_audio_buffer.append","audio":"AAAA","type":"session.update","voice":"ash"}'
    [error] = sent(state.from_client_text(smuggled).to_client)
    assert error["error"]["code"] == "relay_bad_event"  # the duplicate key is found by the full check
    escaped = '{"type":"input_audio_buffer.append","audio":"AA\\u0041A"}'
    actions = state.from_client_text(escaped)
    assert actions.to_upstream == [
        escaped
    ]  # valid JSON with an escape: judged by the full parse, then forwarded


def test_appends_that_must_be_resampled_take_the_full_path() -> None:
    state = make_state(input_rate=48000)
    text = json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(1920)).decode()})
    [resampled] = state.from_client_text(text).to_upstream
    assert (
        800 < len(base64.b64decode(json.loads(resampled)["audio"])) <= 960
    )  # halved (less what the filter holds)


def _delta(response_id: str, audio: bytes, **extra: Any) -> str:
    event = {
        "type": "response.output_audio.delta",
        "event_id": "event_1",
        "response_id": response_id,
        "item_id": "item_1",
        "output_index": 0,
        "content_index": 0,
        **extra,
        "delta": base64.b64encode(audio).decode(),
    }
    return json.dumps(event, separators=COMPACT)


def _responding(state: SessionState) -> None:
    state.from_client_text('{"type":"response.create"}')
    state.from_upstream_text(json.dumps({"type": "response.created", "response": {"id": "resp_1"}}))


@settings(max_examples=EXAMPLES * 5, deadline=None)
@given(audio=st.binary(max_size=20_000), cut=st.booleans())
def test_an_api_delta_is_decided_as_the_full_parse_decides_it(audio: bytes, cut: bool) -> None:
    fast, slow, fast_metrics, slow_metrics = _twins()
    for state in (fast, slow):
        _responding(state)
        if cut:
            state.from_client_text('{"type":"response.cancel"}')
    usual = _delta("resp_1", audio)
    # The same event and length, its type moved after the audio: parsed in full.
    fields = json.loads(usual)
    unusual = json.dumps(
        {**{k: v for k, v in fields.items() if k != "type"}, "type": fields["type"]}, separators=COMPACT
    )
    a, b = fast.from_upstream_text(usual), slow.from_upstream_text(unusual)
    assert (a.to_client == [usual]) == (b.to_client == [unusual])
    assert (a.first_audio, a.audio_to_client) == (b.first_audio, b.audio_to_client)
    assert _counts(fast, fast_metrics) == _counts(slow, slow_metrics)


def test_deltas_that_must_be_resampled_or_read_carefully_take_the_full_path() -> None:
    state = make_state(output_rate=48000)
    _responding(state)
    [resampled] = state.from_upstream_text(_delta("resp_1", bytes(960))).to_client
    assert 1800 < len(base64.b64decode(json.loads(resampled)["delta"])) <= 1920  # doubled
    plain = make_state()
    _responding(plain)
    # A field before the audio with an escaped quote could fake a response id: read by the full parse instead.
    tricky = _delta("resp_1", bytes(4), item_id='x","response_id":"resp_2')
    actions = plain.from_upstream_text(tricky)
    assert actions.to_client == [tricky] and actions.first_audio  # the first audio of resp_1, as it really is
