"""Azure OpenAI GA through the relay, against a recording upstream: a small real WebSocket server in the test that
records each request line and its headers and answers as the GA protocol does (session.created, session.updated).

Checked: the `/openai/v1/realtime?model=<deployment>` URL without `api-version`, the `api-key` header (and no
bearer), or an Entra ID bearer token from a command or a file that is fetched afresh for every connection, and the
`server_vad` default that keeps barge-in alive on Azure."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI
from websockets.asyncio.server import Server, ServerConnection, serve

from relay.config import GA_VOICES
from relay.fake.session_config import default_session
from relay.providers.profiles import Profile, ProviderSet
from tests.conftest import TEST_API_KEY, ProxiedRelay
from tests.harness import InProcessRelay

CLIENT_TOKEN = "client-side-token-not-the-key"
DEPLOYMENT = "my-realtime-deployment"


@dataclass
class RecordingUpstream:
    """Records every handshake's request line and headers, and the session.update events that follow."""

    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    server: Server | None = None

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.requests.append((ws.request.path, {k.lower(): v for k, v in ws.request.headers.raw_items()}))
        session = default_session(DEPLOYMENT, int(time.time()) + 3600)
        await ws.send(json.dumps({"type": "session.created", "event_id": "event_1", "session": session}))
        async for raw in ws:
            event = json.loads(raw)
            if event.get("type") == "session.update":
                self.updates.append(event)
                detection = event["session"].get("audio", {}).get("input", {}).get("turn_detection")
                if detection is not None:
                    session["audio"]["input"]["turn_detection"] = {
                        **session["audio"]["input"]["turn_detection"],
                        **detection,
                    }
                await ws.send(
                    json.dumps({"type": "session.updated", "event_id": "event_2", "session": session})
                )

    @property
    def base(self) -> str:
        assert self.server is not None
        port = next(iter(self.server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/openai/v1/realtime"


@pytest.fixture
async def recording() -> AsyncIterator[RecordingUpstream]:
    upstream = RecordingUpstream()
    upstream.server = await serve(upstream.handle, "127.0.0.1", 0)
    try:
        yield upstream
    finally:
        upstream.server.close()
        await upstream.server.wait_closed()


def azure_profile(url: str, **changes: Any) -> Profile:
    base = Profile(
        "azure", "azure", url, (DEPLOYMENT,), DEPLOYMENT, "AZURE_OPENAI_API_KEY", TEST_API_KEY, "", GA_VOICES
    )
    return replace(base, **changes)


async def first_session(relay: ProxiedRelay[InProcessRelay]) -> Any:
    client = AsyncOpenAI(api_key=CLIENT_TOKEN, base_url=f"{relay.base_url}/v1")
    async with client.realtime.connect(model=DEPLOYMENT, extra_query={"provider": "azure"}) as connection:
        async for event in connection:
            if event.type in ("session.created", "error"):
                return event
    raise AssertionError("no session.created")


async def test_url_api_key_header_and_server_vad_default(
    recording: RecordingUpstream, relay_factory: Callable[..., Awaitable[ProxiedRelay[InProcessRelay]]]
) -> None:
    relay = await relay_factory(providers=ProviderSet([azure_profile(recording.base)]))
    created = await first_session(relay)
    assert created.type == "session.created"
    path, headers = recording.requests[0]
    assert path == f"/openai/v1/realtime?model={DEPLOYMENT}"
    assert "api-version" not in path
    assert headers["api-key"] == TEST_API_KEY
    assert "authorization" not in headers
    # The relay's defaults asked for server_vad, and the session the client first sees has it.
    assert recording.updates[0]["session"]["audio"]["input"]["turn_detection"] == {"type": "server_vad"}
    assert created.session.audio.input.turn_detection.type == "server_vad"


async def test_entra_token_from_a_command_is_fetched_for_every_connection(
    tmp_path: Path,
    recording: RecordingUpstream,
    relay_factory: Callable[..., Awaitable[ProxiedRelay[InProcessRelay]]],
) -> None:
    counter = tmp_path / "count"
    script = tmp_path / "token.py"
    # Prints az-style JSON with a new token each run, as `az account get-access-token` would after expiry.
    script.write_text(
        "import json, pathlib, sys\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\n"
        "p.write_text(str(n))\n"
        "print(json.dumps({'accessToken': f'entra-token-{n}', 'tokenType': 'Bearer'}))\n"
    )
    profile = azure_profile(recording.base, credential="", token_command=f"{sys.executable} {script}")
    relay = await relay_factory(providers=ProviderSet([profile]))
    await first_session(relay)
    await first_session(relay)
    tokens = [headers.get("authorization") for _, headers in recording.requests]
    assert tokens == ["Bearer entra-token-1", "Bearer entra-token-2"]
    assert all("api-key" not in headers for _, headers in recording.requests)


async def test_entra_token_from_a_file_is_read_for_every_connection(
    tmp_path: Path,
    recording: RecordingUpstream,
    relay_factory: Callable[..., Awaitable[ProxiedRelay[InProcessRelay]]],
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token-a\n")
    relay = await relay_factory(
        providers=ProviderSet([azure_profile(recording.base, credential="", token_file=token_file)])
    )
    await first_session(relay)
    token_file.write_text("file-token-b\n")  # a sidecar refreshed it
    await first_session(relay)
    assert [h["authorization"] for _, h in recording.requests] == [
        "Bearer file-token-a",
        "Bearer file-token-b",
    ]


async def test_a_failing_token_command_is_a_clear_error_before_any_connection(
    tmp_path: Path,
    recording: RecordingUpstream,
    relay_factory: Callable[..., Awaitable[ProxiedRelay[InProcessRelay]]],
) -> None:
    script = tmp_path / "fail.py"
    script.write_text("import sys\nprint('secret-looking-output')\nsys.exit(3)\n")
    profile = azure_profile(recording.base, credential="", token_command=f"{sys.executable} {script}")
    relay = await relay_factory(providers=ProviderSet([profile]))
    error = await first_session(relay)
    assert error.type == "error"
    assert error.error.code == "relay_upstream_auth_failed"
    assert "provider 'azure'" in error.error.message and "exited with status 3" in error.error.message
    assert "secret-looking-output" not in error.error.message
    assert recording.requests == []
