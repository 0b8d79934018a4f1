"""What a Realtime response or an input transcription costs, from its usage and a price table per model.

Prices are US dollars per million tokens (per minute for duration-billed transcription). The defaults are OpenAI's
published prices as read on `PRICES_READ_ON` from the model pages at developers.openai.com/api/docs/models/<model>;
an operator overrides or extends them with RELAY_PRICES (JSON). Pure arithmetic, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

PRICES_READ_ON = "2026-12-02"
CURRENCY = "USD"
_PER_TOKENS = Decimal(1_000_000)


@dataclass(frozen=True)
class ModelPrice:
    """Dollars per million tokens of each kind (a transcription model may instead price by the minute)."""

    text_in: Decimal = Decimal(0)
    text_cached_in: Decimal = Decimal(0)
    text_out: Decimal = Decimal(0)
    audio_in: Decimal = Decimal(0)
    audio_cached_in: Decimal = Decimal(0)
    audio_out: Decimal = Decimal(0)
    image_in: Decimal = Decimal(0)
    image_cached_in: Decimal = Decimal(0)
    #: Duration-billed transcription (whisper-1): dollars per minute of audio.
    per_minute: Decimal = Decimal(0)


def _price(**values: str) -> ModelPrice:
    return ModelPrice(**{name: Decimal(value) for name, value in values.items()})


_REALTIME = _price(
    text_in="4", text_cached_in="0.4", text_out="16", audio_in="32", audio_cached_in="0.4", audio_out="64",
    image_in="5", image_cached_in="0.5",
)  # fmt: skip
_REALTIME_2 = _price(
    text_in="4", text_cached_in="0.4", text_out="24", audio_in="32", audio_cached_in="0.4", audio_out="64",
    image_in="5", image_cached_in="0.5",
)  # fmt: skip
_REALTIME_MINI = _price(
    text_in="0.6", text_cached_in="0.06", text_out="2.4", audio_in="10", audio_cached_in="0.3", audio_out="20",
    image_in="0.8", image_cached_in="0.08",
)  # fmt: skip

#: Longest matching prefix wins, so that dated snapshots (gpt-realtime-2025-08-28) take their family's price.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-realtime": _REALTIME,
    "gpt-realtime-1.5": _REALTIME,
    "gpt-realtime-2": _REALTIME_2,
    "gpt-realtime-mini": _REALTIME_MINI,
    "gpt-realtime-2.1-mini": _REALTIME_MINI,
    "gpt-4o-realtime-preview": _price(
        text_in="5", text_cached_in="2.5", text_out="20", audio_in="40", audio_cached_in="2.5", audio_out="80"
    ),
    "gpt-4o-mini-realtime-preview": _price(
        text_in="0.6",
        text_cached_in="0.3",
        text_out="2.4",
        audio_in="10",
        audio_cached_in="0.3",
        audio_out="20",
    ),
    "gpt-4o-transcribe": _price(text_in="2.5", audio_in="2.5", text_out="10"),
    "gpt-4o-mini-transcribe": _price(text_in="1.25", audio_in="1.25", text_out="5"),
    "whisper-1": _price(per_minute="0.006"),
    "gpt-realtime-whisper": _price(per_minute="0.017"),
}


class PriceTable:
    """Prices by model name; a model matches its longest priced prefix, an unpriced model costs nothing known."""

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self._prices = dict(prices)
        self._by_length = sorted(self._prices, key=len, reverse=True)

    def __repr__(self) -> str:
        return f"PriceTable({len(self._prices)} models, USD per 1M tokens)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PriceTable) and other._prices == self._prices

    __hash__ = None  # type: ignore[assignment]

    def price_of(self, model: str | None) -> ModelPrice | None:
        """The price of `model`, or None when no priced name is a prefix of it."""
        if not model:
            return None
        for name in self._by_length:
            if model == name or model.startswith(name + "-"):
                return self._prices[name]
        return None

    def response_cost(self, model: str | None, usage: Any) -> Decimal | None:
        """Dollars for one `response.done` usage (None: no usage, or the model has no price)."""
        price = self.price_of(model)
        if price is None or not isinstance(usage, dict):
            return None
        inp = _dict(usage.get("input_token_details"))
        out = _dict(usage.get("output_token_details"))
        cached = _dict(inp.get("cached_tokens_details"))
        cost = Decimal(0)
        for kind in ("text", "audio", "image"):
            cached_count = _count(cached.get(f"{kind}_tokens"))
            # The API counts cached tokens inside each kind's total: only the rest pays the full input price.
            fresh = max(0, _count(inp.get(f"{kind}_tokens")) - cached_count)
            cost += fresh * getattr(price, f"{kind}_in") + cached_count * getattr(price, f"{kind}_cached_in")
        cost += (
            _count(out.get("text_tokens")) * price.text_out
            + _count(out.get("audio_tokens")) * price.audio_out
        )
        return cost / _PER_TOKENS

    def transcription_cost(self, model: str | None, usage: Any) -> Decimal | None:
        """Dollars for one input transcription's usage: by tokens, or by duration (whisper-1)."""
        price = self.price_of(model)
        if price is None or not isinstance(usage, dict):
            return None
        if usage.get("type") == "duration":
            seconds = usage.get("seconds")
            if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0:
                return Decimal(str(seconds)) / 60 * price.per_minute
            return None
        inp = _dict(usage.get("input_token_details"))
        if inp:
            cost = (
                _count(inp.get("text_tokens")) * price.text_in
                + _count(inp.get("audio_tokens")) * price.audio_in
            )
        else:
            cost = _count(usage.get("input_tokens")) * price.audio_in
        cost += _count(usage.get("output_tokens")) * price.text_out
        return cost / _PER_TOKENS


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse_prices(text: str) -> PriceTable:
    """The default table with RELAY_PRICES applied: JSON `{"model": {"text_in": 4, ...}, ...}` in dollars per
    million tokens (`per_minute` for duration-billed transcription). Raise ValueError naming what is wrong."""
    prices = dict(DEFAULT_PRICES)
    if not text.strip():
        return PriceTable(prices)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f'expected JSON such as {{"gpt-realtime": {{"audio_out": 64}}}} ({exc.msg})'
        ) from None
    if not isinstance(parsed, dict):
        raise ValueError("expected a JSON object of model names")
    known = {f.name for f in fields(ModelPrice)}
    for model, entry in parsed.items():
        if not isinstance(entry, dict):
            raise ValueError(f'the price of {model!r} must be an object such as {{"text_in": 4}}')
        unknown = set(entry) - known
        if unknown:
            raise ValueError(
                f"unknown price field(s) {sorted(unknown)} for {model!r}; known: {sorted(known)}"
            )
        values: dict[str, Decimal] = {}
        for name, value in entry.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{model}.{name} must be a number of dollars, 0 or more")
            values[name] = Decimal(str(value))
        base = prices.get(model, ModelPrice())
        prices[model] = ModelPrice(
            **{f.name: values.get(f.name, getattr(base, f.name)) for f in fields(ModelPrice)}
        )
    return PriceTable(prices)


def rounded(cost: Decimal) -> float:
    """A cost rounded for people and JSON: dollars to six places (a tenth of a thousandth of a cent)."""
    return float(round(cost, 6))
