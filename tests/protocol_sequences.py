"""Event sequences of the GA protocol that the simulated model's tests expect."""

#: One voice turn with server VAD, deltas left out (realtime-protocol order; the rate limits as the response
#: starts, where the SDK documents them; input transcription, when on, arrives asynchronously in between).
VOICE_TURN = [
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.added",
    "conversation.item.done",
    "response.created",
    "rate_limits.updated",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
    "response.done",
]
