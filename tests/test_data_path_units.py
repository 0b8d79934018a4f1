"""The data path's bookkeeping at its exact bounds: what a slow client may have queued, how far a fast one may run
ahead, which frames need the exact duplicate-key check, close reasons, and PCM conversion at full scale.
"""

from __future__ import annotations

import asyncio
import json
from typing import cast

import numpy as np
import pytest

from relay.access import Denial
from relay.audio import make_resampler, validate_rate
from relay.audio.pcm import float_to_pcm16
from relay.bounds import CLIENT_BYTES_PER_SECOND, ClientBacklog, ClientPace, SessionBounds
from relay.client_outbox import MAX_CLOSE_REASON_BYTES, ClientOutbox, close_reason
from relay.config import Config
from relay.event_keys import duplicate_key, may_have_duplicate_keys
from relay.session_query import parse_session_query
from relay.wire.link import FrameLink, LinkOwner
from tests.test_access import admitted, make_door, req
from tests.test_session_state import make_state, sent


def test_the_client_buffer_overflows_one_byte_past_its_bound() -> None:
    backlog = ClientBacklog(max_bytes=100, max_audio_seconds=2.0)
    backlog.sent(60, 0.5)
    assert backlog.check(written=60, buffered=60) is None
    backlog.sent(100, 1.5)
    assert backlog.check(written=100, buffered=100) is None  # exactly 100 bytes and 2 s: within both bounds
    assert backlog.audio_seconds == 2.0
    over = backlog.check(written=101, buffered=101)
    assert over is not None and "RELAY_CLIENT_BUFFER_BYTES" in over
    # The client took the first 60 bytes: the first frame's half second left with them, the second's did not.
    assert backlog.check(written=101, buffered=41) is None and backlog.audio_seconds == 1.5
    backlog.sent(105, 0.6)
    over = backlog.check(written=105, buffered=45)
    assert over is not None and "RELAY_CLIENT_BUFFER_SECONDS" in over
    assert backlog.check(written=105, buffered=0) is None
    assert backlog.audio_seconds == 0.0  # all taken: nothing is waiting, never below nothing


def test_a_client_may_run_exactly_its_margin_ahead_of_real_time() -> None:
    now = [0.0]
    pace = ClientPace(ahead_seconds=2.0, burst_bytes=1000, clock=lambda: now[0])
    pace.received(100, 1.5)
    pace.received(100, 0.5)
    assert pace.wait_before() == 0.0  # 2 s ahead: exactly the margin
    pace.received(100, 0.25)
    assert pace.wait_before() == pytest.approx(0.25)
    now[0] = 1.0
    assert pace.wait_before() == 0.0  # real time caught up
    pace.received(CLIENT_BYTES_PER_SECOND // 2, 0.0)
    pace.received(CLIENT_BYTES_PER_SECOND // 2 + 1000, 0.0)
    assert pace.wait_before() == pytest.approx(1.0, rel=1e-3)  # bytes are paced too, past the burst


@pytest.mark.parametrize(
    ("event", "duplicated"),
    [
        (
            {"type": "session.update", "session": {"instructions": "x", "tools": [{"name": "a"}, "b", 3]}},
            None,
        ),
        ({"type": "response.create", "response": {"metadata": {"k": ["v", {"w": None}]}}}, None),
    ],
)
def test_a_frame_without_duplicates_needs_no_second_parse(
    event: dict[str, object], duplicated: str | None
) -> None:
    text = json.dumps(event)
    assert not may_have_duplicate_keys(text, json.loads(text))
    assert duplicate_key(text) is duplicated


def test_a_duplicated_key_is_found_at_any_depth() -> None:
    top = '{"type": "session.update", "session": {}, "type": "input_audio_buffer.append"}'
    assert may_have_duplicate_keys(top, json.loads(top)) and duplicate_key(top) == "type"
    nested = '{"type": "response.create", "response": {"tools": [{"name": "a", "name": "b"}]}}'
    assert may_have_duplicate_keys(nested, json.loads(nested)) and duplicate_key(nested) == "name"
    escaped = '{"type": "response.create", "response": {"instructions": "say \\"hi\\""}}'
    assert may_have_duplicate_keys(escaped, json.loads(escaped)) and duplicate_key(escaped) is None


def test_a_close_reason_is_cut_on_a_character_boundary() -> None:
    reason = "é" * 100  # two bytes each
    cut = close_reason(reason)
    assert cut == "é" * (MAX_CLOSE_REASON_BYTES // 2) and len(cut.encode()) <= MAX_CLOSE_REASON_BYTES
    assert close_reason("short") == "short"


def test_pcm_conversion_saturates_at_full_scale() -> None:
    samples = np.array([40000.0, -40000.0, 32767.4, -32768.6, 0.5, -1.5], dtype=np.float32)
    out = np.frombuffer(float_to_pcm16(samples), "<i2")
    assert out.tolist() == [32767, -32768, 32767, -32768, 0, -2]


def test_bad_rates_and_qualities_are_named() -> None:
    with pytest.raises(ValueError, match=r"^input sample rate must be between 8000 and 192000 Hz, got 7999$"):
        make_resampler(7999, 24000)
    with pytest.raises(ValueError, match=r"^output sample rate must be an integer number of Hz"):
        make_resampler(24000, 48000.0)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"^resampler quality must be one of low-latency, hq, vhq; got 'best'$"
    ):
        make_resampler(48000, 24000, "best")
    with pytest.raises(ValueError, match=r"^sample rate must be between"):
        validate_rate(5)


def test_tailscale_admission_answers_the_realtime_subprotocol() -> None:
    door = make_door(trust_tailscale_identity=True)
    request = req(("tailscale-user-login", "alice@example.com"), subprotocols=("realtime",))
    verdict = admitted(door.admit_websocket(request))
    assert (verdict.identity, verdict.method, verdict.subprotocol) == (
        "tailscale:alice@example.com",
        "tailscale",
        "realtime",
    )


def test_the_clients_own_rates_are_told_in_the_relay_field_only() -> None:
    state = make_state(input_rate=16000, output_rate=48000)
    formats = {
        "input": {"format": {"type": "audio/pcmu"}},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}},
    }
    created = {"type": "session.created", "session": {"audio": formats}}
    [shown] = sent(state.from_upstream_text(json.dumps(created)).to_client)
    # The spec fields stay as the upstream sent them; the client's own rates are in the relay's field.
    assert shown["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert shown["session"]["audio"]["output"]["format"]["rate"] == 24000
    assert shown["relay"]["output_rate"] == 48000


def test_other_query_parameters_do_not_hide_the_ones_the_relay_judges() -> None:
    refused = parse_session_query([("cache", "1"), ("model", "not-offered")], Config())
    assert isinstance(refused, Denial) and refused.reason == "model"
    query = parse_session_query([("v", "2"), ("input_rate", "48000")], Config())
    assert not isinstance(query, Denial) and query.rates == {"input_rate": 48000}


class _UnreadTransport:
    """A client transport whose peer reads nothing: every byte written stays buffered."""

    def __init__(self) -> None:
        self.buffered = 0

    def write(self, data: bytes | memoryview) -> None:
        self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


def _outbox(**bounds: float) -> tuple[ClientOutbox, list[str]]:
    overflows: list[str] = []
    link = FrameLink(
        cast(asyncio.Transport, _UnreadTransport()),
        cast(LinkOwner, None),
        masking=False,
        max_message=1 << 20,
        hard_limit=1 << 24,
        heartbeat=0,
        close_grace=1,
    )
    outbox = ClientOutbox(link, SessionBounds(**bounds), on_overflow=overflows.append)  # type: ignore[arg-type]
    return outbox, overflows


async def test_frames_without_audio_count_no_seconds_in_the_client_buffer() -> None:
    outbox, overflows = _outbox(client_buffer_seconds=1.0, client_buffer_bytes=10_000)
    assert all(outbox.put("{}") for _ in range(5))
    assert outbox.put("{}", audio_seconds=1.0) and overflows == []
    assert not outbox.put("{}", audio_seconds=0.5)
    assert overflows and "RELAY_CLIENT_BUFFER_SECONDS" in overflows[0]
    assert not outbox.put("{}") and not outbox.open  # a client found too slow gets nothing more
    outbox.abort()


async def test_a_client_buffer_past_its_bytes_refuses_the_frame() -> None:
    outbox, overflows = _outbox(client_buffer_bytes=12)
    assert outbox.put("x" * 10)  # 12 bytes with the frame's header
    assert not outbox.put("y") and overflows and "RELAY_CLIENT_BUFFER_BYTES" in overflows[0]
    outbox.abort()


def test_an_event_nested_too_deeply_to_check_is_refused_with_a_reason() -> None:
    depth = 1010  # within orjson's limit, past what the exact duplicate check can follow
    text = '{"type": "session.update", "session": ' + '{"a": ' * depth + '"say \\"hi\\""' + "}" * depth + "}"
    [error] = sent(make_state().from_client_text(text).to_client)
    assert error["error"]["code"] == "relay_bad_event"
    assert error["error"]["message"].startswith("The event is nested too deeply to be a Realtime event")
