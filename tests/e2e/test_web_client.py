"""The real web page in headless Chromium, with a WAV file as the microphone, through the real relay command to the
simulated model.

Covers: the audio path (44.1 kHz page → relay resampling → 24 kHz at the model), playback and transcripts, barge-in
with a truncate that matches what the player actually played, sign-in, upstream failure messages, the simulated
model badge and the language choice. Screenshots of the main states go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr

from relay.fake.server import FakeRealtimeServer
from tests.e2e.conftest import WAV_RATE, LaunchBrowser, WebPage, microphone_wav, open_page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

StartRelay = Callable[..., Awaitable[Any]]

API_RATE = 24000
TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"


def pcm16(data: bytes | bytearray) -> np.ndarray:
    """24 kHz PCM16LE bytes as float samples in [-1, 1)."""
    return np.frombuffer(bytes(data), dtype="<i2").astype(np.float64) / 32768.0


def best_correlation(reference: np.ndarray, recording: np.ndarray) -> tuple[float, int]:
    """Normalised correlation of `reference` with the best-aligned stretch of `recording`, and that lag (samples).

    The lag is found by FFT cross-correlation; the coefficient is then computed on the aligned window only.
    """
    if len(recording) < len(reference):
        recording = np.concatenate([recording, np.zeros(len(reference) - len(recording))])
    size = 1 << int(np.ceil(np.log2(len(recording) + len(reference))))
    cross = np.fft.irfft(np.fft.rfft(recording, size) * np.conj(np.fft.rfft(reference, size)), size)
    lag = int(np.argmax(cross[: len(recording) - len(reference) + 1]))
    window = recording[lag : lag + len(reference)]
    denominator = float(np.sqrt(np.dot(window, window) * np.dot(reference, reference)))
    return (float(np.dot(window, reference)) / denominator if denominator else 0.0), lag


def delivered_ms(sent: list[dict[str, Any]], item_id: str) -> float:
    """Milliseconds of audio the simulated model sent for an assistant item."""
    total = sum(
        len(base64.b64decode(e["delta"]))
        for e in sent
        if e.get("type") == "response.output_audio.delta" and e.get("item_id") == item_id
    )
    return total / 2 / API_RATE * 1000


def assistant_items(sent: list[dict[str, Any]]) -> list[str]:
    """Ids of the assistant items the model produced, in order."""
    return [
        e["item"]["id"]
        for e in sent
        if e.get("type") == "response.output_item.added" and e["item"].get("role") == "assistant"
    ]


async def chat_lines(web: WebPage) -> list[dict[str, str]]:
    """The chat log as shown: role, speaker label, text and the interrupted tag, in display order."""
    lines: list[dict[str, str]] = await web.page.evaluate(
        """() => [...document.querySelectorAll('#chat-log > li')].map((li) => ({
            role: li.classList.contains('user') ? 'user' : 'assistant',
            item: li.dataset.itemId,
            who: li.querySelector('.who').textContent,
            text: li.querySelector('.text').textContent,
            tag: li.querySelector('.tag').hidden ? '' : li.querySelector('.tag').textContent,
        }))"""
    )
    return lines


async def test_voice_turn_through_the_relay(
    fake_upstream: FakeRealtimeServer, start_relay: StartRelay, launch_browser: LaunchBrowser, tmp_path: Path
) -> None:
    """Speech captured at 44.1 kHz reaches the model at 24 kHz intact; the reply plays; both transcripts show."""
    fake_upstream.options.pace_audio = True  # the reply streams in real time, as a live model's does
    wav, source = microphone_wav(tmp_path / "turn.wav", [1.0, "Hello there, how are you today?", 2.5])
    relay = await start_relay(upstream_url=fake_upstream.url)
    web = await open_page(await launch_browser(wav), relay.base_url)
    page = web.page

    assert await page.is_hidden("#simulated-badge"), "the badge must only show for the simulated model"
    await page.click("#settings-toggle")
    await page.check("#transcription-input")
    # The browser's echo cancellation, noise suppression and gain control reshape the signal on purpose; the
    # fidelity check is about the relay's path, so capture it raw.
    for toggle in ("#echo-input", "#noise-input", "#gain-input"):
        await page.uncheck(toggle)
    await page.click("#settings-close")

    await page.click("#connect-btn")
    record = await fake_upstream.wait_for_connection()
    await web.wait_for("d.state === 'listening' && d.captureRms > 0.05")  # the user is speaking
    await web.screenshot("connected-listening")

    # The simulated model answers a voice turn by playing the user's speech back, with a transcript.
    await web.wait_for(
        "d.state === 'speaking' && document.querySelector('#chat-log .line.assistant .text')?.textContent.length > 8"
    )
    await web.screenshot("speaking-with-transcripts")
    await web.wait_for("d.events['response.done'] === 1 && d.state === 'listening'", timeout_s=20)

    debug = await web.debug()
    # The page ran at the browser's native rate and told the relay; the relay reported those rates back.
    assert debug["contextRate"] in (44100, 48000)
    assert debug["sessionInputRate"] == debug["contextRate"]
    assert debug["sessionOutputRate"] == debug["contextRate"]
    assert debug["connection"]["sentFrames"] > 0

    # Input transcription was switched on with a session.update of type realtime.
    updates = [e for e in record.received if e.get("type") == "session.update"]
    assert any(
        (u["session"].get("audio", {}).get("input", {}).get("transcription") or {}).get("model")
        == TRANSCRIPTION_MODEL
        and u["session"]["type"] == "realtime"
        for u in updates
    ), updates

    # What the model received is the source speech, resampled to 24 kHz.
    received = pcm16(record.input_audio)
    assert np.sqrt(np.mean(received**2)) > 0, "the model received silence"
    reference = soxr.resample(source.astype(np.float64) / 32768.0, WAV_RATE, API_RATE, quality="VHQ")
    speech = reference[int(0.9 * API_RATE) : int(3.5 * API_RATE)]  # the phrase, without most of the padding
    correlation, lag = best_correlation(speech, received)
    print(f"\ninput correlation with the source: {correlation:.4f} at lag {lag / API_RATE * 1000:.1f} ms")
    assert correlation >= 0.9

    # The reply was played in full: every sample the page received went through the player.
    (item,) = assistant_items(record.sent)
    assert debug["playedSamplesByItem"][item] > 0
    assert debug["playedSamplesByItem"][item] == debug["receivedSamplesByItem"][item]
    played_ms = debug["playedMsByItem"][item]
    assert abs(played_ms - delivered_ms(record.sent, item)) < 1.0

    # Both transcript lines, user first (ordered by item, whatever the arrival order of the events).
    lines = await chat_lines(web)
    assert [line["role"] for line in lines] == ["user", "assistant"]
    assert lines[0]["who"] == await web.string("chat.you")
    assert lines[0]["text"].startswith("(simulated transcript:")
    done = next(e for e in record.sent if e.get("type") == "response.output_audio_transcript.done")
    assert lines[1]["text"] == done["transcript"]

    # One turn measured, from the end of speech to the first reply sample played, and shown on the page.
    (latency,) = debug["turnLatenciesMs"]
    print(f"turn latency (speech_stopped arrival → reply audio started): {latency} ms")
    assert latency > 0
    assert f"{latency} ms" in (await page.text_content("#latency-out") or "")
    assert web.errors == []


@pytest.mark.parametrize("paced", [False, True], ids=["reply-sent-at-once", "reply-streamed-in-real-time"])
async def test_barge_in_truncates_at_what_was_played(
    fake_upstream: FakeRealtimeServer,
    start_relay: StartRelay,
    launch_browser: LaunchBrowser,
    tmp_path: Path,
    paced: bool,
) -> None:
    """Speaking over the reply stops it at once; the truncate sent matches the samples the player played.

    The reply either arrives whole before the barge-in (the model is done; only the page knows what was heard) or
    is still streaming (the model cancels it too, and late audio of the cut item must not play).
    """
    fake_upstream.options.pace_audio = paced
    # The second phrase starts while the first reply (the first phrase played back) is still playing.
    wav, _ = microphone_wav(
        tmp_path / "barge.wav", [1.0, "Tell me a story about the sea.", 0.9, "Wait, stop please.", 3.0]
    )
    relay = await start_relay(upstream_url=fake_upstream.url)
    web = await open_page(await launch_browser(wav), relay.base_url)
    await web.page.click("#connect-btn")
    record = await fake_upstream.wait_for_connection()

    await web.wait_for("d.bargeIns === 1", timeout_s=20)
    at_barge_in = await web.debug()
    await web.wait_for("d.events['response.done'] === 2 && d.state === 'listening'", timeout_s=20)
    debug = await web.debug()

    first, second = assistant_items(record.sent)[:2]
    truncates = [e for e in record.received if e.get("type") == "conversation.item.truncate"]
    assert len(truncates) == 1, truncates
    (truncate,) = truncates
    assert truncate["item_id"] == first
    assert truncate["content_index"] == 0
    end_ms = truncate["audio_end_ms"]
    played_ms = debug["playedMsByItem"][first]
    print(f"\nbarge-in: truncate audio_end_ms={end_ms}, player played {played_ms:.1f} ms")
    assert abs(end_ms - played_ms) <= 50
    assert debug["lastTruncate"]["audioEndMs"] == end_ms

    # It really was cut mid-reply (a streamed reply was also cancelled by the model, checked below), and
    # playback stopped there: nothing more of that item was played later.
    delivered = delivered_ms(record.sent, first)
    assert 0 < end_ms < delivered - (0 if paced else 100)
    # The truncate carries what the player reported when it stopped; had anything of the item played after
    # that, the final count would be ahead of it. (A snapshot taken when the page counted the barge-in can miss
    # the player's last report, which arrives a render quantum or two later.)
    assert abs(played_ms - end_ms) <= 1.5
    # The play time agrees with the wall clock between the first sample and the barge-in, less any gaps while
    # the player waited for late audio. Samples already rendered into the output path when the flush lands are
    # still heard, so the count may exceed the clock by up to that path's latency (as the browser reports it).
    wall_ms = at_barge_in["bargeInAtMs"] - at_barge_in["startedAtMs"][first]
    pipeline_ms = at_barge_in["outputLatencyMs"]
    starved_ms = debug["starvedMs"]
    print(
        f"barge-in: {wall_ms:.1f} ms of wall clock since the reply started, {starved_ms:.1f} ms of it starved; "
        f"output path {pipeline_ms} ms"
    )
    assert -50 <= end_ms - (wall_ms - starved_ms) <= pipeline_ms + 50

    # A streaming reply was cancelled by the model itself when the user spoke.
    done = [e["response"] for e in record.sent if e.get("type") == "response.done"]
    assert done[0]["status"] == ("cancelled" if paced else "completed")

    # The model accepted the truncate, and the page marks the line as interrupted.
    truncated = [e for e in record.sent if e.get("type") == "conversation.item.truncated"]
    assert [e["item_id"] for e in truncated] == [first]
    assert not [e for e in record.sent if e.get("type") == "error"]
    lines = await chat_lines(web)
    interrupted = [line for line in lines if line["item"] == first]
    assert interrupted and interrupted[0]["tag"] == await web.string("chat.interrupted")

    # The conversation went on: the reply to the second phrase played in full.
    assert debug["playedSamplesByItem"][second] == debug["receivedSamplesByItem"][second] > 0
    assert web.errors == []


async def test_sign_in_with_access_token(
    fake_upstream: FakeRealtimeServer, start_relay: StartRelay, launch_browser: LaunchBrowser, tmp_path: Path
) -> None:
    """With access control on, the page asks for a token, explains a wrong one, and connects with the right one."""
    token = "e2e-token-" + base64.urlsafe_b64encode(np.random.default_rng().bytes(12)).decode()
    wav, _ = microphone_wav(tmp_path / "quiet.wav", [4.0])
    relay = await start_relay(upstream_url=fake_upstream.url, access_tokens=token)
    web = await open_page(await launch_browser(wav), relay.base_url)
    page = web.page

    assert await page.is_visible("#signin-view")
    assert await page.is_hidden("#app-view")
    await web.screenshot("signed-out")

    await page.fill("#token-input", token + "-wrong")
    await page.click("#signin-submit")
    expected = await web.string("login.invalid")
    await page.wait_for_function(
        "(text) => document.querySelector('#signin-error').textContent === text", arg=expected, timeout=5000
    )
    assert await page.get_attribute("#token-input", "aria-invalid") == "true"
    assert await page.is_visible("#signin-view")
    await web.screenshot("signed-out-wrong-token")

    await page.fill("#token-input", token)
    await page.click("#signin-submit")
    await page.wait_for_selector("#app-view", state="visible", timeout=5000)
    assert await page.is_visible("#signout")
    cookies = await page.context.cookies()
    assert cookies and all(c["httpOnly"] for c in cookies), "the session cookie must be HttpOnly"
    assert token not in await page.content(), "the token must not stay in the page"

    await page.click("#connect-btn")
    record = await fake_upstream.wait_for_connection()
    await web.wait_for("d.state === 'listening'")
    assert record.handshake_status == 101

    # A socket refused before the upgrade (here: the sign-in cookie is gone) is explained by asking the relay again.
    await page.click("#connect-btn")
    await web.wait_for("d.state === 'disconnected'")
    await page.context.clear_cookies()
    await page.click("#connect-btn")
    await page.wait_for_selector("#signin-view", state="visible", timeout=5000)
    assert await page.text_content("#signin-error") == await web.string("connect.signedOut")
    assert (await web.debug())["lastClose"]["opened"] is False
    await page.fill("#token-input", token)
    await page.click("#signin-submit")
    await page.wait_for_selector("#app-view", state="visible", timeout=5000)
    assert await page.is_hidden("#error-box")
    assert (await web.debug())["state"] == "disconnected"

    # Signing out disconnects and returns to the sign-in screen.
    await page.click("#signout")
    await page.wait_for_selector("#signin-view", state="visible", timeout=5000)
    assert (await web.debug())["state"] == "disconnected"

    # A guesser is slowed down, and the page says how long to wait (the relay's Retry-After).
    template = await web.string("login.rateLimited")
    before, after = template.split("{seconds}")
    for _ in range(10):
        await page.fill("#token-input", "guess")
        await page.click("#signin-submit")
        await page.wait_for_function("() => !document.querySelector('#signin-submit').disabled")
        message = await page.text_content("#signin-error") or ""
        if message.startswith(before):
            break
    assert message.startswith(before) and message.endswith(after), message
    assert int(message[len(before) : len(message) - len(after)]) > 0
    assert web.errors == []


async def test_upstream_down_is_explained(
    fake_upstream: FakeRealtimeServer, start_relay: StartRelay, launch_browser: LaunchBrowser, tmp_path: Path
) -> None:
    """When the model service refuses or is gone, the page says so and what to do, in the chosen language."""
    wav, _ = microphone_wav(tmp_path / "quiet.wav", [4.0])
    relay = await start_relay(upstream_url=fake_upstream.url)
    web = await open_page(await launch_browser(wav), relay.base_url)
    page = web.page
    unavailable = await web.string("err.relay_upstream_unavailable")

    # The service answers the relay's handshake with HTTP 500.
    fake_upstream.options.refuse_status = 500
    await page.click("#connect-btn")
    await web.wait_for("d.state === 'error'")
    assert await page.text_content("#error-text") == unavailable
    assert await page.is_visible("#error-box")
    assert await page.text_content("#status-text") == await web.string("status.error")
    assert (await web.debug())["lastClose"]["code"] == 4502
    await web.screenshot("error-upstream-unavailable")

    # Dismiss, then try again with the service gone entirely.
    await page.click("#error-dismiss")
    await web.wait_for("d.state === 'disconnected'")
    assert await page.is_hidden("#error-box")
    fake_upstream.options.refuse_status = None
    await fake_upstream.stop()
    await page.click("#connect-btn")
    await web.wait_for("d.state === 'error'")
    assert await page.text_content("#error-text") == unavailable

    # Switching to Japanese re-renders the message; the phone layout keeps everything reachable.
    await page.select_option("#lang-select", "ja")
    assert await page.text_content("#error-text") == await web.string("err.relay_upstream_unavailable", "ja")
    assert await page.evaluate("document.documentElement.lang") == "ja"
    await page.set_viewport_size({"width": 390, "height": 844})
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390, (
        "no horizontal scrolling on a phone"
    )
    await web.screenshot("error-upstream-unavailable-ja-phone")
    assert web.errors == []


async def test_simulated_model_badge_and_language(
    start_relay: StartRelay, launch_browser: LaunchBrowser, tmp_path: Path
) -> None:
    """The demo relay is marked as a simulated model; the UI follows the browser's language and remembers a switch."""
    wav, _ = microphone_wav(tmp_path / "quiet.wav", [2.0])
    relay = await start_relay("--demo", api_key=None)
    web = await open_page(await launch_browser(wav), relay.base_url, locale="ja-JP")
    page = web.page

    assert await page.is_visible("#simulated-badge")
    assert (await page.text_content("#simulated-badge") or "").strip() == await web.string(
        "badge.simulated", "ja"
    )
    assert await page.evaluate("document.documentElement.lang") == "ja"
    assert await page.text_content("#connect-btn") == await web.string("btn.connect", "ja")
    await web.screenshot("simulated-badge-ja")

    await page.select_option("#lang-select", "en")
    await page.reload()
    await page.wait_for_selector("#loading", state="hidden")
    assert await page.evaluate("document.documentElement.lang") == "en"
    assert (await page.text_content("#simulated-badge") or "").strip() == await web.string("badge.simulated")
    assert web.errors == []


async def test_microphone_refused_then_typed_turn(
    fake_upstream: FakeRealtimeServer, start_relay: StartRelay, launch_browser: LaunchBrowser, tmp_path: Path
) -> None:
    """A blocked microphone is explained and the conversation still works by typing."""
    wav, _ = microphone_wav(tmp_path / "quiet.wav", [2.0])
    relay = await start_relay(upstream_url=fake_upstream.url)
    web = await open_page(await launch_browser(wav, allow_microphone=False), relay.base_url)
    page = web.page

    await page.click("#connect-btn")
    record = await fake_upstream.wait_for_connection()
    await web.wait_for("d.state === 'connected'")
    assert await page.text_content("#error-text") == await web.string("mic.denied")
    assert await page.get_attribute("#mic-btn", "aria-pressed") == "false"

    await page.fill("#compose-input", "What is the weather like?")
    await page.press("#compose-input", "Enter")
    await web.wait_for(
        "d.events['response.done'] === 1 && d.turnLatenciesMs.length === 1 && d.state === 'connected'"
    )
    created = [e for e in record.received if e.get("type") == "conversation.item.create"]
    assert created[0]["item"]["content"] == [{"type": "input_text", "text": "What is the weather like?"}]
    assert any(e.get("type") == "response.create" for e in record.received)
    (item,) = assistant_items(record.sent)
    debug = await web.debug()
    assert debug["playedSamplesByItem"][item] == debug["receivedSamplesByItem"][item] > 0
    lines = await chat_lines(web)
    assert [line["role"] for line in lines] == ["user", "assistant"]
    assert lines[0]["text"] == "What is the weather like?"
    assert lines[1]["text"].startswith("You said: What is the weather like?")
    print(f"\ntyped turn latency (send → reply audio started): {debug['turnLatenciesMs'][0]} ms")
    assert web.errors == []
