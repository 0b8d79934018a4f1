"""The door's answers in the detail a client reads them: which credential counts, what a refusal carries, how
addresses and origins are compared, and what the failed-attempt limiter remembers.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from relay import protocol
from relay.access import (
    DENIAL_LOG_FILTER,
    Denial,
    DoorRequest,
    TrustedProxies,
    mark_denied,
    normalize_origin,
    refusal_page,
    startup_problem,
)
from relay.auth import AttemptLimiter, TokenSet, client_key
from relay.config import Config, ConfigError
from relay.limits import SessionSlots, SessionTimers, TokenBudget
from tests.test_access import TOKEN, WRONG, admitted, bearer, denied, make_door, req

# -- which credential counts -------------------------------------------------------------------------------------


def test_a_bearer_token_after_extra_spaces_still_counts() -> None:
    door = make_door(access_tokens=(TOKEN,))
    assert admitted(door.admit_websocket(req(("authorization", f"Bearer   {TOKEN} ")))).method == "token"
    assert admitted(door.admit_websocket(req(("authorization", f"bearer {TOKEN}")))).method == "token"
    denied(door.admit_websocket(req(("authorization", f"Basic {TOKEN}"))), 401, "missing_token")
    denied(door.admit_websocket(req(("authorization", "Bearer   "))), 401, "missing_token")


@pytest.mark.parametrize("offered", ["openai-insecure-api-key.", "x" * 40, "realtime"])
def test_a_subprotocol_that_carries_no_token_is_no_attempt(offered: str) -> None:
    door = make_door(access_tokens=(TOKEN,))
    denied(door.admit_websocket(req(subprotocols=(offered,))), 401, "missing_token")


def test_the_token_subprotocol_counts_and_realtime_is_answered() -> None:
    door = make_door(access_tokens=(TOKEN,))
    verdict = admitted(
        door.admit_websocket(req(subprotocols=("realtime", f"openai-insecure-api-key.{TOKEN}")))
    )
    assert (verdict.method, verdict.subprotocol) == ("token", "realtime")


def test_a_wrong_token_is_refused_with_the_bearer_challenge() -> None:
    door = make_door(access_tokens=(TOKEN,))
    refusal = denied(door.admit_websocket(req(bearer(WRONG))), 401, "invalid_token")
    assert refusal.headers == {"WWW-Authenticate": 'Bearer realm="realtime-relay", error="invalid_token"'}
    assert refusal.reason == "invalid_token"
    missing = denied(door.admit_websocket(req()), 401, "missing_token")
    assert missing.headers == {"WWW-Authenticate": 'Bearer realm="realtime-relay"'}


@pytest.mark.parametrize(
    ("settings", "simulated", "peer", "host"),
    [
        ({}, False, "127.0.0.1", "localhost:8080"),  # this machine
        ({"allow_anonymous": True}, False, "192.0.2.5", "relay.test"),  # opened to the network on purpose
        ({}, True, "192.0.2.5", "relay.test"),  # demo mode: no paid key at stake
    ],
)
def test_anonymous_admission_answers_the_realtime_subprotocol(
    settings: dict[str, Any], simulated: bool, peer: str, host: str
) -> None:
    door = make_door(simulated=simulated, **settings)
    verdict = admitted(door.admit_websocket(req(peer=peer, host=host, subprotocols=("realtime",))))
    assert (verdict.method, verdict.subprotocol) == ("anonymous", "realtime")
    assert verdict.identity == ("anonymous" if peer == "127.0.0.1" else f"anonymous@{peer}")
    assert door.describe(req(peer=peer, host=host))["required"] is False


def test_login_without_tokens_says_there_is_nothing_to_sign_in_with() -> None:
    refusal = denied(make_door().login(req(), TOKEN), 400, "login_not_configured")
    assert refusal.reason == "login_not_configured"


# -- what a refusal carries --------------------------------------------------------------------------------------


def test_a_refusal_body_has_the_openai_error_shape() -> None:
    denial = Denial(403, "origin_not_allowed", "Open the relay's own page.", "origin")
    assert denial.body() == {
        "error": {
            "type": "invalid_request_error",
            "code": "origin_not_allowed",
            "message": "Open the relay's own page.",
        }
    }
    page = refusal_page(Denial(403, "x", "<script>alert(1)</script>", "origin"))
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert page.startswith("<!doctype html>") and page.endswith("</body></html>")


def test_an_error_event_has_the_openai_shape() -> None:
    event = protocol.error_event("relay_bad_event", "Send JSON.")
    assert set(event) == {"type", "event_id", "error"} and event["type"] == "error"
    assert event["event_id"].startswith("event_") and len(event["event_id"]) == len("event_") + 21
    assert event["error"] == {
        "type": "invalid_request_error",
        "code": "relay_bad_event",
        "message": "Send JSON.",
        "param": None,
        "event_id": None,
    }


@pytest.mark.parametrize(("length", "shown"), [(120, 120), (121, 120)])
def test_a_foreign_origin_is_shown_back_clipped_and_printable(length: int, shown: int) -> None:
    door = make_door(access_tokens=(TOKEN,))
    origin = ("http://" + "a" * 200)[:length]
    message = denied(
        door.admit_websocket(req(bearer(TOKEN), ("origin", origin))), 403, "origin_not_allowed"
    ).message
    assert f"pages at {origin[:shown]}{'…' if length > shown else ''};" in message
    message = denied(
        door.admit_websocket(req(bearer(TOKEN), ("origin", "http://evil\x07.example"))),
        403,
        "origin_not_allowed",
    ).message
    assert "http://evil?.example" in message


@pytest.mark.parametrize(("length", "clipped"), [(60, False), (61, True)])
def test_a_refused_host_name_is_shown_clipped(length: int, clipped: bool) -> None:
    host = ("h" * 100)[:length]
    message = denied(make_door().admit_websocket(req(host=host)), 403, "access_tokens_required").message
    assert f"for the host name {host[:60]}{'…' if clipped else ''}. " in message
    message = denied(make_door().admit_websocket(req(host=None)), 403, "access_tokens_required").message
    assert "for the host name (none). " in message


def test_the_spurious_handshake_error_is_dropped_only_after_a_denial() -> None:
    incomplete = logging.LogRecord(
        "uvicorn.error",
        logging.ERROR,
        __file__,
        1,
        "ASGI callable returned without completing handshake.",
        None,
        None,
    )
    other = logging.LogRecord(
        "uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application", None, None
    )

    def after_denial() -> tuple[bool, bool]:
        mark_denied()
        return DENIAL_LOG_FILTER.filter(incomplete), DENIAL_LOG_FILTER.filter(other)

    assert contextvars.copy_context().run(after_denial) == (False, True)
    assert contextvars.Context().run(DENIAL_LOG_FILTER.filter, incomplete) is True


# -- addresses and origins ---------------------------------------------------------------------------------------


def test_trusted_proxies_by_address_network_name_or_star() -> None:
    listed = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "proxy.internal"])
    assert "127.0.0.1" in listed and "10.200.0.1" in listed and "proxy.internal" in listed
    assert "127.0.0.2" not in listed and "11.0.0.1" not in listed and "other.internal" not in listed
    assert None not in listed and "" not in listed
    star = TrustedProxies(["*"])
    assert "203.0.113.5" in star and "anything" in star
    assert None not in star and "" not in star


@pytest.mark.parametrize(
    ("value", "origin"),
    [
        ("http://relay.test:80", "http://relay.test"),
        ("http://relay.test:443", "http://relay.test:443"),
        ("https://relay.test:443", "https://relay.test"),
        ("https://relay.test:80", "https://relay.test:80"),
        ("HTTP://Relay.Test:8080/", "http://relay.test:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("ftp://relay.test", None),
        ("http://", None),
        ("http://relay.test:99999", None),
        ("", None),
        ("null", None),
    ],
)
def test_origins_are_compared_in_their_normal_form(value: str, origin: str | None) -> None:
    assert normalize_origin(value) == origin


def test_client_keys_name_what_the_limiter_counts() -> None:
    assert client_key(None) == client_key("") == "unknown"
    assert client_key("not-an-ip") == "not-an-ip"
    assert client_key("192.0.2.7") == "192.0.2.7"
    door = make_door(allow_anonymous=True)
    no_address = DoorRequest(peer="192.0.2.7", client=None, scheme="ws", headers=(("host", "relay.test"),))
    assert admitted(door.admit_websocket(no_address)).identity == "anonymous@unknown"


# -- the failed-attempt limiter ----------------------------------------------------------------------------------


def test_the_limiter_says_to_wait_at_least_a_second_and_forgets_recovered_clients() -> None:
    now = [0.0]
    limiter = AttemptLimiter(burst=1, refill_seconds=60.0, clock=lambda: now[0])
    limiter.record_failure("192.0.2.1")
    limiter.record_failure("192.0.2.2")
    assert len(limiter) == 2
    now[0] = 59.5
    assert limiter.retry_after("192.0.2.1") == 1
    now[0] = 60.0
    assert limiter.retry_after("192.0.2.1") is None
    assert len(limiter) == 1  # fully recovered: nothing left to remember about it
    now[0] = 120.0
    assert limiter.retry_after("192.0.2.2") is None and len(limiter) == 0


def test_the_limiter_refills_by_elapsed_time_only() -> None:
    now = [0.0]
    limiter = AttemptLimiter(burst=2, refill_seconds=10.0, clock=lambda: now[0])
    limiter.record_failure("192.0.2.1")
    limiter.record_failure("192.0.2.1")
    now[0] = 5.0
    assert limiter.retry_after("192.0.2.1") == 5
    now[0] = 8.0  # the wait runs from the failure, not from the last question
    assert limiter.retry_after("192.0.2.1") == 2


# -- the operator's settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "refused"), [(15, True), (16, False)])
def test_the_cookie_secret_must_be_sixteen_characters(length: int, refused: bool) -> None:
    # Distinct characters, so that only the length decides (a repeated one is refused as predictable).
    problem = startup_problem(Config(cookie_secret="abcdefghijklmnopqrstuvwxyz"[:length]))
    assert (problem is not None and "RELAY_COOKIE_SECRET" in problem) is refused


def test_a_tokens_file_is_read_as_utf8_and_an_unreadable_one_is_named(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_bytes("tök-ünïcode-0123456789\n".encode())
    tokens = TokenSet.from_config(Config(access_tokens_file=path))
    assert tokens.identify("tök-ünïcode-0123456789") is not None
    path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ConfigError) as raised:
        TokenSet.from_config(Config(access_tokens_file=path))
    assert str(raised.value) == f"RELAY_ACCESS_TOKENS_FILE={str(path)!r} cannot be read (UnicodeDecodeError)"


# -- how long, in words ------------------------------------------------------------------------------------------


def test_waits_are_told_in_hours_and_minutes_or_minutes_and_seconds() -> None:
    at = dt.datetime(2026, 3, 1, 22, 29, 40, tzinfo=dt.UTC).timestamp()
    budget = TokenBudget(1, clock=lambda: at)
    budget.spend("a", 1)
    denial = budget.denial("a")
    assert (
        denial is not None and "in 1 h 30 min;" in denial.message and denial.headers["Retry-After"] == "5420"
    )
    idle = SessionTimers(max_session_seconds=3600, idle_timeout_seconds=90, started=0).check(90, 0)
    assert idle is not None and "idle for 1 min 30 s without" in idle.message
    short = SessionTimers(max_session_seconds=45, idle_timeout_seconds=300, started=0).check(45, 40)
    assert short is not None and "allows, 45 s (" in short.message


def test_the_budget_resets_at_midnight_and_never_says_zero_seconds() -> None:
    almost = dt.datetime(2026, 3, 1, 23, 59, 59, 500000, tzinfo=dt.UTC).timestamp()
    assert TokenBudget(1, clock=lambda: almost).seconds_until_reset() == 1
    noon = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC).timestamp()
    assert TokenBudget(1, clock=lambda: noon).seconds_until_reset() == 12 * 3600


def test_an_identity_without_sessions_has_none_open() -> None:
    slots = SessionSlots(max_sessions=5, max_per_identity=2)
    assert slots.count("a") == 0
    slots.acquire("a")
    assert slots.count("a") == 1 and slots.count("b") == 0


def test_the_day_ends_at_midnight_utc_whatever_the_machines_time_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    evening = dt.datetime(2026, 3, 1, 20, 0, tzinfo=dt.UTC).timestamp()  # already 2 March in Tokyo
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert TokenBudget(1, clock=lambda: evening).seconds_until_reset() == 4 * 3600
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("headers", "subprotocols", "where"),
    [
        (
            (("authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {WRONG}")),
            (),
            "more than one Authorization header",
        ),
        (
            (),
            (f"openai-insecure-api-key.{TOKEN}", f"openai-insecure-api-key.{WRONG}"),
            "more than one openai-insecure-api-key subprotocol",
        ),
        (
            (("authorization", f"Bearer {TOKEN}"),),
            (f"openai-insecure-api-key.{WRONG}",),
            "the Authorization header and the openai-insecure-api-key subprotocol",
        ),
    ],
)
def test_two_different_tokens_are_refused_and_the_places_named(
    headers: tuple[tuple[str, str], ...], subprotocols: tuple[str, ...], where: str
) -> None:
    door = make_door(access_tokens=(TOKEN, WRONG))
    refusal = door.admit_websocket(req(*headers, subprotocols=subprotocols))
    assert isinstance(refusal, Denial) and (refusal.status, refusal.code) == (401, "conflicting_credentials")
    assert f"(in {where})" in refusal.message
    assert refusal.message.endswith(
        "as `Authorization: Bearer <token>` or as the subprotocol `openai-insecure-api-key.<token>`."
    )
    assert refusal.reason == "conflicting_credentials"
    assert refusal.headers == {"WWW-Authenticate": 'Bearer realm="realtime-relay", error="invalid_request"'}
    # The same token twice is one credential.
    same = req(("authorization", f"Bearer {TOKEN}"), subprotocols=(f"openai-insecure-api-key.{TOKEN}",))
    assert admitted(door.admit_websocket(same)).method == "token"


def test_connection_settings_that_cannot_work_stop_the_start() -> None:
    problem = startup_problem(Config(max_sessions=50, max_connections=51))
    assert problem is not None and "RELAY_MAX_CONNECTIONS=51" in problem


def test_a_refund_can_bring_the_days_spending_back_to_zero() -> None:
    budget = TokenBudget(100, clock=lambda: dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC).timestamp())
    budget.spend("a", 10)
    budget.spend("a", -10)
    assert budget.spent("a") == 0
    budget.spend("a", -5)
    assert budget.spent("a") == 0


@pytest.mark.parametrize(
    ("peer", "client", "headers", "local"),
    [
        ("127.0.0.1", "127.0.0.1", (), True),  # straight from this machine
        ("192.0.2.9", "192.0.2.9", (), False),
        (
            "127.0.0.1",
            "127.0.0.1",
            (("x-forwarded-for", "127.0.0.1"),),
            True,
        ),  # the local proxy, for this machine
        (
            "127.0.0.1",
            "127.0.0.1",
            (("x-real-ip", "127.0.0.1"),),
            False,
        ),  # proxied, but no client address given
        (
            "127.0.0.2",
            "127.0.0.1",
            (("x-forwarded-for", "127.0.0.1"),),
            False,
        ),  # from a peer that is not trusted
        (
            "127.0.0.1",
            "203.0.113.4",
            (("x-forwarded-for", "203.0.113.4"),),
            False,
        ),  # forwarded for someone else
        ("127.0.0.1", "127.0.0.1", (("tailscale-funnel-request", "?1"),), False),  # from the public internet
    ],
)
def test_which_requests_come_from_this_machine(
    peer: str, client: str, headers: tuple[tuple[str, str], ...], local: bool
) -> None:
    door = make_door()
    request = DoorRequest(peer=peer, client=client, scheme="http", headers=(("host", "localhost"), *headers))
    assert door.is_local(request) is local
