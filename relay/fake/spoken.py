"""Words the simulated model can hear: text carried by audio, so a voice turn can name a tool.

The simulated model recognises no speech, yet a voice turn must be able to say "what is the current time" the way
a user would. `say()` renders text as a voiced-band tone sequence (one tone per character, continuous phase, two
marker tones first); `hear()` finds that sequence in committed input audio and reads the text back. The signal
survives the relay's resampling (any rate to 24 kHz) and a browser's capture, and ordinary speech never decodes
(no marker tones), so other voice turns are unaffected.
"""

from __future__ import annotations

import numpy as np

from relay.protocol import API_RATE

ALPHABET = " abcdefghijklmnopqrstuvwxyz0123456789.-'?"
_BASE_HZ = 600.0
_STEP_HZ = 50.0
_MARKERS_HZ = (3000.0, 3200.0)
SYMBOL_SECONDS = 0.06
_AMPLITUDE = 0.3
#: Below this fraction of the loudest 5 ms block, audio counts as silence.
_SILENCE_RATIO = 0.1
_TOLERANCE_HZ = 15.0


def _tone(index: int) -> float:
    return _BASE_HZ + _STEP_HZ * index


def say(text: str, rate: int = API_RATE) -> bytes:
    """`text` as spoken words the simulated model hears: PCM16LE mono at `rate` (characters outside
    `ALPHABET` are left out)."""
    freqs = list(_MARKERS_HZ) + [_tone(ALPHABET.index(ch)) for ch in text.lower() if ch in ALPHABET]
    per_symbol = round(SYMBOL_SECONDS * rate)
    instantaneous = np.repeat(np.array(freqs), per_symbol)
    phase = 2 * np.pi * np.cumsum(instantaneous) / rate
    signal = _AMPLITUDE * np.sin(phase)
    fade = np.minimum(1.0, np.minimum(np.arange(len(signal)), np.arange(len(signal))[::-1]) / (0.005 * rate))
    pcm: bytes = (signal * fade * 32767).astype("<i2").tobytes()
    return pcm


def hear(pcm: bytes, rate: int = API_RATE) -> str:
    """The words `say()` put in `pcm` (PCM16LE mono at `rate`), or "" when it carries none."""
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float64) / 32768
    block = max(1, int(0.005 * rate))
    usable = len(samples) // block * block
    if usable == 0:
        return ""
    levels = np.sqrt(np.mean(samples[:usable].reshape(-1, block) ** 2, axis=1))
    loudest = float(levels.max())
    if loudest < 0.01:
        return ""
    floor = loudest * _SILENCE_RATIO
    onset = int(np.argmax(levels > floor)) * block
    per_symbol = round(SYMBOL_SECONDS * rate)
    symbols: list[float] = []
    start = onset
    while start + per_symbol <= len(samples):
        # The middle half of each symbol: a few milliseconds of misjudged onset do not matter.
        segment = samples[start + per_symbol // 4 : start + 3 * per_symbol // 4]
        if float(np.sqrt(np.mean(segment**2))) < floor:
            break
        symbols.append(_peak_hz(segment, rate))
        start += per_symbol
    if len(symbols) < 2 or any(
        abs(f - m) > _TOLERANCE_HZ for f, m in zip(symbols, _MARKERS_HZ, strict=False)
    ):
        return ""
    text = []
    for freq in symbols[2:]:
        index = round((freq - _BASE_HZ) / _STEP_HZ)
        if not 0 <= index < len(ALPHABET) or abs(freq - _tone(index)) > _TOLERANCE_HZ:
            break
        text.append(ALPHABET[index])
    return "".join(text).strip()


def _peak_hz(segment: np.ndarray, rate: int) -> float:
    size = 1 << 15  # zero-padded: a bin of under 1 Hz at 24 kHz
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment)), size))
    return float(np.argmax(spectrum)) * rate / size
