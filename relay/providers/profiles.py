"""Upstream profiles: the named upstreams a relay offers (OpenAI, Azure OpenAI, Gemini Live) and how one is chosen.

The simple case needs no file: `RELAY_UPSTREAM_KIND`, `RELAY_UPSTREAM_URL`, `RELAY_MODEL`/`RELAY_ALLOWED_MODELS`
and the kind's key variable make one profile. Several upstreams are described in `RELAY_PROVIDERS_FILE` (TOML or
JSON, a list under `provider`). Credentials are read from the environment variables the profiles name, once, at
start-up; they are never shown (a profile's repr says only whether its credential is set).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from relay.config import GA_VOICES, GEMINI_VOICES, Config, ConfigError

Kind = Literal["openai", "azure", "gemini"]
KINDS: tuple[Kind, ...] = ("openai", "azure", "gemini")

GEMINI_URL = (
    "wss://generativelanguage.googleapis.com/ws/"
    "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
)
GEMINI_MODEL = "gemini-live-2.5-flash-preview"

#: Where each kind's credential is read from unless a profile names another variable.
DEFAULT_CREDENTIAL_ENV: dict[Kind, str] = {
    "openai": "OPENAI_API_KEY",
    "azure": "AZURE_OPENAI_API_KEY",
    "gemini": "GEMINI_API_KEY",
}
_PROFILE_KEYS = frozenset(
    {
        "name",
        "kind",
        "url",
        "credential_env",
        "models",
        "default_model",
        "voice",
        "voices",
        "token_command",
        "token_file",
    }
)


@dataclass(frozen=True)
class Profile:
    """One upstream the relay may open: its kind, where it is, its credential, and what it offers."""

    name: str
    kind: Kind
    url: str
    models: tuple[str, ...]
    default_model: str
    credential_env: str
    credential: str = field(default="", repr=False)
    voice: str = ""
    voices: tuple[str, ...] = ()
    #: Azure Entra ID: a command that prints a bearer token, or a file holding one (read for every connection).
    token_command: str = ""
    token_file: Path | None = None
    simulated: bool = False

    def __repr__(self) -> str:
        # The credential never reaches a log line or traceback through a repr.
        shown = "<set>" if self.credential else "<unset>"
        return f"Profile(name={self.name!r}, kind={self.kind!r}, models={self.models!r}, credential={shown})"

    def public(self) -> dict[str, Any]:
        """What `/api/config` shows a signed-in client: names, models and voices, never URLs or credentials."""
        return {
            "name": self.name,
            "models": list(self.models),
            "default_model": self.default_model,
            "voices": list(self.voices),
            "voice": self.voice,
            "simulated": self.simulated,
            # Gemini Live keeps no per-item audio the relay could cut, so the page skips the truncate.
            "can_truncate": self.kind != "gemini",
        }

    def has_credential(self) -> bool:
        """Whether the relay can authenticate upstream (a key, or an Entra token source for Azure)."""
        return bool(self.credential or self.token_command or self.token_file)


def _voices_for(kind: Kind) -> tuple[str, ...]:
    return GEMINI_VOICES if kind == "gemini" else GA_VOICES


def profile_from(raw: Mapping[str, Any], env: Mapping[str, str], where: str) -> Profile:
    """Build and check one profile from a file's table (or the simple environment case)."""
    unknown = sorted(set(raw) - _PROFILE_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; profiles take {', '.join(sorted(_PROFILE_KEYS))}"
        )
    name = str(raw.get("name") or "")
    if not name or not all(ch.isalnum() or ch in "-_." for ch in name) or len(name) > 40:
        raise ConfigError(f"{where}: name must be 1-40 letters, digits, '-', '_' or '.'")
    kind = raw.get("kind", "openai")
    if kind not in KINDS:
        raise ConfigError(f"{where} ({name}): kind must be one of {', '.join(KINDS)}")
    kind = cast(Kind, kind)
    url = str(raw.get("url") or (GEMINI_URL if kind == "gemini" else ""))
    parts = urlsplit(url)
    if parts.scheme not in {"ws", "wss"} or not parts.hostname:
        raise ConfigError(f"{where} ({name}): url must be a ws:// or wss:// URL")
    if kind == "azure" and "api-version" in parts.query:
        raise ConfigError(f"{where} ({name}): the Azure GA path /openai/v1/realtime takes no api-version")
    models_raw = raw.get("models") or ([GEMINI_MODEL] if kind == "gemini" else [])
    if isinstance(models_raw, str) or not isinstance(models_raw, Sequence) or not models_raw:
        raise ConfigError(f"{where} ({name}): models must be a non-empty list of model (or deployment) names")
    models = tuple(str(m) for m in models_raw)
    default_model = str(raw.get("default_model") or models[0])
    if default_model not in models:
        raise ConfigError(f"{where} ({name}): default_model {default_model!r} is not in its models")
    voices = tuple(str(v) for v in (raw.get("voices") or _voices_for(kind)))
    voice = str(raw.get("voice") or "")
    if voice and voice not in voices:
        raise ConfigError(f"{where} ({name}): voice {voice!r} is not one of {', '.join(voices)}")
    credential_env = str(raw.get("credential_env") or DEFAULT_CREDENTIAL_ENV[kind])
    token_file = raw.get("token_file")
    token_command = str(raw.get("token_command") or "")
    if (token_file or token_command) and kind != "azure":
        raise ConfigError(
            f"{where} ({name}): token_command and token_file are for Azure Entra ID tokens only"
        )
    return Profile(
        name=name,
        kind=kind,
        url=url,
        models=models,
        default_model=default_model,
        credential_env=credential_env,
        credential=env.get(credential_env, ""),
        voice=voice,
        voices=voices,
        token_command=token_command,
        token_file=Path(str(token_file)) if token_file else None,
    )


def read_profiles_file(path: Path, env: Mapping[str, str]) -> tuple[Profile, ...]:
    """The profiles of a TOML or JSON file: `[[provider]]` tables, or `{"provider": [...]}`."""
    where = f"RELAY_PROVIDERS_FILE={str(path)!r}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read ({exc.strerror})") from None
    try:
        data: Any = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"{where} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}"
        ) from None
    tables = data.get("provider") if isinstance(data, dict) else None
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{where} must hold a non-empty list of provider tables ([[provider]] in TOML)")
    profiles = tuple(profile_from(t, env, f"{where}, provider {i + 1}") for i, t in enumerate(tables))
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: provider names must be unique")
    return profiles


def load_profiles(config: Config, env: Mapping[str, str]) -> tuple[Profile, ...]:
    """The relay's profiles: from `RELAY_PROVIDERS_FILE`, or the single upstream the environment describes."""
    if config.providers_file is not None:
        return read_profiles_file(config.providers_file, env)
    kind = cast(Kind, config.upstream_kind)
    url = config.upstream_url if kind != "gemini" or "RELAY_UPSTREAM_URL" in env else GEMINI_URL
    simple: dict[str, Any] = {"name": kind, "kind": kind, "url": url, "models": list(config.models)}
    simple["default_model"] = config.model
    if kind != "openai" and config.model == "gpt-realtime" and "RELAY_MODEL" not in env:
        simple["models"] = [GEMINI_MODEL] if kind == "gemini" else []
        simple.pop("default_model")
    if config.voice and config.voice in _voices_for(kind):
        simple["voice"] = config.voice
    if config.upstream_token_command:
        simple["token_command"] = config.upstream_token_command
    if config.upstream_token_file is not None:
        simple["token_file"] = str(config.upstream_token_file)
    profile = profile_from(simple, env, "RELAY_UPSTREAM_*")
    if kind == "openai":
        # The key may come from the flag or the config object rather than the environment.
        profile = _with_credential(profile, config.openai_api_key or profile.credential)
    return (profile,)


def openai_profile(config: Config, url: str, key: str, *, simulated: bool = False) -> Profile:
    """The one OpenAI profile of the simple case (or the demo's simulated one): the config's models and voice."""
    return Profile(
        name="openai",
        kind="openai",
        url=url,
        models=config.models,
        default_model=config.model,
        credential_env="OPENAI_API_KEY",
        credential=key,
        voice=config.voice if config.voice in GA_VOICES else "",
        voices=GA_VOICES,
        simulated=simulated,
    )


def _with_credential(profile: Profile, credential: str) -> Profile:
    from dataclasses import replace

    return replace(profile, credential=credential)


@dataclass(frozen=True)
class Choice:
    """The profile and model one session asked for (or was given by default)."""

    profile: Profile
    model: str


@dataclass(frozen=True)
class Unavailable:
    """Why a handshake's `?provider=`/`?model=` cannot be served: an HTTP status and words a person can act on."""

    status: int
    message: str


class ProviderSet:
    """Every profile of one relay process; the first is the default."""

    def __init__(self, profiles: Sequence[Profile]) -> None:
        if not profiles:
            raise ConfigError("at least one upstream profile is needed")
        self.profiles = tuple(profiles)
        self._by_name = {p.name: p for p in self.profiles}

    @property
    def default(self) -> Profile:
        """The profile a client gets when it names neither provider nor model."""
        return self.profiles[0]

    def get(self, name: str) -> Profile | None:
        """The profile called `name`, if any."""
        return self._by_name.get(name)

    def choose(self, provider: str | None, model: str | None, clip: Any) -> Choice | Unavailable:
        """Pick the profile and model for `?provider=` and `?model=` (either may be absent)."""
        if provider:
            profile = self._by_name.get(provider)
            if profile is None:
                return Unavailable(
                    403,
                    f"Provider {clip(provider, 40)!r} is not offered by this relay; use one of: "
                    f"{', '.join(self._by_name)}.",
                )
            if model and model not in profile.models:
                return Unavailable(
                    403,
                    f"Model {clip(model, 80)!r} is not offered by provider {profile.name!r}; use one of: "
                    f"{', '.join(profile.models)}.",
                )
            return Choice(profile, model or profile.default_model)
        if not model:
            return Choice(self.default, self.default.default_model)
        for profile in self.profiles:
            if model in profile.models:
                return Choice(profile, model)
        offered = sorted({m for p in self.profiles for m in p.models})
        return Unavailable(
            403, f"Model {clip(model, 80)!r} is not offered by this relay; use one of: {', '.join(offered)}."
        )

    def public(self) -> list[dict[str, Any]]:
        """The choices for `/api/config`."""
        return [p.public() for p in self.profiles]
