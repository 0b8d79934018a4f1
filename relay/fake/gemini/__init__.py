"""A simulated Gemini Live server (`BidiGenerateContent` over WebSocket): the demo's second provider and the
tests' Gemini upstream."""
