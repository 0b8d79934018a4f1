"""The demo's two providers: the simulated OpenAI model and the simulated Gemini Live server."""

from __future__ import annotations

from relay.config import GEMINI_VOICES, Config
from relay.providers.profiles import GEMINI_MODEL, Profile, ProviderSet, openai_profile


def demo_providers(config: Config, openai_url: str, gemini_url: str, key: str) -> ProviderSet:
    """Both simulated upstreams, OpenAI first (the default), each marked as simulated."""
    openai = openai_profile(config, openai_url, key, simulated=True)
    gemini = Profile(
        name="gemini",
        kind="gemini",
        url=gemini_url,
        models=(GEMINI_MODEL,),
        default_model=GEMINI_MODEL,
        credential_env="GEMINI_API_KEY",
        credential=key,
        voice=config.voice if config.voice in GEMINI_VOICES else "Puck",
        voices=GEMINI_VOICES,
        simulated=True,
    )
    return ProviderSet([openai, gemini])
