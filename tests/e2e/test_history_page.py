"""The history panel in headless Chromium: a conversation is listed, opened as a transcript, continued as a new
session seeded with its text, and deleted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.fake.server import FakeRealtimeServer
from tests.e2e.conftest import LaunchBrowser, WebPage, microphone_wav, open_page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

StartRelay = Callable[..., Awaitable[Any]]


async def _type_turn(web: WebPage, words: str, done: int) -> None:
    await web.page.fill("#compose-input", words)
    await web.page.press("#compose-input", "Enter")
    await web.wait_for(f"d.events['response.done'] === {done} && d.state === 'connected'")


async def _entries(web: WebPage, count: int) -> list[dict[str, str]]:
    await web.page.wait_for_function(
        f"() => document.querySelectorAll('#history-list > li').length === {count}", timeout=15000
    )
    entries: list[dict[str, str]] = await web.page.evaluate(
        """() => [...document.querySelectorAll('#history-list > li')].map((li) => ({
            id: li.dataset.id,
            words: li.querySelector('.history-words').textContent,
            meta: li.querySelector('.history-meta').textContent,
        }))"""
    )
    return entries


async def test_the_page_lists_opens_continues_and_deletes_a_conversation(
    fake_upstream: FakeRealtimeServer, start_relay: StartRelay, launch_browser: LaunchBrowser, tmp_path: Path
) -> None:
    wav, _ = microphone_wav(tmp_path / "quiet.wav", [2.0])
    relay = await start_relay(upstream_url=fake_upstream.url, history="on", data_dir=str(tmp_path / "data"))
    web = await open_page(await launch_browser(wav, allow_microphone=False), relay.base_url)
    page = web.page
    assert await page.is_visible("#history-panel")
    assert await page.is_visible("#history-empty")

    # A typed conversation, then the socket closed: the panel lists it.
    await page.click("#connect-btn")
    await fake_upstream.wait_for_connection()
    await web.wait_for("d.state === 'connected'")
    await _type_turn(web, "Remember the number forty-two.", 1)
    await page.click("#connect-btn")
    (entry,) = await _entries(web, 1)
    assert entry["words"] == "Remember the number forty-two."
    assert "$" in entry["meta"] and " s" in entry["meta"]

    # Opened as a transcript.
    await page.click(f"#history-list > li[data-id='{entry['id']}'] [data-action='open']")
    await page.wait_for_selector("#history-transcript > li")
    lines = await page.eval_on_selector_all(
        "#history-transcript > li", "lines => lines.map(l => l.textContent)"
    )
    assert lines[0] == "You: Remember the number forty-two."
    assert lines[1].startswith("Assistant: You said: Remember the number forty-two.")
    await web.screenshot("history-transcript")

    # Continued: a new session whose upstream gets the old text items before the first response.
    await page.click(f"#history-list > li[data-id='{entry['id']}'] [data-action='continue']")
    record = await fake_upstream.wait_for_connection()
    await web.wait_for("d.state === 'connected'")
    await _type_turn(web, "Which number was it?", 1)
    seeded = [e["item"] for e in record.received if e.get("type") == "conversation.item.create"]
    assert seeded[0]["content"] == [{"type": "input_text", "text": "Remember the number forty-two."}]
    assert seeded[1]["role"] == "assistant" and seeded[1]["content"][0]["type"] == "output_text"
    first_response = next(i for i, e in enumerate(record.received) if e.get("type") == "response.create")
    assert first_response > record.received.index(
        next(e for e in record.received if e.get("item") == seeded[1])
    )
    await page.click("#connect-btn")
    entries = await _entries(web, 2)
    assert {e["id"] for e in entries} >= {entry["id"]}

    # Deleted: gone from the list and from the relay.
    await page.click(f"#history-list > li[data-id='{entry['id']}'] [data-action='delete']")
    (left,) = await _entries(web, 1)
    assert left["id"] != entry["id"]
    async with httpx.AsyncClient(base_url=relay.base_url) as http:
        assert (await http.get(f"/api/conversations/{entry['id']}")).status_code == 404
    assert web.errors == []
