"""Every event on every test socket, checked against the official `openai` package's pydantic types.

The SDK's models (`openai.types.realtime`) are the reference: the Agents SDK's realtime runner parses each server
event with them and drops what fails. So a server event is validated against the type for its `type`, and beyond
that any key the SDK's models do not define is refused unless it is listed in `ALLOWED_EXTRAS`: the relay's own
additions and the keys the API itself is known to add. Client events are validated against the SDK's client event
union the same way.

`install()` wraps `websockets`' asyncio `Connection.recv`/`send`, so every socket a test opens (raw `websockets`
clients, the `openai` SDK, the relay's upstream side, the simulated model's server side) is checked in passing.
Mismatches are collected in `EventChecker.problems`; the test fixture fails the test that saw them.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, get_args, get_origin

import openai
import orjson
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import BaseModel, TypeAdapter, ValidationError
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.connection import Connection

from relay.session_audio import RELAY_FIELD
from relay.tools.calls import MARK

#: The SDK release the relay's events were checked against (the lock file pins it).
SDK_VERSION = openai.__version__


def _by_type(union: Any) -> dict[str, TypeAdapter[Any]]:
    """One validator per event `type` of an SDK event union, so a mismatch names the fields of that type only."""
    members = get_args(get_args(union)[0]) if get_origin(union) is Annotated else get_args(union)
    table: dict[str, TypeAdapter[Any]] = {}
    for model in members:
        for kind in get_args(model.model_fields["type"].annotation):
            table[kind] = TypeAdapter(model)
    return table


SERVER = _by_type(RealtimeServerEvent)
CLIENT = _by_type(RealtimeClientEvent)

RELAY_FIELD_KEYS = frozenset({"input_rate", "output_rate"})
TOOL_MARKED_EVENTS = (
    "response.output_item.added",
    "response.output_item.done",
    "conversation.item.added",
    "conversation.item.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
)

#: Keys outside the SDK's models that a server event may carry: (event type or "*", dotted path of the key).
#: The session object of session.created/updated is typed as the create request: the server-only `object`, `id`
#: and `expires_at` are extras there. `obfuscation` is sent by the API on streamed deltas.
ALLOWED_EXTRAS: frozenset[tuple[str, str]] = frozenset(
    {
        *(
            (kind, f"session.{key}")
            for kind in ("session.created", "session.updated")
            for key in ("object", "id", "expires_at")
        ),
        ("session.created", RELAY_FIELD),
        ("session.updated", RELAY_FIELD),
        ("*", "obfuscation"),
        # Events about a server-run tool call carry the relay's mark (relay.tools.calls.MARK).
        *((kind, RELAY_FIELD) for kind in TOOL_MARKED_EVENTS),
    }
)


def _extras(model: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths of every key that a validated model holds beyond its declared fields, at any depth."""
    if isinstance(model, BaseModel):
        for key in model.model_extra or {}:
            yield f"{prefix}{key}"
        for name in type(model).model_fields:
            yield from _extras(getattr(model, name), f"{prefix}{name}.")
    elif isinstance(model, list | tuple):
        for item in model:
            yield from _extras(item, prefix)


#: The relay's own notice events (documented in the README), with the keys each carries.
RELAY_NOTICES = {"relay.upstream.renewed": {"type", "event_id", "reason", "gap_ms", "replayed_items"}}


def server_event_problems(event: Any) -> list[str]:
    """Why `event` is not a server event the SDK accepts as it is ([] when it is)."""
    kind = _kind(event)
    if kind in RELAY_NOTICES:
        extra = set(event) - RELAY_NOTICES[kind] if isinstance(event, dict) else {"?"}
        return [f"{kind}: keys {sorted(extra)} are not the notice's"] if extra else []
    model, problems = _validate(SERVER, event)
    if model is None:
        return problems
    problems += [
        f"{kind}: key {path!r} is not in the SDK's type"
        for path in _extras(model)
        if (kind, path) not in ALLOWED_EXTRAS and ("*", path) not in ALLOWED_EXTRAS
    ]
    relay = event.get(RELAY_FIELD)
    if kind in TOOL_MARKED_EVENTS:
        if relay is not None and relay != MARK:
            problems.append(f"{kind}: relay field {relay!r} is not the server tool mark {MARK!r}")
    elif relay is not None and (not isinstance(relay, dict) or set(relay) - RELAY_FIELD_KEYS):
        problems.append(f"{kind}: relay field {relay!r} has keys beyond {sorted(RELAY_FIELD_KEYS)}")
    elif isinstance(relay, dict) and not all(isinstance(v, int) for v in relay.values()):
        problems.append(f"{kind}: relay field {relay!r} holds a non-integer rate")
    return problems


def client_event_problems(event: Any, *, relay_rates: bool = False) -> list[str]:
    """Why `event` is not a client event the SDK accepts ([] when it is).

    With `relay_rates`, a PCM rate in `session.update` (the relay's documented way to declare a client's rate)
    is accepted: the copy validated carries 24000 there. What the relay forwards upstream is checked without it.
    """
    if relay_rates:
        event = _with_api_rates(event)
    model, problems = _validate(CLIENT, event)
    if model is None:
        return problems
    return [f"{_kind(event)}: key {path!r} is not in the SDK's type" for path in _extras(model)]


def _validate(table: dict[str, TypeAdapter[Any]], event: Any) -> tuple[Any, list[str]]:
    kind = _kind(event)
    adapter = table.get(kind)
    if adapter is None:
        return None, [f"{kind}: not an event type of the SDK"]
    try:
        return adapter.validate_python(event), []
    except ValidationError as exc:
        return None, [f"{kind}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]


def _with_api_rates(event: Any) -> Any:
    if not isinstance(event, dict) or event.get("type") != "session.update":
        return event
    event = copy.deepcopy(event)
    audio = (event.get("session") or {}).get("audio")
    for side in ("input", "output"):
        fmt = (
            audio.get(side, {}).get("format")
            if isinstance(audio, dict) and isinstance(audio.get(side), dict)
            else None
        )
        if (
            isinstance(fmt, dict)
            and isinstance(fmt.get("rate"), int)
            and fmt.get("type", "audio/pcm") == "audio/pcm"
        ):
            fmt["rate"] = 24000
    return event


def _kind(event: Any) -> str:
    return str(event.get("type")) if isinstance(event, dict) else type(event).__name__


def _parse(message: Any) -> Any:
    """The JSON object a frame carries, or None for frames that are not events (binary audio, garbage on purpose)."""
    if not isinstance(message, str | bytes | bytearray):
        return None
    try:
        parsed = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) and "type" in parsed else None


@dataclass
class EventChecker:
    """Collects what failed validation; `check_client` off for tests that send invalid client events on purpose."""

    check_client: bool = True
    #: Off for tests whose own upstream sends malformed events on purpose (what clients receive is still checked).
    check_upstream: bool = True
    problems: list[str] = field(default_factory=list)
    server_events: int = 0
    client_events: int = 0

    def saw_server_event(self, message: Any, where: str) -> None:
        event = _parse(message)
        if event is None:
            return
        self.server_events += 1
        self.problems.extend(f"server event ({where}) {p}" for p in server_event_problems(event))

    def saw_client_event(self, message: Any, where: str, *, relay_rates: bool) -> None:
        event = _parse(message)
        if event is None or not self.check_client:
            return
        self.client_events += 1
        self.problems.extend(
            f"client event ({where}) {p}" for p in client_event_problems(event, relay_rates=relay_rates)
        )


_CURRENT: list[EventChecker] = []


def current() -> EventChecker | None:
    """The checker of the running test, if one is installed."""
    return _CURRENT[-1] if _CURRENT else None


def _realtime(connection: Connection) -> bool:
    # Other WebSockets a test opens (a browser's WebDriver BiDi channel) speak other protocols.
    request = connection.request
    return request is None or request.path.split("?")[0].endswith("/realtime")


def install() -> None:
    """Wrap `Connection.recv`/`send` once per process; the wrapped calls report to `current()`."""
    if getattr(Connection.recv, "_sdk_checked", False):
        return
    original_recv, original_send = Connection.recv, Connection.send

    @functools.wraps(original_recv)
    async def recv(self: Connection, *args: Any, **kwargs: Any) -> Any:
        message = await original_recv(self, *args, **kwargs)
        checker = current() if _realtime(self) else None
        if checker is not None:
            if isinstance(self, ClientConnection):
                checker.saw_server_event(message, "received by a client")
            else:
                checker.saw_client_event(message, "received by the simulated model", relay_rates=False)
        return message

    @functools.wraps(original_send)
    async def send(self: Connection, message: Any, *args: Any, **kwargs: Any) -> None:
        checker = current() if _realtime(self) else None
        if checker is not None:
            if isinstance(self, ClientConnection):
                # A client talking to the relay may declare its rate in session.update; the relay's own upstream
                # side is checked strictly where the simulated model receives it.
                checker.saw_client_event(message, "sent by a client", relay_rates=True)
            elif checker.check_upstream:
                checker.saw_server_event(message, "sent by the simulated model")
        await original_send(self, message, *args, **kwargs)

    recv._sdk_checked = True  # type: ignore[attr-defined]
    Connection.recv = recv  # type: ignore[method-assign]
    Connection.send = send  # type: ignore[method-assign]


def push(checker: EventChecker) -> None:
    """Make `checker` the one the wrapped sockets report to."""
    _CURRENT.append(checker)


def pop() -> None:
    """Stop reporting to the checker pushed last."""
    _CURRENT.pop()
