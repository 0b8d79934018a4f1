"""The SDK validation itself: it refuses what the SDK refuses, and names the SDK release it was checked against."""

from __future__ import annotations

import re

import openai

from tests.harness import REPO
from tests.sdk_events import SDK_VERSION, client_event_problems, server_event_problems


def test_the_documented_sdk_version_is_the_one_installed() -> None:
    notes = (REPO / "docs" / "protocol-notes.md").read_text()
    [documented] = re.findall(r"checked against \*\*openai ([0-9.]+)\*\*", notes)
    assert documented == SDK_VERSION == openai.__version__


def test_server_events_are_checked_field_by_field_and_key_by_key() -> None:
    truncated = {"type": "conversation.item.truncated", "event_id": "e", "item_id": "i", "content_index": 0}
    assert server_event_problems({**truncated, "audio_end_ms": 120}) == []
    assert server_event_problems({**truncated, "audio_end_ms": "soon"})  # wrong type
    assert server_event_problems(truncated)  # missing field
    assert server_event_problems({**truncated, "audio_end_ms": 1, "surprise": True})  # unknown key
    assert server_event_problems({"type": "response.audio.delta", "event_id": "e"})  # a beta name


def test_client_events_are_checked_and_the_relay_rate_extension_only_where_sent_to_the_relay() -> None:
    update = {
        "type": "session.update",
        "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 48000}}}},
    }
    assert client_event_problems(update, relay_rates=True) == []
    assert client_event_problems(update)  # what reaches the model must carry 24000
    assert client_event_problems({"type": "session.hack"})
    assert client_event_problems(
        {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": 1.5}
    )
