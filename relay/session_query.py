"""What a handshake's query string asks for (`?provider=`, `?model=`, `?input_rate=`, `?output_rate=`), checked
strictly.

Query values come straight from the client, so they are judged as text before anything converts them: a rate is
at most a few ASCII digits (`str.isdigit` also accepts `²` and other scripts' digits, which `int()` then refuses or
reads as something else), a parameter given twice is refused rather than guessed at, and whatever is shown back in a
message is clipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from relay import protocol
from relay.access import Denial, clip
from relay.config import Config
from relay.providers.profiles import ProviderSet, Unavailable
from relay.session_state import check_rate

RATE_NAMES = ("input_rate", "output_rate")
#: The parameters the relay reads; each may appear at most once.
QUERY_NAMES = ("model", "provider", *RATE_NAMES)
#: No usable rate has more digits than this (the highest is 192000); longer text is not worth converting.
_MAX_RATE_DIGITS = 6


@dataclass(frozen=True)
class SessionQuery:
    """The model and the declared PCM rates of one handshake (a rate not given is absent)."""

    model: str
    rates: dict[str, int] = field(default_factory=dict)
    #: The upstream profile chosen (None when the relay was given no profiles to choose from).
    provider: str | None = None


def parse_session_query(
    items: Sequence[tuple[str, str]], config: Config, providers: ProviderSet | None = None
) -> SessionQuery | Denial:
    """Judge the handshake's query parameters (`items` in the order sent, names may repeat).

    With `providers`, `?provider=` and `?model=` choose among its profiles; without, only `config`'s models count.
    """
    values: dict[str, str] = {}
    for name, value in items:
        if name not in QUERY_NAMES:
            continue  # other parameters are the client's business (cache busters, SDK extras)
        if name in values:
            return Denial(
                400,
                "invalid_request",
                f"The query parameter {name} may be given only once; send it once, e.g. ?{name}="
                f"{clip(values[name], 40)}.",
                "model" if name in ("model", "provider") else "bad_rate",
            )
        values[name] = value
    provider: str | None = None
    if providers is not None:
        choice = providers.choose(values.get("provider"), values.get("model"), clip)
        if isinstance(choice, Unavailable):
            return Denial(choice.status, protocol.POLICY_VIOLATION, choice.message, "model")
        model, provider = choice.model, choice.profile.name
    elif values.get("provider"):
        return Denial(403, protocol.POLICY_VIOLATION, "This relay offers no choice of provider.", "model")
    else:
        model = values.get("model") or config.model
    if provider is None and model not in config.models:
        message = (
            f"Model {clip(model, 80)!r} is not offered by this relay; use one of: {', '.join(config.models)}."
        )
        return Denial(403, protocol.POLICY_VIOLATION, message, "model")
    rates: dict[str, int] = {}
    for name in RATE_NAMES:
        raw = values.get(name)
        if raw is None:
            continue
        plain = raw.isascii() and raw.isdigit() and len(raw) <= _MAX_RATE_DIGITS
        problem = check_rate(int(raw) if plain else clip(raw, 40), name)
        if problem is not None:
            return Denial(400, protocol.BAD_AUDIO, problem, "bad_rate")
        rates[name] = int(raw)
    return SessionQuery(model, rates, provider)
