"""Knobs of the simulated Realtime server, including the switches that make it misbehave on purpose."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeOptions:
    """How the simulated server behaves. Every field is optional; the defaults give a fast, well-behaved server.

    The server copies these at each handshake, so a test may change them between connections.
    """

    #: When set, the handshake must carry `Authorization: Bearer <api_key>` (or the browser-style subprotocol
    #: `openai-insecure-api-key.<api_key>`), else the upgrade is answered with HTTP 401.
    api_key: str | None = None
    #: Answer every handshake with this HTTP status and an OpenAI-like JSON error body.
    refuse_status: int | None = None
    #: Seconds to stall before answering the handshake (to exercise connect timeouts).
    handshake_delay: float = 0.0
    #: After sending this many server events, abort the TCP connection without a close frame.
    drop_after_events: int | None = None
    #: After sending this many server events, send one text frame that is not JSON.
    garbage_after_events: int | None = None
    #: Seconds between `response.created` and the first `response.output_audio.delta` (or text delta).
    first_audio_delay: float = 0.0
    #: Send audio deltas after the first at real-time pace instead of as fast as possible.
    pace_audio: bool = False
    #: Session length; then `error` code `session_expired` and close 1001.
    session_seconds: float = 3600.0
    #: Keep per-connection recordings (events, audio) for inspection. Turn off for long-running demos.
    record: bool = True
