"""When and how a session moves to a new upstream socket while the client's socket stays open: pure decisions.

OpenAI ends every Realtime session after 60 minutes (`session_expired`, close 1001). The relay opens a new upstream
proactively once the current one is `age_seconds` old, only between responses and outside the user's speech; and
after an unexpected drop or an expiry, with backoff, unless the upstream said something fatal (a refused key, no
quota). The new upstream gets the session configuration the client set, the conversation as text items
(relay.conversations.replay) and the audio appended since the last commit; the client gets one relay-owned notice
and never a second `session.created`.
"""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from relay import protocol
from relay.conversations.items import Item
from relay.conversations.replay import item_create_events

#: The notice a client gets once its session continues on a new upstream.
NOTICE_TYPE = "relay.upstream.renewed"
#: Seconds to wait before each further connection attempt after a drop.
BACKOFF_SECONDS = (0.2, 1.0, 2.0, 4.0, 8.0)
#: Bytes of appended-but-uncommitted audio frames kept for the next upstream (about 40 s of 24 kHz PCM16).
UNCOMMITTED_BYTES = 2 * 1024 * 1024
#: Upstream error codes after which a new upstream would fail too (or would spend what should not be spent).
FATAL_CODES = frozenset(
    {
        "invalid_api_key",
        "insufficient_quota",
        "billing_hard_limit_reached",
        "account_deactivated",
        "model_not_found",
        "unsupported_country_region_territory",
    }
)
#: Relay failure codes (relay.upstream) worth another attempt: the rest (a refused key, 429) are not retried.
RETRYABLE_FAILURES = frozenset({protocol.UPSTREAM_UNAVAILABLE, protocol.UPSTREAM_TIMEOUT})
REPLAY_SESSION_EVENT = "relay_replay_session"
_APPEND_MARK = '"input_audio_buffer.append"'


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _api_rates(config: dict[str, Any]) -> dict[str, Any]:
    # The client's own PCM rates are the relay's business: the API is always told 24000.
    session = copy.deepcopy(config)
    audio = session.get("audio")
    for side in ("input", "output"):
        part = audio.get(side) if isinstance(audio, dict) else None
        fmt = part.get("format") if isinstance(part, dict) else None
        if isinstance(fmt, dict) and fmt.get("type", "audio/pcm") == "audio/pcm" and "rate" in fmt:
            fmt["rate"] = protocol.API_RATE
    return session


@dataclass(frozen=True)
class Replay:
    """What a new upstream is sent before the client's held frames, and the answers to swallow."""

    frames: list[str]
    #: Sent once the new upstream has taken the frames: the audio appended but not committed on the old one.
    audio: list[str]
    #: The event id of each replayed item's `conversation.item.create`, and the item's id.
    items_by_event: dict[str, str]


class Rollover:
    """One session's roll-over bookkeeping. Fed the events `SessionState` parses and the frames sent upstream."""

    def __init__(
        self,
        *,
        age_seconds: float,
        retries: int,
        defaults: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.age_seconds = age_seconds
        self.retries = retries
        self._clock = clock
        self.started = clock()
        #: The session configuration the new upstream must get: the server's defaults, then the client's updates.
        self.config: dict[str, Any] = {"type": "realtime", **copy.deepcopy(defaults or {})}
        self._uncommitted: deque[str] = deque()
        self._uncommitted_bytes = 0
        self._speaking = False
        #: The current upstream said `session_expired`: its close is the cue to roll over, not to end.
        self.expired = False
        #: The current upstream said something fatal: no new upstream is tried.
        self.fatal = False
        self.attempts = 0

    # -- what happens ----------------------------------------------------------------------------------------

    def from_client(self, event: dict[str, Any]) -> None:
        """A client event the relay forwards: configuration to keep, audio buffer resets."""
        kind = event.get("type")
        if kind == "session.update" and isinstance(event.get("session"), dict):
            _merge(self.config, event["session"])
        elif kind in ("input_audio_buffer.commit", "input_audio_buffer.clear"):
            self._forget_audio()

    def swallow(self, event: dict[str, Any]) -> bool:
        """Whether an upstream event is the relay's business only (True: the client must not see it)."""
        kind = event.get("type")
        if kind == "error":
            error = event.get("error")
            code = error.get("code") if isinstance(error, dict) else None
            if code == "session_expired" and self.retries > 0:
                self.expired = True
                return True
            if code in FATAL_CODES:
                self.fatal = True
        elif kind in ("input_audio_buffer.committed", "input_audio_buffer.cleared"):
            self._forget_audio()
        elif kind == "response.done":
            # The upstream did useful work: a later drop starts its retries afresh.
            self.attempts = 0
        elif kind == "input_audio_buffer.speech_started":
            self._speaking = True
        elif kind == "input_audio_buffer.speech_stopped":
            self._speaking = False
        return False

    def sent(self, text: str) -> None:
        """A frame went upstream: an audio append is kept until a commit makes it part of an item."""
        if _APPEND_MARK not in text[:120]:
            return
        self._uncommitted.append(text)
        self._uncommitted_bytes += len(text)
        while self._uncommitted_bytes > UNCOMMITTED_BYTES and self._uncommitted:
            self._uncommitted_bytes -= len(self._uncommitted.popleft())

    def _forget_audio(self) -> None:
        self._uncommitted.clear()
        self._uncommitted_bytes = 0

    # -- decisions -------------------------------------------------------------------------------------------

    def due(self, responses_in_progress: int) -> bool:
        """Time for a proactive roll-over: the upstream is old enough, no response runs, the user is not speaking."""
        return (
            self.age_seconds > 0
            and self.clock_age() >= self.age_seconds
            and responses_in_progress == 0
            and not self._speaking
        )

    def clock_age(self) -> float:
        """Seconds since the current upstream opened."""
        return self._clock() - self.started

    def seconds_until_due(self) -> float:
        """How long until the current upstream reaches the roll-over age."""
        return max(0.0, self.age_seconds - self.clock_age())

    def may_retry(self, failure_code: str | None = None) -> bool:
        """After a drop, an expiry or a failed attempt: may another upstream be tried?"""
        if self.fatal or self.attempts >= self.retries:
            return False
        return failure_code is None or failure_code in RETRYABLE_FAILURES

    def next_delay(self, reason: str) -> float:
        """The backoff before the next attempt (counts the attempt): none for the first attempt of a planned
        roll-over or after an expiry, which are no sign of trouble."""
        first = self.attempts == 0
        delay = BACKOFF_SECONDS[min(self.attempts, len(BACKOFF_SECONDS) - 1)]
        self.attempts += 1
        return 0.0 if first and reason in ("age", "expired") else delay

    def renewed(self) -> None:
        """A new upstream took over: its age counts from now. Its retries start afresh only once it answered a
        response (an upstream that drops again at once must not be retried forever)."""
        self.started = self._clock()
        self.expired = False

    def replay(self, items: Sequence[Item]) -> Replay:
        """Frames for a new upstream: the configuration, the conversation as text, the uncommitted audio."""
        creates = item_create_events(items)
        update = {
            "type": "session.update",
            "event_id": REPLAY_SESSION_EVENT,
            "session": _api_rates(self.config),
        }
        frames = [protocol.dumps(update), *(protocol.dumps(e) for e in creates)]
        return Replay(
            frames, list(self._uncommitted), {str(e["event_id"]): str(e["item"]["id"]) for e in creates}
        )

    def notice(self, reason: str, gap_seconds: float, items: int) -> str:
        """The relay-owned event telling the client its session goes on over a new upstream."""
        return protocol.dumps(
            {
                "type": NOTICE_TYPE,
                "event_id": protocol.new_event_id(),
                "reason": reason,
                "gap_ms": round(gap_seconds * 1000),
                "replayed_items": items,
            }
        )
