"""Credentials: access tokens, signed login cookies, and a limiter of failed token attempts per client address.

Nothing here does I/O except reading the tokens file once at start-up. Tokens are kept only as SHA-256 digests, so a
plain token is never held longer than it takes to hash it, and a `sha256:<hex>` line of the tokens file works the
same as the token it is the hash of.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from itsdangerous import BadSignature, URLSafeTimedSerializer

from relay.config import Config, ConfigError

HASHED_PREFIX = "sha256:"
#: Longer candidates are refused without hashing: no real token is this long, and hashing megabytes is work.
MAX_TOKEN_LENGTH = 4096
#: The login cookie. HttpOnly, so the page's scripts never see it.
COOKIE_NAME = "relay_login"
_COOKIE_SALT = "realtime-relay.login"

#: Failed token attempts one client address may make in a burst, and how fast it earns another one.
LOGIN_BURST = 5
LOGIN_REFILL_SECONDS = 60.0
#: How many client addresses the limiter remembers; beyond that the least recently seen is forgotten.
LOGIN_MAX_CLIENTS = 10_000


#: A secret (access token or cookie key) shorter than this, or with less estimated entropy, is refused at start-up.
MIN_SECRET_LENGTH = 16
MIN_SECRET_BITS = 56
#: Words that mark a value copied from an example instead of generated.
PLACEHOLDER_WORDS = (
    "replace-with",
    "replace_with",
    "replaceme",
    "replace-me",
    "changeme",
    "change-me",
    "placeholder",
)
GENERATE_HINT = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'


def estimated_bits(secret: str) -> float:
    """Shannon entropy of the secret's own characters times its length: a ceiling on how hard it is to guess.

    It cannot tell a random string from a sentence, but it catches what matters at start-up: short values, repeated
    characters, and the few-symbol strings people type when asked for "something random".
    """
    if not secret:
        return 0.0
    counts = Counter(secret)
    n = len(secret)
    return -sum(c / n * math.log2(c / n) for c in counts.values()) * n


def weak_secret_reason(secret: str) -> str | None:
    """Why `secret` must not be used to guard a public relay (a phrase that never quotes it), or None."""
    lowered = secret.lower()
    for word in PLACEHOLDER_WORDS:
        if word in lowered:
            return f"is a placeholder (it contains {word!r})"
    if len(secret) < MIN_SECRET_LENGTH:
        return f"is shorter than {MIN_SECRET_LENGTH} characters"
    if estimated_bits(secret) < MIN_SECRET_BITS:
        return f"is too predictable (under {MIN_SECRET_BITS} bits by its character mix)"
    return None


def token_digest(token: str) -> bytes:
    """The SHA-256 digest of a token, as stored and compared."""
    return hashlib.sha256(token.encode()).digest()


def token_identity(digest: bytes) -> str:
    """The identity a token grants: a short, stable name derived from its hash (never the token itself)."""
    return "token:" + digest.hex()[:8]


def plain_token_lines(text: str) -> list[tuple[int, str]]:
    """(line number, token) of the tokens file's lines that hold a token in clear (not `sha256:`, blank or `#`)."""
    found = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#") and not line.lower().startswith(HASHED_PREFIX):
            found.append((number, line))
    return found


def parse_token_lines(text: str, source: str) -> list[bytes]:
    """Digests of the tokens in a tokens file: one token or `sha256:<64 hex digits>` per line.

    Blank lines and lines starting with `#` are skipped. Raises `ConfigError` naming the line (never its content).
    """
    digests: list[bytes] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower().startswith(HASHED_PREFIX):
            hexdigest = line[len(HASHED_PREFIX) :].strip()
            try:
                digest = bytes.fromhex(hexdigest)
            except ValueError:
                digest = b""
            if len(digest) != 32:
                raise ConfigError(
                    f"{source} line {number}: a sha256: line needs 64 hex digits, e.g. the output of "
                    "`printf %s TOKEN | sha256sum`"
                )
            digests.append(digest)
        else:
            digests.append(token_digest(line))
    return digests


class TokenSet:
    """The access tokens clients may present, as digests, compared in constant time against all of them."""

    def __init__(self, digests: Iterable[bytes]) -> None:
        # Order kept and duplicates dropped, so that every candidate costs the same number of comparisons.
        self._digests: tuple[bytes, ...] = tuple(dict.fromkeys(digests))
        self._identities = frozenset(token_identity(d) for d in self._digests)

    @classmethod
    def from_config(cls, config: Config) -> TokenSet:
        """Tokens from `RELAY_ACCESS_TOKENS` and `RELAY_ACCESS_TOKENS_FILE`. Raises `ConfigError` on a bad file."""
        digests = [token_digest(t) for t in config.access_tokens]
        if config.access_tokens_file is not None:
            digests += parse_token_lines(_read(config.access_tokens_file), "RELAY_ACCESS_TOKENS_FILE")
        return cls(digests)

    def __len__(self) -> int:
        return len(self._digests)

    @property
    def configured(self) -> bool:
        """True when at least one token exists, so that every client must authenticate."""
        return bool(self._digests)

    def identify(self, candidate: str) -> str | None:
        """The identity of `candidate` if it is one of the tokens, else None.

        The candidate's digest is compared with every stored digest by `hmac.compare_digest`, without stopping at a
        match, so the time taken says nothing about which token (or how much of one) matched.
        """
        if not candidate or len(candidate) > MAX_TOKEN_LENGTH:
            return None
        digest = token_digest(candidate)
        found: bytes | None = None
        for stored in self._digests:
            if hmac.compare_digest(digest, stored):
                found = stored
        return token_identity(found) if found is not None else None

    def has_identity(self, identity: str) -> bool:
        """True when `identity` belongs to a token that is still configured."""
        return identity in self._identities


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"RELAY_ACCESS_TOKENS_FILE={str(path)!r} cannot be read ({type(exc).__name__})"
        ) from None


class LoginCookies:
    """Signed, expiring login cookies that name an identity (itsdangerous, HMAC-SHA256)."""

    def __init__(
        self, secret: str | bytes, ttl_seconds: int, revoked: Callable[[str], bool] | None = None
    ) -> None:
        self.ttl_seconds = ttl_seconds
        #: True for a cookie value that was signed out before it expired (relay.shared_state keeps that list).
        self._revoked = revoked
        self._serializer = URLSafeTimedSerializer(
            secret, salt=_COOKIE_SALT, signer_kwargs={"digest_method": hashlib.sha256}
        )

    def issue(self, identity: str) -> str:
        """A cookie value that proves `identity` signed in now."""
        return self._serializer.dumps(identity)

    def verify(self, value: str) -> str | None:
        """The identity in a cookie value that is authentic, younger than the TTL and not signed out, else None."""
        if not value or len(value) > MAX_TOKEN_LENGTH:
            return None
        if self._revoked is not None and self._revoked(value):
            return None
        try:
            identity = self._serializer.loads(value, max_age=self.ttl_seconds)
        except BadSignature:  # also covers an expired signature
            return None
        return identity if isinstance(identity, str) else None


def client_key(address: str | None) -> str:
    """The key the attempt limiter counts under: the address, or its /64 for IPv6 (one host usually owns a /64)."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class AttemptCounter(Protocol):
    """The door's view of failed sign-ins per client address (AttemptLimiter here; relay.shared_state mirrors Redis)."""

    def retry_after(self, address: str | None) -> int | None:
        """Whole seconds until `address` may try a token again, or None when it may try now."""

    def record_failure(self, address: str | None) -> None:
        """Count one wrong token from `address`."""


@dataclass
class _Bucket:
    allowance: float
    updated: float


class AttemptLimiter:
    """Limits failed token attempts per client address with a token bucket.

    Each address may fail `burst` times in a row, then earns one more attempt every `refill_seconds`. While its
    allowance is below one attempt, every attempt from it is refused before the token is even looked at, so a
    guesser learns nothing more until it waits.
    """

    def __init__(
        self,
        burst: int = LOGIN_BURST,
        refill_seconds: float = LOGIN_REFILL_SECONDS,
        max_clients: int = LOGIN_MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = burst
        self._refill = refill_seconds
        self._max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def retry_after(self, address: str | None) -> int | None:
        """Whole seconds until `address` may try again, or None when it may try now."""
        bucket = self._current(client_key(address))
        if bucket is None or bucket.allowance >= 1:
            return None
        return max(1, math.ceil((1 - bucket.allowance) * self._refill))

    def record_failure(self, address: str | None) -> None:
        """Count one failed attempt from `address`."""
        key = client_key(address)
        bucket = self._current(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self._burst), self._clock())
            while len(self._buckets) > self._max_clients:
                self._buckets.popitem(last=False)
        bucket.allowance -= 1
        self._buckets.move_to_end(key)

    def _current(self, key: str) -> _Bucket | None:
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        now = self._clock()
        bucket.allowance = min(float(self._burst), bucket.allowance + (now - bucket.updated) / self._refill)
        bucket.updated = now
        if bucket.allowance >= self._burst:
            # Fully recovered: nothing to remember.
            del self._buckets[key]
            return None
        return bucket

    def __len__(self) -> int:
        return len(self._buckets)
