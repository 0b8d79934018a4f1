"""Energy-based voice activity detection with hysteresis, on the 24 kHz PCM16 input stream.

Positions are sample indices on the timeline of all audio received in the session (24 samples = 1 ms), so the
events it reports line up with OpenAI's `audio_start_ms` / `audio_end_ms`.

How it decides, per 10 ms frame:
- speech starts when `ONSET_FRAMES` consecutive frames reach the "on" level; the reported start is refined to the
  first sample that reaches the on amplitude, so a tone burst is placed to within a millisecond;
- speech stops once the level stays under the lower "off" level (the hysteresis gap keeps the fading tail of a
  word from flapping) for `silence_duration_ms`; the reported end is where that silence began.

The on level follows the session's `threshold` (0..1, OpenAI's VAD probability) on a dB scale: 0.5 → -40 dBFS,
each 0.1 moves it 6 dB. That keeps the documented meaning "higher threshold needs louder audio".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from relay.protocol import API_RATE

FRAME_SAMPLES = API_RATE // 100
ONSET_FRAMES = 2
HYSTERESIS_DB = 6.0
_FULL_SCALE = 32768.0


@dataclass(frozen=True)
class VadSettings:
    """The turn-detection knobs the detector honours."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class VadEvent:
    """A speech boundary. `sample` is where speech began or ended; `detected_at` is where it was decided."""

    kind: Literal["speech_started", "speech_stopped"]
    sample: int
    detected_at: int


def on_level_db(threshold: float) -> float:
    """The frame RMS level (dBFS) at which a frame counts as speech, for an OpenAI-style threshold."""
    return -70.0 + 60.0 * threshold


class EnergyVad:
    """Streaming detector: feed PCM16LE bytes with `process`, get speech boundaries back."""

    def __init__(self, settings: VadSettings) -> None:
        self._settings = settings
        self._pending = bytearray()  # bytes not yet forming a whole frame
        self._position = 0  # samples consumed into frames so far
        self._in_speech = False
        self._onset_run = 0
        self._onset_start = 0
        self._silence_run = 0
        self._silence_start = 0
        # The last frames before and during a tentative onset, to place the start precisely.
        self._history = np.zeros(0, dtype=np.int16)
        self._history_start = 0

    @property
    def in_speech(self) -> bool:
        """Whether the detector is inside a speech segment."""
        return self._in_speech

    @property
    def position(self) -> int:
        """Samples received so far (including a partial frame not yet analysed)."""
        return self._position + len(self._pending) // 2

    @property
    def settings(self) -> VadSettings:
        """The settings in force."""
        return self._settings

    def update_settings(self, settings: VadSettings) -> None:
        """Change thresholds and timings; takes effect from the next frame."""
        self._settings = settings

    def reset(self) -> None:
        """Forget any speech in progress (after a manual commit or a buffer clear); the timeline keeps going."""
        self._in_speech = False
        self._onset_run = 0
        self._silence_run = 0

    def process(self, pcm: bytes) -> list[VadEvent]:
        """Analyse more audio; return the speech boundaries it completes, in order."""
        self._pending += pcm
        usable = (len(self._pending) // (2 * FRAME_SAMPLES)) * FRAME_SAMPLES
        if usable == 0:
            return []
        samples = np.frombuffer(bytes(self._pending[: usable * 2]), dtype="<i2")
        del self._pending[: usable * 2]
        events: list[VadEvent] = []
        on_db = on_level_db(self._settings.threshold)
        off_db = on_db - HYSTERESIS_DB
        frames = samples.reshape(-1, FRAME_SAMPLES).astype(np.float64)
        levels = 10.0 * np.log10(np.mean(frames * frames, axis=1) / (_FULL_SCALE * _FULL_SCALE) + 1e-20)
        for index, level in enumerate(levels.tolist()):
            frame_start = self._position
            frame = samples[index * FRAME_SAMPLES : (index + 1) * FRAME_SAMPLES]
            self._position += FRAME_SAMPLES
            if self._in_speech:
                event = self._track_silence(level, off_db, frame_start)
            else:
                event = self._track_onset(level, on_db, frame_start, frame)
            if event is not None:
                events.append(event)
        return events

    def _track_onset(
        self, level: float, on_db: float, frame_start: int, frame: npt.NDArray[np.int16]
    ) -> VadEvent | None:
        if level < on_db:
            self._onset_run = 0
            self._history = frame
            self._history_start = frame_start
            return None
        if self._onset_run == 0:
            self._onset_start = frame_start
            # Keep the quiet frame before the onset too: the burst may have begun inside it.
            if self._history_start + len(self._history) != frame_start:
                self._history = np.zeros(0, dtype=np.int16)
                self._history_start = frame_start
        self._history = np.concatenate([self._history, frame])
        self._onset_run += 1
        if self._onset_run < ONSET_FRAMES:
            return None
        self._in_speech = True
        self._onset_run = 0
        self._silence_run = 0
        start = self._refine_start(on_db)
        return VadEvent("speech_started", start, self._position)

    def _refine_start(self, on_db: float) -> int:
        # A sinusoid at the on level has a peak of sqrt(2) times its RMS; the first sample that loud marks
        # the onset far more precisely than the 10 ms frame grid.
        amplitude = _FULL_SCALE * math.pow(10.0, on_db / 20.0) * math.sqrt(2.0)
        loud = np.flatnonzero(np.abs(self._history.astype(np.int32)) >= amplitude)
        if len(loud) == 0:
            return self._onset_start
        return self._history_start + int(loud[0])

    def _track_silence(self, level: float, off_db: float, frame_start: int) -> VadEvent | None:
        if level >= off_db:
            self._silence_run = 0
            return None
        if self._silence_run == 0:
            self._silence_start = frame_start
        self._silence_run += 1
        if self._silence_run * FRAME_SAMPLES * 1000 < self._settings.silence_duration_ms * API_RATE:
            return None
        self._in_speech = False
        self._silence_run = 0
        self._history = np.zeros(0, dtype=np.int16)
        self._history_start = self._position
        return VadEvent("speech_stopped", self._silence_start, self._position)
