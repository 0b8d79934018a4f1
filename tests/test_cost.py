"""Cost in money: known usage gives the known cost to the cent, the price table follows configuration, the cost
reaches the Prometheus counter, the history and the session_closed line, and the daily money budget stops a
session as the token budget does."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from relay.config import ConfigError, load_config
from relay.conversations.budget import CostBudget
from relay.conversations.pricing import DEFAULT_PRICES, PRICES_READ_ON, PriceTable, parse_prices
from relay.fake.server import FakeRealtimeServer
from tests.conftest import ProxiedRelay
from tests.test_access import OTHER_TOKEN, TOKEN, next_event, opened, refused, rejections
from tests.test_limits import ask_for_a_text_reply, bearer, limit_error, until_closed

TABLE = PriceTable(DEFAULT_PRICES)


def _usage(
    *, text_in: int, audio_in: int, cached_text: int, cached_audio: int, text_out: int, audio_out: int
) -> dict[str, Any]:
    return {
        "total_tokens": text_in + audio_in + text_out + audio_out,
        "input_tokens": text_in + audio_in,
        "output_tokens": text_out + audio_out,
        "input_token_details": {
            "text_tokens": text_in,
            "audio_tokens": audio_in,
            "image_tokens": 0,
            "cached_tokens": cached_text + cached_audio,
            "cached_tokens_details": {
                "text_tokens": cached_text,
                "audio_tokens": cached_audio,
                "image_tokens": 0,
            },
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


def test_known_usage_costs_the_known_amount_to_the_cent() -> None:
    usage = _usage(
        text_in=10_000, audio_in=100_000, cached_text=0, cached_audio=20_000, text_out=2_000, audio_out=50_000
    )
    # gpt-realtime: 80k fresh audio × $32/M + 20k cached × $0.40/M + 10k text × $4/M + 2k × $16/M + 50k × $64/M
    assert TABLE.response_cost("gpt-realtime", usage) == Decimal("5.84")
    # A dated snapshot takes its family's price; the mini family its own.
    assert TABLE.response_cost("gpt-realtime-2025-08-28", usage) == Decimal("5.84")
    # gpt-realtime-mini: 80k × $10/M + 20k × $0.30/M + 10k × $0.60/M + 2k × $2.40/M + 50k × $20/M
    assert TABLE.response_cost("gpt-realtime-mini-2025-10-06", usage) == Decimal("1.8168")
    assert TABLE.response_cost("some-unknown-model", usage) is None


def test_cached_tokens_are_counted_inside_each_kind() -> None:
    """The API's example usage: 313 text tokens of which 256 cached, 476 audio of which 384 cached."""
    usage = _usage(text_in=313, audio_in=476, cached_text=256, cached_audio=384, text_out=9, audio_out=23)
    expected = (57 * 4 + 256 * Decimal("0.4") + 92 * 32 + 384 * Decimal("0.4") + 9 * 16 + 23 * 64) / 10**6
    assert TABLE.response_cost("gpt-realtime", usage) == expected == Decimal("0.005044")


def test_transcription_costs_by_tokens_or_by_duration() -> None:
    tokens = {"type": "tokens", "input_tokens": 600, "output_tokens": 50, "total_tokens": 650,
              "input_token_details": {"text_tokens": 0, "audio_tokens": 600}}  # fmt: skip
    assert TABLE.transcription_cost("gpt-4o-transcribe", tokens) == Decimal("0.002")
    assert TABLE.transcription_cost("whisper-1", {"type": "duration", "seconds": 90}) == Decimal("0.009")


def test_prices_come_from_configuration_over_the_dated_defaults() -> None:
    assert PRICES_READ_ON == "2026-12-02"
    table = parse_prices('{"gpt-realtime": {"audio_out": 100}, "my-model": {"text_in": 1}}')
    usage = _usage(text_in=0, audio_in=0, cached_text=0, cached_audio=0, text_out=0, audio_out=1_000_000)
    assert table.response_cost("gpt-realtime", usage) == Decimal("100")
    assert (
        table.response_cost(
            "my-model",
            _usage(text_in=10**6, audio_in=0, cached_text=0, cached_audio=0, text_out=0, audio_out=0),
        )
        == 1
    )
    for bad, says in (
        ("[1]", "JSON object"),
        ('{"gpt-realtime": {"audio_outt": 1}}', "unknown price field"),
        ('{"gpt-realtime": {"audio_out": -1}}', "0 or more"),
        ("{", "expected JSON"),
    ):
        with pytest.raises(ConfigError, match=says):
            load_config({"RELAY_PRICES": bad})


async def test_the_money_budget_is_per_identity_per_utc_day() -> None:
    now = [dt.datetime(2026, 12, 2, 23, 0, tzinfo=dt.UTC).timestamp()]
    budget = CostBudget(1.0, clock=lambda: now[0])
    assert budget.spend("a", Decimal("0.6")) is None
    ended = budget.spend("a", Decimal("0.5"))
    assert ended is not None and "RELAY_DAILY_COST_BUDGET" in ended and "60 min" in ended
    denial = await budget.denial("a")
    assert denial is not None and (denial.status, denial.reason) == (429, "cost_budget")
    assert await budget.denial("b") is None
    now[0] += 3600
    assert await budget.denial("a") is None and budget.spent("a") == 0
    assert CostBudget(0).spend("a", Decimal(10**6)) is None


async def test_a_conversations_cost_reaches_the_metric_and_the_summary_line(
    relay_factory: Any, fake_upstream: FakeRealtimeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    relay: ProxiedRelay = await relay_factory(access_tokens=TOKEN)
    async with opened(relay.ws_url, additional_headers=bearer(TOKEN)) as ws:
        await next_event(ws)
        await ask_for_a_text_reply(ws)
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["type"] != "response.done":
            seen.append(await next_event(ws))
    usage = seen[-1]["response"]["usage"]
    expected = TABLE.response_cost("gpt-realtime", usage)
    assert expected is not None and expected > 0
    registry = relay.inner.metrics.registry
    async with asyncio.timeout(5):  # the session_closed line is logged once the session has wound down
        while relay.inner.runtime.sessions:
            await asyncio.sleep(0.05)
    counted = registry.get_sample_value("relay_cost_dollars_total", {"model": "gpt-realtime"})
    assert counted == pytest.approx(float(expected), rel=1e-9)
    closed = [line for line in capsys.readouterr().out.splitlines() if "session_closed" in line]
    assert closed and f"cost_usd={round(float(expected), 6)}" in closed[-1]


async def test_the_daily_money_budget_ends_the_session_then_refuses_at_the_door(
    relay_factory: Any, fake_upstream: FakeRealtimeServer
) -> None:
    relay: ProxiedRelay = await relay_factory(
        access_tokens=f"{TOKEN},{OTHER_TOKEN}", daily_cost_budget="0.0000001", daily_token_budget="0"
    )
    async with opened(relay.ws_url, additional_headers=bearer(TOKEN)) as ws:
        await next_event(ws)
        await ask_for_a_text_reply(ws)
        events, code = await until_closed(ws)
    types = [e["type"] for e in events]
    # As with the token budget: the reply that spent it is delivered whole, then the session ends with 1008.
    assert "response.done" in types and types.index("response.done") < types.index("error")
    error = limit_error(events)
    assert "RELAY_DAILY_COST_BUDGET" in error["message"] and "00:00 UTC" in error["message"]
    assert code == 1008
    spent = await refused(relay.ws_url, additional_headers=bearer(TOKEN))
    spent.says(429, "relay_limit_exceeded", "RELAY_DAILY_COST_BUDGET", "connect again then")
    async with opened(relay.ws_url, additional_headers=bearer(OTHER_TOKEN)) as other:
        assert (await next_event(other))["type"] == "session.created"
    assert rejections(relay, "cost_budget") == 1


def test_the_cost_counter_has_an_identity_label_only_when_that_label_is_on() -> None:
    from prometheus_client import CollectorRegistry

    from relay.conversations.metrics import HistoryMetrics

    for label_on in (False, True):
        registry = CollectorRegistry()
        metrics = HistoryMetrics(registry, ("gpt-realtime",), identity_label=label_on)
        metrics.spend("gpt-realtime", "token:abc", Decimal("0.25"))
        metrics.spend("not-offered", "token:abc", Decimal("0.5"))
        assert registry.get_sample_value("relay_cost_dollars_total", {"model": "gpt-realtime"}) == 0.25
        assert registry.get_sample_value("relay_cost_dollars_total", {"model": "other"}) == 0.5
        by_identity = registry.get_sample_value(
            "relay_identity_cost_dollars_total", {"identity": "token:abc"}
        )
        assert by_identity == (0.75 if label_on else None)
