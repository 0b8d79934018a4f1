"""Audio recording, only when the operator turns it on (RELAY_RECORD_AUDIO): each conversation's user and assistant
audio as 24 kHz PCM16 WAV files under RELAY_DATA_DIR/recordings/<conversation id>/, kept as long as its history.

The session hands over frames it is sending anyway (a cheap check of the first bytes picks audio out); decoding and
writing happen on one thread of their own, fed by a bounded queue, so recording never costs the forwarding path
more than that check and a put. A full queue drops audio and counts it.
"""

from __future__ import annotations

import base64
import queue
import shutil
import threading
import time
import wave
from collections.abc import Iterable
from pathlib import Path

import orjson
import structlog

from relay.protocol import API_RATE

_log = structlog.get_logger("relay.history")
_APPEND = b'"input_audio_buffer.append"'
_DELTA = b'"response.output_audio.delta"'
#: Frames waiting for the recording thread at most (about a minute of audio for a few sessions).
QUEUE_FRAMES = 20_000
_STOP = ("", "", b"")


class Recordings:
    """The recording thread of one relay process and where its files go."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._queue: queue.Queue[tuple[str, str, bytes]] = queue.Queue(maxsize=QUEUE_FRAMES)
        self._thread = threading.Thread(target=self._run, name="audio-recording", daemon=True)
        self._thread.start()
        self.dropped = 0

    def recorder(self, conversation_id: str) -> SessionRecorder:
        """The recorder of one session's conversation."""
        return SessionRecorder(self, conversation_id)

    def put(self, conversation_id: str, side: str, frame: bytes) -> None:
        """Queue one frame (`side`: user, assistant, or close) without waiting."""
        try:
            self._queue.put_nowait((conversation_id, side, frame))
        except queue.Full:
            self.dropped += 1

    def delete(self, conversation_ids: Iterable[str]) -> None:
        """Remove the recordings of these conversations (deleted or expired)."""
        for conversation_id in conversation_ids:
            if conversation_id and "/" not in conversation_id and not conversation_id.startswith("."):
                shutil.rmtree(self.root / conversation_id, ignore_errors=True)

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued, then end the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is on disk; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _run(self) -> None:
        while True:
            conversation_id, side, frame = self._queue.get()
            try:
                if (conversation_id, side, frame) == _STOP:
                    return
                if side == "close":
                    self._finish(self.root / conversation_id)
                else:
                    self._append(self.root / conversation_id, side, frame)
            except Exception as exc:  # a full disk must not end the thread
                _log.warning("recording_failed", problem=f"{type(exc).__name__}: {exc}"[:200])
            finally:
                self._queue.task_done()

    @staticmethod
    def _append(folder: Path, side: str, frame: bytes) -> None:
        event = orjson.loads(frame)
        data = event.get("audio") if side == "user" else event.get("delta")
        if not isinstance(data, str) or not data:
            return
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"{side}.pcm").open("ab") as out:
            out.write(base64.b64decode(data))

    @staticmethod
    def _finish(folder: Path) -> None:
        for side in ("user", "assistant"):
            raw = folder / f"{side}.pcm"
            if not raw.exists():
                continue
            target = folder / f"{side}.wav"
            previous = b""
            if target.exists():  # a session continued in the same folder: append to what is there
                with wave.open(str(target), "rb") as old:
                    previous = old.readframes(old.getnframes())
            with wave.open(str(target), "wb") as wav:
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(API_RATE)
                wav.writeframes(previous + raw.read_bytes())
            raw.unlink()


class SessionRecorder:
    """Picks one session's audio frames out of what it forwards."""

    __slots__ = ("_conversation_id", "_recordings")

    def __init__(self, recordings: Recordings, conversation_id: str) -> None:
        self._recordings = recordings
        self._conversation_id = conversation_id

    def to_upstream(self, text: str) -> None:
        """A frame the session sent upstream: an audio append is the user's audio (24 kHz)."""
        head = text[:120].encode()
        if _APPEND in head:
            self._recordings.put(self._conversation_id, "user", text.encode())

    def from_upstream(self, message: str | bytes) -> None:
        """A frame the upstream sent: an audio delta is the assistant's audio (24 kHz)."""
        head = message[:120] if isinstance(message, bytes) else message[:120].encode()
        if _DELTA in head:
            frame = message if isinstance(message, bytes) else message.encode()
            self._recordings.put(self._conversation_id, "assistant", frame)

    def close(self) -> None:
        """The session ended: its files become WAV."""
        self._recordings.put(self._conversation_id, "close", b"")
