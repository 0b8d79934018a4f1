"""Every limit and trust rule at its exact boundary and one step past it.

An off-by-one in a limit, or a trust rule that is one character too loose, is invisible to a test that stays far
from the edge. Each test here puts a value exactly on the boundary and one past it, over the public API of the
module that decides (the door, the session policy, the limits, the session state).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from relay.access import is_loopback_host
from relay.audio import MAX_RATE, MIN_RATE
from relay.auth import LOGIN_BURST, MAX_TOKEN_LENGTH, AttemptLimiter, LoginCookies, TokenSet, token_digest
from relay.bounds import PendingLedger, SessionBounds
from relay.limits import SessionSlots, SessionTimers, TokenBudget
from relay.metrics import RelayMetrics
from relay.policy import SessionPolicy
from relay.protocol import CLIENT_EVENT_TYPES
from relay.upstream import upstream_url
from tests.test_access import SECRET, TOKEN, WRONG, admitted, bearer, denied, make_door, req
from tests.test_session_state import make_state, pcm, sent

# -- proxy headers: believed only from a trusted peer ------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("10.0.0.0", True),
        ("10.0.0.255", True),  # the last address of the trusted network
        ("10.0.1.0", False),  # one past it
        ("9.255.255.255", False),  # one before it
        ("127.0.0.1", False),  # loopback is not trusted unless listed
    ],
)
def test_forwarded_host_counts_only_from_a_trusted_peer(peer: str, trusted: bool) -> None:
    door = make_door(access_tokens=(TOKEN,), forwarded_allow_ips=("10.0.0.0/24",))
    # A page on evil.example opens a WebSocket to the relay and claims, in X-Forwarded-Host, to be on its origin.
    forged = req(
        bearer(TOKEN),
        ("origin", "http://evil.example"),
        ("x-forwarded-host", "evil.example"),
        peer=peer,
        host="relay.test",
    )
    verdict = door.admit_websocket(forged)
    if trusted:
        admitted(verdict)
    else:
        denied(verdict, 403, "origin_not_allowed", "evil.example")
    # The Host header itself is always the relay's own origin.
    admitted(
        door.admit_websocket(
            req(bearer(TOKEN), ("origin", "http://relay.test"), peer=peer, host="relay.test")
        )
    )


def test_only_the_first_forwarded_host_counts() -> None:
    door = make_door(access_tokens=(TOKEN,))
    chain = ("x-forwarded-host", "relay.example, evil.example")
    admitted(door.admit_websocket(req(bearer(TOKEN), ("origin", "http://relay.example"), chain, host="x")))
    denied(
        door.admit_websocket(req(bearer(TOKEN), ("origin", "http://evil.example"), chain, host="x")),
        403,
        "origin_not_allowed",
    )


# -- host names that mean this machine ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost", True),
        ("localhost:8080", True),
        ("LOCALHOST:8080", True),
        ("app.localhost", True),
        ("a.b.localhost:9", True),
        ("127.0.0.1:8080", True),
        ("127.255.255.254", True),
        ("[::1]:8080", True),
        ("evillocalhost", False),
        ("evil-localhost", False),
        ("evil-localhost.example", False),
        ("localhost.evil.example", False),
        ("localhostx", False),
        ("128.0.0.1", False),
        ("", False),
        ("[bad", False),
    ],
)
def test_loopback_host_names(host: str, local: bool) -> None:
    assert is_loopback_host(host) is local


@pytest.mark.parametrize(("host", "served"), [("app.localhost:8080", True), ("evillocalhost:8080", False)])
def test_anonymous_use_follows_the_host_name(host: str, served: bool) -> None:
    """Without tokens, a page that rebinds its own DNS name to 127.0.0.1 must not be served."""
    door = make_door()
    verdict = door.admit_websocket(req(host=host))
    if served:
        assert admitted(verdict).method == "anonymous"
    else:
        denied(verdict, 403, "access_tokens_required", "for the host name")


# -- tokens and the failed-attempt limiter -----------------------------------------------------------------------


def test_a_token_of_the_longest_length_works_and_one_longer_does_not() -> None:
    longest = "t" * MAX_TOKEN_LENGTH
    too_long = "t" * (MAX_TOKEN_LENGTH + 1)
    tokens = TokenSet([token_digest(longest), token_digest(too_long)])
    assert tokens.identify(longest) is not None
    assert tokens.identify(too_long) is None
    assert tokens.identify("") is None


def test_a_cookie_of_the_longest_length_is_read_and_a_longer_one_is_not() -> None:
    cookies = LoginCookies(SECRET, 3600)
    # Signed cookies for identities of growing length (incompressible text, so the cookie grows with it).
    by_length: dict[int, tuple[str, str]] = {}
    for n in range(MAX_TOKEN_LENGTH - 200, MAX_TOKEN_LENGTH):
        identity = base64.b64encode(hashlib.shake_256(b"identity").digest(n)).decode()[:n]
        by_length.setdefault(len(issued := cookies.issue(identity)), (issued, identity))
    at_limit, identity = by_length[MAX_TOKEN_LENGTH]
    assert cookies.verify(at_limit) == identity
    longer, _ = by_length[min(k for k in by_length if k > MAX_TOKEN_LENGTH)]
    assert cookies.verify(longer) is None  # authentic, but longer than any cookie the relay reads
    assert cookies.verify("") is None


def test_the_burst_of_failed_attempts_is_exact() -> None:
    now = [0.0]
    limiter = AttemptLimiter(burst=LOGIN_BURST, refill_seconds=60.0, clock=lambda: now[0])
    for _ in range(LOGIN_BURST - 1):
        limiter.record_failure("192.0.2.1")
    assert limiter.retry_after("192.0.2.1") is None  # one attempt left
    limiter.record_failure("192.0.2.1")
    assert limiter.retry_after("192.0.2.1") == 60  # the burst is spent: one attempt per 60 s
    now[0] = 30.0
    assert limiter.retry_after("192.0.2.1") == 30
    now[0] = 60.0
    assert limiter.retry_after("192.0.2.1") is None


def test_the_door_refuses_the_attempt_after_the_burst_even_with_the_right_token() -> None:
    door = make_door(access_tokens=(TOKEN,), clock=lambda: 0.0)
    for _ in range(LOGIN_BURST - 1):
        denied(door.login(req(client="198.51.100.1"), WRONG), 401, "invalid_token")
    # The burst's last attempt is still judged on its token.
    admitted(door.login(req(client="198.51.100.1"), TOKEN))
    denied(door.login(req(client="198.51.100.1"), WRONG), 401, "invalid_token")
    denied(door.login(req(client="198.51.100.1"), TOKEN), 429, "too_many_attempts")


# -- the daily budget, session slots and timers ------------------------------------------------------------------


def _noon() -> float:
    return dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC).timestamp()


def test_the_budget_is_spent_exactly_at_its_size() -> None:
    budget = TokenBudget(100, clock=_noon)
    assert budget.spend("a", 99) is None
    assert budget.denial("a") is None
    ended = budget.spend("a", 1)  # exactly 100 of 100
    assert ended is not None and "RELAY_DAILY_TOKEN_BUDGET" in ended
    denial = budget.denial("a")
    assert denial is not None and denial.status == 429 and denial.reason == "token_budget"


def test_a_spent_budget_is_noticed_without_new_spending() -> None:
    budget = TokenBudget(100, clock=_noon)
    budget.spend("a", 150)
    assert budget.spend("a", 0) is not None
    assert budget.exhausted("a") and not budget.exhausted("b")


def test_slots_are_refused_exactly_at_the_limits() -> None:
    slots = SessionSlots(max_sessions=2, max_per_identity=1)
    assert slots.acquire("a") is None
    per_identity = slots.acquire("a")
    assert per_identity is not None and per_identity.reason == "identity_sessions"
    assert slots.acquire("b") is None
    full = slots.acquire("c")
    assert full is not None and full.reason == "capacity"
    slots.release("b")
    assert slots.acquire("c") is None


def test_timers_run_out_exactly_at_their_length() -> None:
    timers = SessionTimers(max_session_seconds=60, idle_timeout_seconds=10, started=1000.0)
    assert timers.check(1009.999, 1000.0) is None
    idle = timers.check(1010.0, 1000.0)
    assert idle is not None and idle.setting == "RELAY_IDLE_TIMEOUT_SECONDS"
    assert timers.check(1059.999, 1059.0) is None
    long = timers.check(1060.0, 1059.0)
    assert long is not None and long.setting == "RELAY_MAX_SESSION_SECONDS"
    assert timers.seconds_to_next_check(1005.0, 1000.0) == pytest.approx(5.0)
    assert timers.seconds_to_next_check(1058.0, 1057.0) == pytest.approx(2.0)
    assert timers.seconds_to_next_check(2000.0, 1000.0) == 0.0


# -- rates and message sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "accepted"),
    [
        (MIN_RATE, True),
        (MIN_RATE - 1, False),
        (MAX_RATE, True),
        (MAX_RATE + 1, False),
        (True, False),  # JSON true is not a rate, though Python counts it as 1
        (48000.0, False),
        ("48000", False),
    ],
)
def test_declared_rate_boundaries(rate: Any, accepted: bool) -> None:
    state = make_state()
    update = {
        "type": "session.update",
        "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": rate}}}},
    }
    actions = state.from_client_text(json.dumps(update))
    if accepted:
        [forwarded] = sent(actions.to_upstream)
        assert forwarded["session"]["audio"]["input"]["format"]["rate"] == 24000
        assert actions.to_client == [] and state.input_rate == rate
    else:
        assert actions.to_upstream == []
        [error] = sent(actions.to_client)
        assert error["error"]["code"] == "relay_bad_audio"
        assert error["error"]["param"] == "session.audio.input.format.rate"
        assert state.input_rate == 24000


def _limit_refused(actions: Any) -> bool:
    return [e["error"]["code"] for e in sent(actions.to_client)] == ["relay_limit_exceeded"]


def test_text_frame_exactly_at_the_size_limit_passes_and_one_byte_more_does_not() -> None:
    frame = json.dumps({"type": "conversation.item.create", "pad": ""})
    limit = len(frame) + 10
    state = make_state(bounds=SessionBounds(max_message_bytes=limit))
    at_limit = json.dumps({"type": "conversation.item.create", "pad": "x" * 10})
    assert len(at_limit) == limit
    assert state.from_client_text(at_limit).to_upstream == [at_limit]
    over = json.dumps({"type": "conversation.item.create", "pad": "x" * 11})
    actions = state.from_client_text(over)
    assert actions.to_upstream == [] and _limit_refused(actions)


def test_binary_frame_exactly_at_the_size_limit_passes_and_two_bytes_more_do_not() -> None:
    state = make_state(bounds=SessionBounds(max_message_bytes=960))
    [append] = sent(state.from_client_bytes(b"\1\0" * 480).to_upstream)
    assert base64.b64decode(append["audio"]) == b"\1\0" * 480
    actions = state.from_client_bytes(b"\1\0" * 481)
    assert actions.to_upstream == [] and _limit_refused(actions)
    # One byte more is refused for its size before its odd length is looked at.
    assert _limit_refused(state.from_client_bytes(b"\0" * 961))


# -- locked session fields ---------------------------------------------------------------------------------------

#: The fields of `response.create`'s `response` that override the session for one response (GA protocol).
RESPONSE_OVERRIDES = (
    "instructions",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "audio.output.voice",
    "audio.output.format",
    "audio.output.speed",
    "output_modalities",
)


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    node: Any = value
    for part in reversed(dotted.split(".")):
        node = {part: node}
    return dict(node)


@pytest.mark.parametrize("field", RESPONSE_OVERRIDES)
def test_a_locked_field_cannot_be_overridden_for_one_response(field: str) -> None:
    policy = SessionPolicy(locked_fields=(field,))
    refusal = policy.check({"type": "response.create", "response": _nested(field, "x")})
    assert refusal is not None and refusal.code == "relay_policy_violation"
    assert refusal.param == f"response.{field}"
    refusal = policy.check({"type": "session.update", "session": _nested(field, "x")})
    assert refusal is not None and refusal.param == f"session.{field}"
    # Another per-response field still passes.
    other = "temperature" if field != "temperature" else "metadata"
    assert policy.check({"type": "response.create", "response": {other: 1}}) is None


def test_a_lock_on_a_nested_field_leaves_its_siblings_free() -> None:
    policy = SessionPolicy(locked_fields=("audio.output.voice",))
    assert policy.check({"type": "session.update", "session": _nested("audio.output.speed", 1.2)}) is None
    assert policy.check({"type": "session.update", "session": _nested("audio.input.format", {})}) is None
    # Replacing an object on the lock's path would drop the locked value with it.
    for replaced in ({"audio": "ash"}, {"audio": {"output": None}}):
        refusal = policy.check({"type": "session.update", "session": replaced})
        assert refusal is not None and refusal.param == "session.audio.output.voice", replaced
    refusal = policy.check({"type": "session.update", "session": _nested("audio.output.voice", "ash")})
    assert refusal is not None and refusal.param == "session.audio.output.voice"


def test_a_lock_on_a_parent_covers_everything_under_it() -> None:
    policy = SessionPolicy(locked_fields=("audio.output",))
    refusal = policy.check({"type": "session.update", "session": _nested("audio.output.voice", "ash")})
    assert refusal is not None and refusal.param == "session.audio.output"
    assert policy.check({"type": "session.update", "session": _nested("audio.input.format", {})}) is None


def test_every_lock_is_checked_not_only_the_first() -> None:
    policy = SessionPolicy(locked_fields=("instructions", "tools", "audio.output.voice"))
    refusal = policy.check({"type": "session.update", "session": _nested("audio.output.voice", "ash")})
    assert refusal is not None and refusal.param == "session.audio.output.voice"
    refusal = policy.check({"type": "response.create", "response": {"tools": []}})
    assert refusal is not None and refusal.param == "response.tools"


def test_locks_do_not_refuse_other_events_or_odd_shapes() -> None:
    policy = SessionPolicy(locked_fields=("instructions",))
    assert policy.check({"type": "conversation.item.create", "item": {"instructions": "x"}}) is None
    assert policy.check({"type": "session.update", "session": "instructions"}) is None
    assert policy.check({"type": "response.create"}) is None


# -- the event types the relay forwards --------------------------------------------------------------------------

#: Client events of the GA Realtime protocol, by object, as the API reference groups them.
GA_CLIENT_EVENTS = tuple(
    f"{obj}.{action}"
    for obj, actions in {
        "session": "update",
        "input_audio_buffer": "append commit clear",
        "conversation.item": "create retrieve truncate delete",
        "response": "create cancel",
        "output_audio_buffer": "clear",
    }.items()
    for action in actions.split()
)


def test_every_ga_client_event_passes_the_policy_and_nothing_else() -> None:
    assert set(GA_CLIENT_EVENTS) == CLIENT_EVENT_TYPES
    policy = SessionPolicy()
    for event_type in GA_CLIENT_EVENTS:
        assert policy.check({"type": event_type}) is None, event_type
    for legacy in ("response.audio.delta", "transcription_session.update", "session.created", ""):
        refusal = policy.check({"type": legacy})
        assert refusal is not None and refusal.param == "type", legacy


@pytest.mark.parametrize("event_type", GA_CLIENT_EVENTS)
def test_every_ga_client_event_is_counted_by_its_own_type(event_type: str) -> None:
    metrics = RelayMetrics()
    state = make_state(metrics=metrics)
    event: dict[str, Any] = {"type": event_type}
    if event_type == "input_audio_buffer.append":
        event["audio"] = base64.b64encode(pcm(480, 24000)).decode()
    actions = state.from_client_text(json.dumps(event))
    assert actions.to_client == [] and actions.to_upstream
    assert exported(metrics, "relay_events_total", direction="to_upstream", type=event_type) == 1


# -- what the metrics count --------------------------------------------------------------------------------------


def exported(metrics: RelayMetrics, name: str, /, **labels: str) -> float:
    """The value of one exported sample; a sample that is not exported fails the test."""
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"{name}{labels} is not exported")


def test_a_refused_event_is_not_counted_as_forwarded() -> None:
    metrics = RelayMetrics()
    state = make_state(metrics=metrics, policy=SessionPolicy(locked_fields=("instructions",)))
    actions = state.from_client_text(json.dumps({"type": "session.update", "session": {"instructions": "x"}}))
    assert actions.to_upstream == []
    assert exported(metrics, "relay_events_total", direction="to_upstream", type="session.update") == 0
    assert exported(metrics, "relay_errors_total", code="relay_policy_violation") == 1
    # Bad audio is refused too, and not counted as an append.
    state.from_client_bytes(b"\0\0\0")
    assert (
        exported(metrics, "relay_events_total", direction="to_upstream", type="input_audio_buffer.append")
        == 0
    )


def test_payload_bytes_are_counted_as_bytes_not_characters() -> None:
    metrics = RelayMetrics()
    state = make_state(metrics=metrics)
    text = json.dumps(
        {"type": "session.update", "session": {"type": "realtime", "instructions": "Grüß Gott, ☃"}},
        ensure_ascii=False,
    )
    assert len(text.encode()) > len(text)
    state.from_client_text(text)
    assert exported(metrics, "relay_bytes_total", direction="to_upstream") == len(text.encode())
    reply = json.dumps({"type": "response.output_text.delta", "delta": "naïve ☃"}, ensure_ascii=False)
    before = exported(metrics, "relay_bytes_total", direction="to_client")
    state.from_upstream_text(reply)
    assert exported(metrics, "relay_bytes_total", direction="to_client") - before == len(reply.encode())
    state.from_client_bytes(b"\0" * 10)
    assert exported(metrics, "relay_bytes_total", direction="to_upstream") == len(text.encode()) + 10


# -- the upstream URL --------------------------------------------------------------------------------------------


def test_the_model_appears_once_in_the_upstream_url() -> None:
    url = upstream_url("wss://api.example/v1/realtime?model=old&region=eu&model=older", "gpt-realtime")
    assert url == "wss://api.example/v1/realtime?region=eu&model=gpt-realtime"
    assert upstream_url("ws://127.0.0.1:9/v1/realtime", "m 1") == "ws://127.0.0.1:9/v1/realtime?model=m+1"


# -- what is held while the upstream connects --------------------------------------------------------------------


def test_held_events_are_bounded_by_count_and_bytes_exactly() -> None:
    ledger = PendingLedger(max_events=3, max_bytes=100)
    assert ledger.has_room(10_000)  # a first event always fits, however large
    ledger.add(40)
    assert ledger.has_room(60) and not ledger.has_room(61)  # 40 + 60 is exactly the byte bound
    ledger.add(30)
    assert (ledger.events, ledger.bytes) == (2, 70)
    assert ledger.has_room(30) and not ledger.has_room(31)
    ledger.add(1)
    assert not ledger.has_room(0)  # three events is the count bound


def test_a_model_named_in_the_session_must_be_one_the_relay_offers() -> None:
    policy = SessionPolicy(allowed_models=("gpt-realtime", "gpt-realtime-mini"))
    refusal = policy.check({"type": "session.update", "session": {"model": "gpt-4o-realtime-preview"}})
    assert refusal is not None and refusal.param == "session.model"
    assert refusal.message.endswith("use one of: gpt-realtime, gpt-realtime-mini.")
    assert policy.check({"type": "session.update", "session": {"model": "gpt-realtime-mini"}}) is None
    for session in (None, "gpt-4o", {"voice": "ash"}):
        assert policy.check({"type": "session.update", "session": session}) is None
    assert SessionPolicy().check({"type": "session.update", "session": {"model": "anything"}}) is None
