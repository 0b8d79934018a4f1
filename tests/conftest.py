"""Shared fixtures: the simulated upstream, the relay (in process or as a subprocess), and the secret scanner.

Every relay a test starts is reached through a `ScanningProxy`, and the whole suite fails if any byte a client
received contained the upstream API key.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest

from relay.fake.model import FakeOptions
from relay.fake.server import FakeRealtimeServer
from relay.providers.profiles import ProviderSet
from tests import sdk_events
from tests.harness import (
    InProcessRelay,
    LoopbackUrls,
    RelayProcess,
    ScanningProxy,
    env_name,
    start_in_process,
    start_process,
)

#: The upstream key for this test run: random, so finding it anywhere means it leaked from the relay.
TEST_API_KEY = "test-upstream-key-" + secrets.token_hex(12)


def _key_forms(key: str) -> list[bytes]:
    raw = key.encode()
    # The key could leak base64-encoded (inside an audio or JSON field) at any of three alignments.
    forms = [raw]
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw)[4 if pad else 0 :]
        forms.append(encoded[: len(encoded) - 4])
    return forms


_PROXIES: list[ScanningProxy] = []
#: Fixtures for tests against both simulated providers (`both`, `upstreams`).
pytest_plugins = ["tests.provider_fixtures"]

sdk_events.install()


@pytest.fixture(autouse=True)
def _events_match_the_sdk(request: pytest.FixtureRequest) -> Any:
    """Every event on a socket of this test validates against the `openai` package's types, or the test fails.

    A test that sends invalid client events on purpose says so with `@pytest.mark.invalid_client_events`; the
    server events it receives are still checked.
    """
    checker = sdk_events.EventChecker(
        check_client=request.node.get_closest_marker("invalid_client_events") is None,
        check_upstream=request.node.get_closest_marker("invalid_upstream_events") is None,
    )
    sdk_events.push(checker)
    yield checker
    sdk_events.pop()
    assert not checker.problems, "events that the openai SDK's types refuse:\n" + "\n".join(
        checker.problems[:20]
    )


@pytest.fixture(scope="session", autouse=True)
def _no_key_reaches_any_client() -> Any:
    yield
    leaks = [leak for proxy in _PROXIES for leak in proxy.leaks]
    scanned = sum(proxy.bytes_scanned for proxy in _PROXIES)
    assert not leaks, f"the API key reached a client ({len(leaks)} times in {scanned} bytes)"


async def scanned(port: int) -> ScanningProxy:
    """Put a key-scanning proxy in front of `port`; the suite fails if the key ever passes through it."""
    proxy = ScanningProxy(port, _key_forms(TEST_API_KEY))
    await proxy.start()
    _PROXIES.append(proxy)
    return proxy


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeRealtimeServer]:
    """The simulated Realtime server on 127.0.0.1, requiring the test key."""
    server = FakeRealtimeServer(FakeOptions(api_key=TEST_API_KEY))
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop()


Inner = TypeVar("Inner", InProcessRelay, RelayProcess)


class ProxiedRelay(LoopbackUrls, Generic[Inner]):
    """A running relay as clients see it: its URLs point at the scanning proxy; anything else is the inner one's."""

    def __init__(self, inner: Inner, proxy: ScanningProxy) -> None:
        self.inner: Inner = inner
        self.proxy = proxy
        self.port = proxy.port

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
async def relay_factory(
    fake_upstream: FakeRealtimeServer,
) -> AsyncIterator[Callable[..., Awaitable[ProxiedRelay[InProcessRelay]]]]:
    """Start the relay app in this event loop: `await relay_factory(max_sessions="2", ...)`."""
    started: list[ProxiedRelay[InProcessRelay]] = []

    async def start(
        upstream_url: str | None = None,
        api_key: str = TEST_API_KEY,
        providers: ProviderSet | None = None,
        **settings: str,
    ) -> ProxiedRelay[InProcessRelay]:
        inner = await start_in_process(upstream_url or fake_upstream.url, api_key, providers, **settings)
        relay = ProxiedRelay(inner, await scanned(inner.port))
        started.append(relay)
        return relay

    yield start
    for relay in started:
        await relay.proxy.stop()
        await relay.inner.stop()


@pytest.fixture
async def relay(
    relay_factory: Callable[..., Awaitable[ProxiedRelay[InProcessRelay]]],
) -> ProxiedRelay[InProcessRelay]:
    """The relay with default settings, in front of `fake_upstream`."""
    return await relay_factory()


@pytest.fixture
async def start_relay(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[ProxiedRelay[RelayProcess]]]]:
    """Start the real `python -m relay` command: `await start_relay(upstream_url=..., access_tokens="t")`."""
    started: list[ProxiedRelay[RelayProcess]] = []

    async def start(
        *args: str, upstream_url: str | None = None, api_key: str | None = TEST_API_KEY, **settings: str
    ) -> ProxiedRelay[RelayProcess]:
        env = {env_name(k): v for k, v in settings.items()}
        if upstream_url is not None:
            env["RELAY_UPSTREAM_URL"] = upstream_url
        if api_key is not None:
            env["OPENAI_API_KEY"] = api_key
        inner = await start_process(tmp_path, *args, env=env)
        relay = ProxiedRelay(inner, await scanned(inner.port))
        started.append(relay)
        return relay

    yield start
    for relay in started:
        await relay.proxy.stop()
        relay.inner.stop()
        log = relay.inner.log_text()
        assert TEST_API_KEY not in log, "the API key appeared in the relay's log"
