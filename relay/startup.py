"""What the relay says when it starts: the page to open first, then its settings as key/value fields."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from relay.config import SETTINGS, Config

# Addresses that mean "every interface": a browser on this machine reaches them as 127.0.0.1 / [::1].
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def page_url(host: str, port: int) -> str:
    """The URL of the web page for someone on this machine, given the address the listener is bound to."""
    host = _ANY_ADDRESS.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def model_description(config: Config) -> str:
    """Which model sessions talk to, and in demo mode why."""
    if not config.demo:
        if config.providers_file is not None:
            return f"the providers in {config.providers_file}"
        if config.upstream_kind == "gemini":
            return "Gemini Live (translated)"
        return f"{'Azure OpenAI' if config.upstream_kind == 'azure' else 'OpenAI'} at {config.upstream_url}"
    reason = "--demo" if config.openai_api_key else "OPENAI_API_KEY is not set"
    return f"simulated, offline ({reason})"


_ANONYMOUS_WORDS = {
    "this machine only": "only this machine may connect",
    "everyone (demo)": "anyone who reaches the port may connect (demo)",
    "everyone except Funnel": "anyone may connect except through Funnel",
}


def access_description(summary: Mapping[str, Any]) -> str:
    """Access control on or off, in words, from `relay.access.access_summary`."""
    ways = [
        name
        for name, on in (
            ("token", summary["access_tokens"]),
            ("tailnet identity", summary["tailscale_identity"]),
        )
        if on
    ]
    if ways:
        return f"on: {' or '.join(ways)} required"
    anonymous = str(summary["anonymous"])
    return "off: " + _ANONYMOUS_WORDS.get(anonymous, f"{anonymous} may connect")


def first_line(config: Config, port: int, metrics_port: int, access: Mapping[str, Any]) -> dict[str, Any]:
    """Fields of the first start-up line, most important first (the console renderer keeps this order)."""
    return {
        "open": page_url(config.host, port),
        "model": model_description(config),
        "access_control": access_description(access),
        "metrics": f"{page_url(config.metrics_host, metrics_port)}metrics",
    }


def config_fields(config: Config) -> dict[str, Any]:
    """Every setting as a loggable value; of a secret only whether it is set (`openai_api_key_set`)."""
    fields: dict[str, Any] = {}
    for setting in SETTINGS:
        value = getattr(config, setting.name)
        if setting.secret:
            # Under its own name the value would be redacted whatever it is; whether it is set is worth a look.
            fields[f"{setting.name}_set"] = bool(value)
            continue
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Path) or not isinstance(value, str | int | float | bool | None):
            value = str(value)  # a Path, or a parsed value such as the price table (which says what it holds)
        fields[setting.name] = value
    fields["demo"] = config.demo
    return fields
