"""Test signals: tones, chirps and espeak-ng speech at any sample rate (PCM16 mono).

Speech is synthesised with ``espeak-ng -w`` (22050 Hz) and converted by ``sox`` to the wanted rate, then cached
in the system temp directory, so repeated runs and other test modules reuse the files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from relay.audio.measure import tone

__all__ = [
    "chirp",
    "read_wav",
    "speech_wav",
    "speech_wav_file",
    "tone",
    "write_wav",
]

Int16Array = npt.NDArray[np.int16]

CACHE_DIR = Path(tempfile.gettempdir()) / "realtime-relay-test-audio"
DEFAULT_TEXT = "Hello, this is a test of the realtime relay. Please tell me the weather in Paris."


def chirp(
    rate: int, seconds: float, f0: float = 100.0, f1: float = 8000.0, level_dbfs: float = -3.0
) -> Int16Array:
    """Exponential sine sweep from ``f0`` to ``f1`` Hz."""
    t = np.arange(round(rate * seconds)) / rate
    k = np.log(f1 / f0) / seconds
    phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
    return np.rint(32767 * 10 ** (level_dbfs / 20) * np.sin(phase)).astype(np.int16)


def write_wav(path: Path, samples: Int16Array, rate: int) -> None:
    """Write PCM16 mono samples as a WAV file."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def read_wav(path: Path) -> tuple[Int16Array, int]:
    """Read a PCM16 mono WAV file: (samples, rate)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(
                f"{path}: expected 16-bit mono, got {w.getsampwidth() * 8}-bit x{w.getnchannels()}"
            )
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy(), w.getframerate()


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is required for speech test signals (Debian package {name})")
    return found


def speech_wav_file(text: str = DEFAULT_TEXT, rate: int = 24000, pad_seconds: float = 0.0) -> Path:
    """Path of a cached 16-bit mono WAV of ``text`` spoken by espeak-ng at ``rate`` Hz.

    ``pad_seconds`` of silence are added at both ends (a browser loses the first few hundred ms of a fake
    microphone file before its worklet runs).
    """
    key = hashlib.sha256(f"v1|{text}|{rate}|{pad_seconds}".encode()).hexdigest()[:24]
    path = CACHE_DIR / f"speech-{rate}-{key}.wav"
    if path.exists():
        return path
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
        raw = Path(tmp) / "espeak.wav"
        converted = Path(tmp) / "converted.wav"
        subprocess.run([_tool("espeak-ng"), "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
        # -D: no dither, so the file is the same on every machine and run.
        subprocess.run(
            [
                _tool("sox"),
                "-D",
                str(raw),
                "-r",
                str(rate),
                "-b",
                "16",
                "-e",
                "signed-integer",
                "-c",
                "1",
                str(converted),
            ],
            check=True,
        )
        samples, got_rate = read_wav(converted)
        if got_rate != rate:
            raise RuntimeError(f"sox wrote {got_rate} Hz, wanted {rate} Hz")
        pad = np.zeros(round(pad_seconds * rate), dtype=np.int16)
        final = Path(tmp) / "final.wav"
        write_wav(final, np.concatenate((pad, samples, pad)), rate)
        # Atomic publish: concurrent test runs may build the same file.
        os.replace(final, path)
    return path


def speech_wav(text: str = DEFAULT_TEXT, rate: int = 24000) -> Int16Array:
    """``text`` spoken by espeak-ng, as PCM16 mono samples at ``rate`` Hz (cached)."""
    samples, _ = read_wav(speech_wav_file(text, rate))
    if not np.any(samples):
        raise RuntimeError("espeak-ng produced silence")
    return samples
