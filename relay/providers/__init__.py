"""Upstream providers behind the one OpenAI-shaped socket: profiles, and how each kind's upstream is opened."""
