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
    #: Right after sending the Nth server event of a type (`"response.done:2"`; N defaults to 1), abort the TCP
    #: connection without a close frame: a drop at a chosen point of the protocol.
    drop_at_event: str | None = None
    #: After sending this many server events, send one text frame that is not JSON.
    garbage_after_events: int | None = None
    #: Seconds between `response.created` and the first `response.output_audio.delta` (or text delta). The API
    #: takes a few hundred milliseconds; 0 makes replies start at once.
    first_audio_delay: float = 0.3
    #: Pace audio deltas after the first at `audio_speed` times real time; off sends them as fast as possible.
    pace_audio: bool = True
    #: How many times faster than real time paced audio leaves (the API sends ahead, so clients build a backlog).
    audio_speed: float = 3.0
    #: Shortest and longest audio delta in milliseconds; each delta's length is drawn between them.
    chunk_ms: tuple[int, int] = (40, 320)
    #: Seed of the chunk-length draws (None: a fresh draw each response).
    seed: int | None = None
    #: Session length; then `error` code `session_expired` and close 1001.
    session_seconds: float = 3600.0
    #: Seconds from a commit to the first delta of its input transcription (which may then follow the reply).
    transcription_delay: float = 0.4
    #: Fault switch: every response ends `failed` (status_details.error type `server_error`).
    fail_responses: bool = False
    #: Fault switch: responses after this many in a session fail with `rate_limit_exceeded`.
    rate_limit_after_responses: int | None = None
    #: Fault switch: after this many server events, send one `error` of type `server_error`; the session goes on.
    server_error_after_events: int | None = None
    #: Fault switch: input transcriptions end with `conversation.item.input_audio_transcription.failed`.
    fail_transcription: bool = False
    #: Imitate the drift reported of the real model: after assistant turns replayed as text, answer in text
    #: (relay.fake.replies.answers_in_text). Off by default; the roll-over tests turn it on.
    text_after_text_history: bool = False
    #: Keep per-connection recordings (events, audio) for inspection. Turn off for long-running demos.
    record: bool = True
