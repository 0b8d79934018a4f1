"""The demo tools themselves: plain functions, with their schemas in their type hints."""

from __future__ import annotations

import datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mcp.server.mcpserver.exceptions import ToolError

Unit = Literal["km", "mi", "m", "ft", "kg", "lb", "c", "f", "l", "gal"]

#: Each unit as (dimension, factor to the dimension's base unit); temperatures are converted apart.
_UNITS: dict[str, tuple[str, float]] = {
    "km": ("length", 1000.0),
    "mi": ("length", 1609.344),
    "m": ("length", 1.0),
    "ft": ("length", 0.3048),
    "kg": ("mass", 1.0),
    "lb": ("mass", 0.45359237),
    "l": ("volume", 1.0),
    "gal": ("volume", 3.785411784),
}

Country = Literal["france", "germany", "japan", "brazil", "kenya", "canada", "india", "australia"]

_CAPITALS: dict[str, dict[str, str | int]] = {
    "france": {"capital": "Paris", "population": 2_102_650, "timezone": "Europe/Paris"},
    "germany": {"capital": "Berlin", "population": 3_878_100, "timezone": "Europe/Berlin"},
    "japan": {"capital": "Tokyo", "population": 14_094_034, "timezone": "Asia/Tokyo"},
    "brazil": {"capital": "Brasília", "population": 2_817_381, "timezone": "America/Sao_Paulo"},
    "kenya": {"capital": "Nairobi", "population": 4_397_073, "timezone": "Africa/Nairobi"},
    "canada": {"capital": "Ottawa", "population": 1_017_449, "timezone": "America/Toronto"},
    "india": {"capital": "New Delhi", "population": 249_998, "timezone": "Asia/Kolkata"},
    "australia": {"capital": "Canberra", "population": 466_566, "timezone": "Australia/Sydney"},
}


def current_time(timezone: str = "UTC") -> dict[str, str]:
    """The current date and time in an IANA time zone such as Europe/Paris (default UTC)."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {timezone!r}; use an IANA name such as Europe/Paris") from None
    now = datetime.datetime.now(zone)
    return {"timezone": timezone, "time": now.strftime("%H:%M"), "date": now.strftime("%A %d %B %Y")}


def convert_units(value: float, from_unit: Unit, to_unit: Unit) -> dict[str, float | str]:
    """Convert a value between units of length (km, mi, m, ft), mass (kg, lb), volume (l, gal) or temperature
    (c, f)."""
    if {from_unit, to_unit} <= {"c", "f"}:
        celsius = value if from_unit == "c" else (value - 32) * 5 / 9
        result = celsius if to_unit == "c" else celsius * 9 / 5 + 32
    else:
        (dimension, factor), (target, to_factor) = (
            _UNITS.get(from_unit, ("", 0)),
            _UNITS.get(to_unit, ("", 0)),
        )
        if not dimension or dimension != target:
            raise ToolError(f"cannot convert {from_unit} to {to_unit}: they measure different things")
        result = value * factor / to_factor
    return {"value": round(result, 4), "unit": to_unit}


def capital_city(country: Country) -> dict[str, str | int]:
    """The capital city of a country, with its population and time zone."""
    return {"country": country, **_CAPITALS[country]}
