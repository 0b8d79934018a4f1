"""Signed-out login cookies, remembered by digest until they would have expired anyway."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

#: At most this many signed-out cookies are remembered in one process; the oldest are forgotten first.
MAX_REMEMBERED = 100_000


def cookie_digest(cookie: str) -> str:
    """The name a signed-out cookie is kept under: its SHA-256, so the store never holds a usable cookie."""
    return hashlib.sha256(cookie.encode()).hexdigest()


class RevokedLogins:
    """Cookie digests that were signed out, each until its expiry; callable as the `revoked` check."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}

    def __call__(self, cookie: str) -> bool:
        """True when `cookie` was signed out and would still be valid."""
        until = self._until.get(cookie_digest(cookie))
        return until is not None and until > self._clock()

    def add(self, cookie: str, ttl_seconds: float) -> None:
        """Remember `cookie` as signed out for `ttl_seconds`."""
        now = self._clock()
        if len(self._until) >= MAX_REMEMBERED:
            self._until = {d: t for d, t in self._until.items() if t > now}
            while len(self._until) >= MAX_REMEMBERED:
                del self._until[next(iter(self._until))]
        self._until[cookie_digest(cookie)] = now + ttl_seconds

    def note(self, cookie: str, ttl_seconds: float | None) -> None:
        """Record what the shared store says about `cookie`: signed out for `ttl_seconds` more, or not (None)."""
        if ttl_seconds is None:
            self._until.pop(cookie_digest(cookie), None)
        else:
            self.add(cookie, ttl_seconds)
