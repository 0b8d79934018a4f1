"""Azure OpenAI (GA): the `/openai/v1/realtime?model=<deployment>` URL, its `api-key` header or an Entra ID
bearer token, and the session defaults Azure needs.

Azure accepts `semantic_vad` but never emits `input_audio_buffer.speech_started` with it, so a client relying on
that event for barge-in would never interrupt the model: Azure sessions default to `server_vad`.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from typing import Any

from relay import protocol
from relay.protocol import CloseCode
from relay.providers.profiles import Profile
from relay.upstream import UpstreamFailure

#: The turn detection Azure sessions start with (see the module docstring for why).
AZURE_TURN_DETECTION: dict[str, Any] = {"type": "server_vad"}
#: A token command that takes longer than this is treated as failed.
TOKEN_COMMAND_TIMEOUT = 15.0
#: No bearer token is anywhere near this long; more output is not a token.
_MAX_TOKEN_CHARS = 16384


def session_defaults() -> dict[str, Any]:
    """Session fields applied to every Azure session before the client's own."""
    return {"audio": {"input": {"turn_detection": dict(AZURE_TURN_DETECTION)}}}


def _token_failure(profile: Profile, why: str) -> UpstreamFailure:
    return UpstreamFailure(
        protocol.UPSTREAM_AUTH_FAILED,
        f"The relay could not get an Entra ID token for provider {profile.name!r}: {why}. This is a server "
        "configuration problem: the operator must check the profile's token_command or token_file.",
        CloseCode.UPSTREAM_AUTH,
        "token",
    )


def _token_from_output(text: str) -> str:
    """A bare token, or the `accessToken` of `az account get-access-token`'s JSON."""
    text = text.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return ""
        token = parsed.get("accessToken") or parsed.get("access_token") if isinstance(parsed, dict) else None
        return token if isinstance(token, str) else ""
    return text if len(text) <= _MAX_TOKEN_CHARS and not any(ch.isspace() for ch in text) else ""


async def entra_token(profile: Profile) -> str:
    """A fresh bearer token from the profile's token file or command; raises `UpstreamFailure` without one."""
    if profile.token_file is not None:
        try:
            token = _token_from_output(profile.token_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise _token_failure(profile, f"the token file cannot be read ({exc.strerror})") from None
        if not token:
            raise _token_failure(profile, "the token file holds no token")
        return token
    try:
        process = await asyncio.create_subprocess_exec(
            *shlex.split(profile.token_command),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        raise _token_failure(profile, f"the token command cannot be run ({exc.strerror})") from None
    try:
        async with asyncio.timeout(TOKEN_COMMAND_TIMEOUT):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise _token_failure(
            profile, f"the token command took longer than {TOKEN_COMMAND_TIMEOUT:g} s"
        ) from None
    if process.returncode != 0:
        raise _token_failure(profile, f"the token command exited with status {process.returncode}")
    token = _token_from_output(out.decode("utf-8", errors="replace"))
    if not token:
        raise _token_failure(profile, "the token command printed no token")
    return token


async def handshake_headers(profile: Profile) -> dict[str, str]:
    """The headers that authenticate one new Azure connection: an Entra token when configured, else `api-key`."""
    if profile.token_command or profile.token_file is not None:
        return {"Authorization": f"Bearer {await entra_token(profile)}"}
    return {"api-key": profile.credential}
