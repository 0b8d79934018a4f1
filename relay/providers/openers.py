"""Opening a session's upstream for its profile.

OpenAI and Azure speak the OpenAI protocol: their connection comes back right after its handshake (`Dialled`), and
the session forwards its frames as they come. Gemini is a translating connection (relay.providers.gemini.connection)
that takes and yields OpenAI events as text (`MessageSocket`), which the session drives through a `MessageLink`.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from relay.message_link import MessageSocket
from relay.providers import azure
from relay.providers.metrics import OneProvider
from relay.providers.profiles import Profile
from relay.session import Opener
from relay.upstream import open_upstream, upstream_url
from relay.wire.dial import Dialled


def session_defaults_for(profile: Profile, operator: dict[str, Any]) -> dict[str, Any]:
    """The session fields applied before the client's own: the operator's, adjusted for the profile's kind."""
    defaults = copy.deepcopy(operator)
    output = defaults.get("audio", {}).get("output", {})
    if profile.voice:
        output["voice"] = profile.voice
    elif output.get("voice") not in profile.voices:
        # The operator's OpenAI voice means nothing to another provider: its own default applies.
        output.pop("voice", None)
    if "audio" in defaults and not output:
        defaults["audio"].pop("output", None)
    if profile.kind == "azure":
        audio = defaults.setdefault("audio", {})
        audio.setdefault("input", {}).update(azure.session_defaults()["audio"]["input"])
    if not defaults.get("audio"):
        defaults.pop("audio", None)
    return defaults


def opener_for(
    profile: Profile, model: str, timeout: float, heartbeat: float, metrics: OneProvider | None = None
) -> Opener:
    """How a session of `profile` on `model` opens its upstream (called once per session, after the upgrade)."""
    connect = _connector(profile, model, timeout, heartbeat, metrics)
    if metrics is None:
        return connect

    async def timed() -> Dialled | MessageSocket:
        started = time.perf_counter()
        upstream = await connect()
        metrics.connected(time.perf_counter() - started)
        return upstream

    return timed


def _connector(
    profile: Profile, model: str, timeout: float, heartbeat: float, metrics: OneProvider | None
) -> Opener:
    if profile.kind == "gemini":
        from relay.providers.gemini.connection import open_gemini

        async def open_translated() -> Dialled | MessageSocket:
            return await open_gemini(profile, model, timeout, heartbeat, metrics)

        return open_translated
    url = upstream_url(profile.url, model)

    async def open_direct() -> Dialled:
        if profile.kind == "azure":
            # Entra tokens expire: a fresh one for every new connection.
            headers = await azure.handshake_headers(profile)
            return await open_upstream(
                url, "", timeout, headers=headers, credential_name=profile.credential_env
            )
        return await open_upstream(url, profile.credential, timeout)

    return open_direct
