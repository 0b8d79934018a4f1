"""Settings: read from `RELAY_*` environment variables (and `OPENAI_API_KEY`), overridable by command-line flags.

Every setting is declared once in `SETTINGS`; the CLI flags, the validation and the README table all follow from it.
A bad value stops the process at start-up with one line naming the setting and what it accepts.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relay.audio import RESAMPLER_QUALITIES
from relay.conversations.pricing import PRICES_READ_ON, PriceTable, parse_prices

DEFAULT_INSTRUCTIONS = (
    "You are a helpful voice assistant. Always answer in the language the user speaks to you; "
    "if you are unsure which language that is, ask. Keep answers short and natural for speech."
)

GA_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
#: Gemini Live's prebuilt voices (relay.providers: a Gemini profile offers these).
GEMINI_VOICES = ("Puck", "Charon", "Kore", "Fenrir", "Aoede", "Leda", "Orus", "Zephyr")


class ConfigError(ValueError):
    """A setting has a value the relay cannot use; the message names the setting and what it accepts."""


def _str(value: str) -> str:
    return value


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"expected an integer from {low} to {high}")
        return number

    return parse


def _float_range(low: float, high: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        number = float(value)
        if not low <= number <= high:
            raise ValueError(f"expected a number from {low:g} to {high:g}")
        return number

    return parse


def _auto_or_int(low: int, high: int) -> Callable[[str], int | None]:
    bounded = _int_range(low, high)

    def parse(value: str) -> int | None:
        if value.lower() == "auto":
            return None
        try:
            return bounded(value)
        except ValueError as exc:
            raise ValueError(f"expected auto or an integer from {low} to {high}") from exc

    return parse


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError("expected one of " + ", ".join(allowed))
        return value

    return parse


def _ws_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"ws", "wss"} or not parts.hostname:
        raise ValueError("expected a ws:// or wss:// URL such as wss://api.openai.com/v1/realtime")
    return value


def _host(value: str) -> str:
    if not value or any(ch.isspace() for ch in value):
        raise ValueError("expected an IP address or host name such as 127.0.0.1 or 0.0.0.0")
    return value


def _path(value: str) -> Path | None:
    return Path(value) if value else None


def _voice(value: str) -> str:
    if value and value not in GA_VOICES + GEMINI_VOICES:
        raise ValueError("expected one of " + ", ".join(GA_VOICES + GEMINI_VOICES))
    return value


def _redis_url(value: str) -> str:
    if value and urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
        raise ValueError("expected a redis://, rediss:// or unix:// URL such as redis://redis:6379/0")
    return value


def _prices(value: str) -> PriceTable:
    return parse_prices(value)


def _fields(value: str) -> tuple[str, ...]:
    fields = _csv(value)
    for name in fields:
        if not all(part.replace("_", "").isalnum() for part in name.split(".")):
            raise ValueError(f"{name!r} is not a dotted session field name such as audio.output.voice")
    return fields


@dataclass(frozen=True)
class Setting:
    """One setting: its attribute name, environment variable, parser, default and help text."""

    name: str
    env: str
    parse: Callable[[str], Any]
    default: str
    help: str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "openai_api_key",
        "OPENAI_API_KEY",
        _str,
        "",
        "The OpenAI API key used upstream. Never sent to clients.",
        secret=True,
    ),
    Setting(
        "upstream_url",
        "RELAY_UPSTREAM_URL",
        _ws_url,
        "wss://api.openai.com/v1/realtime",
        "Realtime WebSocket URL of OpenAI or any OpenAI-compatible server.",
    ),
    Setting(
        "upstream_kind",
        "RELAY_UPSTREAM_KIND",
        _choice("openai", "azure", "gemini"),
        "openai",
        "Protocol of RELAY_UPSTREAM_URL: openai, azure (key in AZURE_OPENAI_API_KEY) or gemini (GEMINI_API_KEY).",
    ),
    Setting(
        "upstream_token_command",
        "RELAY_UPSTREAM_TOKEN_COMMAND",
        _str,
        "",
        "Azure Entra ID: a command printing a bearer token, run for each new upstream connection.",
        # Its arguments may hold a secret (a client secret, a password): never logged, env only.
        secret=True,
    ),
    Setting(
        "upstream_token_file",
        "RELAY_UPSTREAM_TOKEN_FILE",
        _path,
        "",
        "Azure Entra ID: a file holding a bearer token, read for each new upstream connection.",
    ),
    Setting(
        "providers_file",
        "RELAY_PROVIDERS_FILE",
        _path,
        "",
        "TOML or JSON file of several upstream profiles (replaces RELAY_UPSTREAM_*); see the README.",
    ),
    Setting(
        "host",
        "RELAY_HOST",
        _host,
        "127.0.0.1",
        "Address of the public listener (web page, WebSocket, health).",
    ),
    Setting("port", "RELAY_PORT", _int_range(0, 65535), "8080", "Port of the public listener."),
    Setting(
        "metrics_host",
        "RELAY_METRICS_HOST",
        _host,
        "127.0.0.1",
        "Address of the Prometheus /metrics listener.",
    ),
    Setting(
        "metrics_port",
        "RELAY_METRICS_PORT",
        _int_range(0, 65535),
        "9464",
        "Port of the /metrics listener (never served on the public port).",
    ),
    Setting("model", "RELAY_MODEL", _str, "gpt-realtime", "Model used when a client does not name one."),
    Setting(
        "allowed_models",
        "RELAY_ALLOWED_MODELS",
        _csv,
        "",
        "Comma list of models clients may ask for (default: only RELAY_MODEL).",
    ),
    Setting(
        "instructions",
        "RELAY_INSTRUCTIONS",
        _str,
        DEFAULT_INSTRUCTIONS,
        "Instructions applied upstream when a session opens.",
    ),
    Setting("voice", "RELAY_VOICE", _voice, "marin", "Voice applied upstream when a session opens."),
    Setting(
        "locked_fields",
        "RELAY_LOCKED_FIELDS",
        _fields,
        "",
        "Comma list of session fields clients may not change, e.g. instructions,tools,audio.output.voice.",
    ),
    Setting(
        "access_tokens",
        "RELAY_ACCESS_TOKENS",
        _csv,
        "",
        "Comma list of access tokens clients must present.",
        secret=True,
    ),
    Setting(
        "access_tokens_file",
        "RELAY_ACCESS_TOKENS_FILE",
        _path,
        "",
        "File with one token (or sha256:<hex> hash of one) per line.",
    ),
    Setting(
        "cookie_secret",
        "RELAY_COOKIE_SECRET",
        _str,
        "",
        "Key that signs login cookies (default: random per process, so logins end at restart).",
        secret=True,
    ),
    Setting(
        "login_ttl_seconds",
        "RELAY_LOGIN_TTL_SECONDS",
        _int_range(60, 30 * 86400),
        "43200",
        "How long a web login lasts.",
    ),
    Setting(
        "allowed_origins",
        "RELAY_ALLOWED_ORIGINS",
        _csv,
        "",
        "Extra Origins allowed to open the WebSocket, e.g. https://app.example.com.",
    ),
    Setting(
        "trust_tailscale_identity",
        "RELAY_TRUST_TAILSCALE_IDENTITY",
        _bool,
        "false",
        "Accept Tailscale-User-Login from the local proxy as an identity.",
    ),
    Setting(
        "tailscale_users",
        "RELAY_TAILSCALE_USERS",
        _csv,
        "",
        "Comma list of tailnet logins allowed (default: any tailnet user).",
    ),
    Setting(
        "allow_anonymous",
        "RELAY_ALLOW_ANONYMOUS",
        _bool,
        "false",
        "Allow serving without tokens on a non-loopback address.",
    ),
    Setting(
        "max_sessions", "RELAY_MAX_SESSIONS", _int_range(1, 100000), "50", "Concurrent sessions, all users."
    ),
    Setting(
        "max_sessions_per_identity",
        "RELAY_MAX_SESSIONS_PER_IDENTITY",
        _int_range(1, 100000),
        "3",
        "Concurrent sessions per identity.",
    ),
    Setting(
        "max_session_seconds",
        "RELAY_MAX_SESSION_SECONDS",
        _int_range(1, 86400),
        "1800",
        "Longest session; then relay_limit_exceeded and close 1008.",
    ),
    Setting(
        "idle_timeout_seconds",
        "RELAY_IDLE_TIMEOUT_SECONDS",
        _int_range(1, 86400),
        "300",
        "Close a session after this long without client events.",
    ),
    Setting(
        "max_message_bytes",
        "RELAY_MAX_MESSAGE_BYTES",
        _int_range(1024, 64 * 1024 * 1024),
        "1048576",
        "Largest client WebSocket message, in bytes (UTF-8 for text frames).",
    ),
    Setting(
        "audio_ahead_seconds",
        "RELAY_AUDIO_AHEAD_SECONDS",
        _float_range(1, 600),
        "5",
        "How far a client's audio may run ahead of real time (also the most audio in one frame); beyond it the "
        "relay reads that client at real-time speed.",
    ),
    Setting(
        "client_buffer_bytes",
        "RELAY_CLIENT_BUFFER_BYTES",
        _int_range(64 * 1024, 1024 * 1024 * 1024),
        "8388608",
        "Bytes waiting for a client that reads slower than the upstream sends; beyond it the client is closed "
        "(1013).",
    ),
    Setting(
        "client_buffer_seconds",
        "RELAY_CLIENT_BUFFER_SECONDS",
        _float_range(1, 3600),
        "60",
        "Seconds of audio waiting for a slow client; beyond it the client is closed (1013).",
    ),
    Setting(
        "client_stall_seconds",
        "RELAY_CLIENT_STALL_SECONDS",
        _float_range(0.5, 600),
        "5",
        "Longest a client may take nothing while bytes wait for it; then it is closed (1013).",
    ),
    Setting(
        "heartbeat_seconds",
        "RELAY_HEARTBEAT_SECONDS",
        _float_range(1, 600),
        "5",
        "Ping interval to both peers; a peer that does not answer within as long again ends the session.",
    ),
    Setting(
        "daily_token_budget",
        "RELAY_DAILY_TOKEN_BUDGET",
        _int_range(0, 10**12),
        "1000000",
        "Tokens per identity per UTC day: estimated from audio as it flows, settled by response.done and "
        "transcription usage (0 = unlimited).",
    ),
    Setting(
        "daily_cost_budget",
        "RELAY_DAILY_COST_BUDGET",
        _float_range(0, 10**9),
        "0",
        "Dollars per identity per UTC day, from usage priced by RELAY_PRICES; then the session ends like the "
        "token budget's (0 = unlimited).",
    ),
    Setting(
        "prices",
        "RELAY_PRICES",
        _prices,
        "",
        'JSON price overrides in dollars per million tokens, e.g. {"gpt-realtime": {"audio_out": 64}} '
        "(default: OpenAI's prices as read on " + PRICES_READ_ON + ").",
    ),
    Setting(
        "history",
        "RELAY_HISTORY",
        _choice("auto", "on", "off"),
        "auto",
        "Save conversations (auto: on with --demo, off otherwise).",
    ),
    Setting(
        "data_dir",
        "RELAY_DATA_DIR",
        _str,
        "data",
        "Directory of the relay's own files (the SQLite history database).",
    ),
    Setting(
        "record_audio",
        "RELAY_RECORD_AUDIO",
        _bool,
        "false",
        "With history on, also keep each conversation's audio as WAV files in RELAY_DATA_DIR/recordings (same "
        "retention).",
    ),
    Setting(
        "history_database_url",
        "RELAY_HISTORY_DATABASE_URL",
        _str,
        "",
        "Database for history, e.g. postgresql://user:pass@host/db (default: SQLite in RELAY_DATA_DIR).",
        secret=True,
    ),
    Setting(
        "history_retention_days",
        "RELAY_HISTORY_RETENTION_DAYS",
        _float_range(0, 36500),
        "30",
        "Days a saved conversation is kept after its last word (0 = forever).",
    ),
    Setting(
        "history_queue",
        "RELAY_HISTORY_QUEUE",
        _int_range(10, 10**7),
        "10000",
        "History writes waiting for the database at most; beyond it writes are dropped and counted.",
    ),
    Setting(
        "rollover_seconds",
        "RELAY_ROLLOVER_SECONDS",
        _int_range(0, 86400),
        "3300",
        "Upstream age at which the relay opens a new upstream between responses, before the API's 60-minute "
        "cap (0 = never).",
    ),
    Setting(
        "rollover_retries",
        "RELAY_ROLLOVER_RETRIES",
        _int_range(0, 100),
        "3",
        "New upstreams tried, with backoff, after an unexpected upstream drop (0 = end the session).",
    ),
    Setting(
        "resampler",
        "RELAY_RESAMPLER",
        _choice(*RESAMPLER_QUALITIES),
        RESAMPLER_QUALITIES[0],
        "Resampler setting: " + ", ".join(RESAMPLER_QUALITIES) + ".",
    ),
    Setting(
        "upstream_connect_timeout",
        "RELAY_UPSTREAM_CONNECT_TIMEOUT",
        _float_range(0.1, 120),
        "10",
        "Seconds to wait for the upstream handshake.",
    ),
    Setting(
        "pending_events_limit",
        "RELAY_PENDING_EVENTS_LIMIT",
        _int_range(1, 100000),
        "1000",
        "Client events held while the upstream connects.",
    ),
    Setting(
        "pending_bytes_limit",
        "RELAY_PENDING_BYTES_LIMIT",
        _int_range(64 * 1024, 1024 * 1024 * 1024),
        "16777216",
        "Bytes of client events held while the upstream connects.",
    ),
    Setting(
        "drain_seconds",
        "RELAY_DRAIN_SECONDS",
        _float_range(0, 3600),
        "10",
        "On shutdown, how long open sessions may finish before they are closed.",
    ),
    Setting(
        "log_format",
        "RELAY_LOG_FORMAT",
        _choice("auto", "console", "json"),
        "auto",
        "Log lines as json or console (auto: console on a terminal).",
    ),
    Setting(
        "log_level", "RELAY_LOG_LEVEL", _choice("debug", "info", "warning", "error"), "info", "Log level."
    ),
    Setting(
        "metrics_identity_label",
        "RELAY_METRICS_IDENTITY_LABEL",
        _bool,
        "false",
        "Label per-identity metrics with the identity (bounded; off by default).",
    ),
    Setting(
        "forwarded_allow_ips",
        "RELAY_FORWARDED_ALLOW_IPS",
        _csv,
        "127.0.0.1,::1",
        "Peers whose X-Forwarded-* headers are trusted, e.g. an ingress (Tailscale-* only from a loopback one).",
    ),
    Setting(
        "request_timeout_seconds",
        "RELAY_REQUEST_TIMEOUT_SECONDS",
        _float_range(0.5, 300),
        "5",
        "Seconds a connection has to send a whole request (head and body); then 408 and close.",
    ),
    Setting(
        "max_connections",
        "RELAY_MAX_CONNECTIONS",
        _auto_or_int(1, 1_000_000),
        "auto",
        "Open public connections at most (auto: what the open-file limit allows beside sessions and /metrics).",
    ),
    Setting(
        "tools_file",
        "RELAY_TOOLS_FILE",
        _path,
        "",
        "TOML file naming MCP servers whose tools the relay runs itself, and who may use them (--demo: the demo "
        "tool server).",
    ),
    Setting(
        "tool_connect_timeout",
        "RELAY_TOOL_CONNECT_TIMEOUT",
        _float_range(0.5, 300),
        "20",
        "Seconds the MCP servers have at start-up to answer and list their tools.",
    ),
    Setting(
        "tool_timeout_seconds",
        "RELAY_TOOL_TIMEOUT_SECONDS",
        _float_range(0.1, 600),
        "10",
        "Longest a server tool call may take; then the model is told the tool did not answer.",
    ),
    Setting(
        "tool_concurrency",
        "RELAY_TOOL_CONCURRENCY",
        _int_range(1, 64),
        "4",
        "Server tool calls one session runs at once (more wait their turn).",
    ),
    Setting(
        "tool_waiting_seconds",
        "RELAY_TOOL_WAITING_SECONDS",
        _float_range(0, 600),
        "3",
        "After this long a running tool call makes the model say it is still looking (0 = never).",
    ),
    Setting(
        "tool_calls",
        "RELAY_TOOL_CALLS",
        _choice("visible", "hidden"),
        "visible",
        "Whether clients see server tool calls as items marked relay.server_tool (visible) or not at all (hidden).",
    ),
    Setting(
        "workers",
        "RELAY_WORKERS",
        _auto_or_int(1, 256),
        "1",
        "Relay processes behind the one port (auto: the cores this process may use, cgroup quota included); "
        "more than one needs RELAY_REDIS_URL.",
    ),
    Setting(
        "redis_url",
        "RELAY_REDIS_URL",
        _redis_url,
        "",
        "Redis that every worker and replica shares for session slots, budgets, sign-in failures and sign-outs "
        "(default: kept in this process).",
        secret=True,
    ),
    Setting(
        "session_lease_seconds",
        "RELAY_SESSION_LEASE_SECONDS",
        _float_range(1, 600),
        "30",
        "With Redis: a session's slot expires this long after its relay last renewed it (a killed relay's slots "
        "free within it).",
    ),
)


@dataclass(frozen=True)
class Config:
    """Validated settings of one relay process."""

    openai_api_key: str = ""
    upstream_url: str = "wss://api.openai.com/v1/realtime"
    upstream_kind: str = "openai"
    upstream_token_command: str = ""
    upstream_token_file: Path | None = None
    providers_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    model: str = "gpt-realtime"
    allowed_models: tuple[str, ...] = ()
    instructions: str = DEFAULT_INSTRUCTIONS
    voice: str = "marin"
    locked_fields: tuple[str, ...] = ()
    access_tokens: tuple[str, ...] = ()
    access_tokens_file: Path | None = None
    cookie_secret: str = ""
    login_ttl_seconds: int = 43200
    allowed_origins: tuple[str, ...] = ()
    trust_tailscale_identity: bool = False
    tailscale_users: tuple[str, ...] = ()
    allow_anonymous: bool = False
    max_sessions: int = 50
    max_sessions_per_identity: int = 3
    max_session_seconds: int = 1800
    idle_timeout_seconds: int = 300
    max_message_bytes: int = 1024 * 1024
    audio_ahead_seconds: float = 5.0
    client_buffer_bytes: int = 8 * 1024 * 1024
    client_buffer_seconds: float = 60.0
    client_stall_seconds: float = 5.0
    heartbeat_seconds: float = 5.0
    daily_token_budget: int = 1_000_000
    daily_cost_budget: float = 0.0
    prices: PriceTable = field(default_factory=lambda: parse_prices(""))
    history: str = "auto"
    data_dir: str = "data"
    record_audio: bool = False
    history_database_url: str = ""
    history_retention_days: float = 30.0
    history_queue: int = 10000
    rollover_seconds: int = 3300
    rollover_retries: int = 3
    resampler: str = RESAMPLER_QUALITIES[0]
    upstream_connect_timeout: float = 10.0
    pending_events_limit: int = 1000
    pending_bytes_limit: int = 16 * 1024 * 1024
    drain_seconds: float = 10.0
    log_format: str = "auto"
    log_level: str = "info"
    metrics_identity_label: bool = False
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")
    request_timeout_seconds: float = 5.0
    #: None: derived from the open-file limit (relay.connection_guard).
    max_connections: int | None = None
    tools_file: Path | None = None
    tool_connect_timeout: float = 20.0
    tool_timeout_seconds: float = 10.0
    tool_concurrency: int = 4
    tool_waiting_seconds: float = 3.0
    tool_calls: str = "visible"
    #: None: as many as the cores available (relay.workers.cores).
    workers: int | None = 1
    redis_url: str = ""
    session_lease_seconds: float = 30.0
    demo: bool = False
    #: Set by the app in demo mode: the upstream is the built-in simulated model.
    simulated: bool = field(default=False)

    def __repr__(self) -> str:
        # Secrets must never reach a log line or traceback through a repr.
        shown = {
            s.name: ("<set>" if getattr(self, s.name) else "<unset>") if s.secret else getattr(self, s.name)
            for s in SETTINGS
        }
        return f"Config({shown}, demo={self.demo})"

    @property
    def history_on(self) -> bool:
        """Whether conversations are saved."""
        return self.history == "on" or (self.history == "auto" and self.demo)

    @property
    def models(self) -> tuple[str, ...]:
        """Models a client may ask for."""
        return self.allowed_models or (self.model,)

    def binds_only_loopback(self) -> bool:
        """True when the public listener is reachable only from this machine."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def load_config(env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Build a `Config` from environment variables, then apply already-parsed flag `overrides`.

    Raises `ConfigError` with a one-line message naming the bad setting.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = env.get(setting.env)
        if raw is None:
            raw = setting.default
        values[setting.name] = _parse(setting, raw, f"{setting.env}")
    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        declared = next((s for s in SETTINGS if s.name == name), None)
        if declared is not None and isinstance(raw, str):
            values[name] = _parse(declared, raw, "--" + name.replace("_", "-"))
        else:
            values[name] = raw
    config = Config(**values)
    _check_consistency(config)
    return config


def _parse(setting: Setting, raw: str, where: str) -> Any:
    try:
        return setting.parse(raw.strip() if not setting.secret else raw)
    except ValueError as exc:
        shown = "<hidden>" if setting.secret else repr(raw)
        reason = str(exc) if "invalid literal" not in str(exc) else "expected a number"
        raise ConfigError(f"{where}={shown} is not valid: {reason}") from None


def _check_consistency(config: Config) -> None:
    if config.model not in config.models:
        raise ConfigError(
            f"RELAY_ALLOWED_MODELS does not include RELAY_MODEL={config.model!r}; add it to the list"
        )
    if config.access_tokens_file is not None and not config.access_tokens_file.is_file():
        raise ConfigError(
            f"RELAY_ACCESS_TOKENS_FILE={str(config.access_tokens_file)!r} is not a readable file"
        )
    if config.tools_file is not None and not config.tools_file.is_file():
        raise ConfigError(f"RELAY_TOOLS_FILE={str(config.tools_file)!r} is not a readable file")
    if config.providers_file is not None and not config.providers_file.is_file():
        raise ConfigError(f"RELAY_PROVIDERS_FILE={str(config.providers_file)!r} is not a readable file")
    if config.port and config.port == config.metrics_port and config.host == config.metrics_host:
        raise ConfigError("RELAY_METRICS_PORT must differ from RELAY_PORT: /metrics is never served publicly")


def with_changes(config: Config, **changes: Any) -> Config:
    """Return a copy of `config` with some fields replaced (used for demo mode and tests)."""
    return dataclasses.replace(config, **changes)
