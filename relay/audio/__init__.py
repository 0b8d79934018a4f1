"""PCM formats and the streaming resamplers that bring client audio to and from the API's 24 kHz."""

from relay.audio.pcm import MAX_RATE, MIN_RATE, pcm16_duration_seconds, validate_rate
from relay.audio.resampler import (
    RESAMPLER_QUALITIES,
    PassThrough,
    PolyphaseResampler,
    Resampler,
    SoxrResampler,
    make_resampler,
)

__all__ = [
    "MAX_RATE",
    "MIN_RATE",
    "RESAMPLER_QUALITIES",
    "PassThrough",
    "PolyphaseResampler",
    "Resampler",
    "SoxrResampler",
    "make_resampler",
    "pcm16_duration_seconds",
    "validate_rate",
]
