"""Gemini Live behind the OpenAI GA protocol: the pure mapping (translate) and its socket (connection)."""
