"""Fixtures for tests against both simulated providers: the OpenAI and Gemini Live servers and a relay in front
of both. Import the fixtures by name into a test module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from relay.config import GA_VOICES, GEMINI_VOICES
from relay.fake.gemini.options import GeminiOptions
from relay.fake.gemini.server import FakeGeminiServer
from relay.fake.server import FakeRealtimeServer
from relay.providers.profiles import GEMINI_MODEL, Profile, ProviderSet
from tests.conftest import TEST_API_KEY, ProxiedRelay
from tests.harness import InProcessRelay


@dataclass
class Upstreams:
    openai: FakeRealtimeServer
    gemini: FakeGeminiServer
    checker: Any  # tests.gemini_checks.GeminiChecker

    def providers(self) -> ProviderSet:
        return ProviderSet(
            [
                Profile(
                    "openai",
                    "openai",
                    self.openai.url,
                    ("gpt-realtime",),
                    "gpt-realtime",
                    "OPENAI_API_KEY",
                    TEST_API_KEY,
                    "marin",
                    GA_VOICES,
                    simulated=True,
                ),
                Profile(
                    "gemini",
                    "gemini",
                    self.gemini.url,
                    (GEMINI_MODEL,),
                    GEMINI_MODEL,
                    "GEMINI_API_KEY",
                    TEST_API_KEY,
                    "Puck",
                    GEMINI_VOICES,
                    simulated=True,
                ),
            ]
        )


@pytest.fixture
async def upstreams(fake_upstream: FakeRealtimeServer) -> AsyncIterator[Upstreams]:
    # Imported here: google-genai takes a second to import, which only these tests should pay.
    from tests.gemini_checks import GeminiChecker

    checker = GeminiChecker()
    gemini = FakeGeminiServer(GeminiOptions(api_key=TEST_API_KEY, check=checker))
    await gemini.start("127.0.0.1", 0)
    try:
        yield Upstreams(fake_upstream, gemini, checker)
    finally:
        await gemini.stop()
    # Every message the simulated Gemini server sent went through the check.
    assert checker.checked == sum(len(record.sent) for record in gemini.connections)
    assert not checker.problems, "messages google-genai's LiveServerMessage refuses:\n" + "\n".join(
        checker.problems
    )


@pytest.fixture
async def both(
    upstreams: Upstreams, relay_factory: Callable[..., Awaitable[ProxiedRelay[InProcessRelay]]]
) -> ProxiedRelay[InProcessRelay]:
    return await relay_factory(providers=upstreams.providers())
