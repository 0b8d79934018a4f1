"""Conversations that last: the record of what was said (record), where it is kept (store, writer), what it cost
(pricing), and how a session outlives its upstream (rollover, replay)."""
