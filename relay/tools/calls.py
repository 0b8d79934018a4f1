"""One session's server tool calls, decided free of I/O: which calls to run, what the client sees of them, and
when the model is asked to go on.

Rules (what the peers people copy get wrong):
- a call runs when its `function_call` item is complete (`response.output_item.done`, status completed), never
  from the argument deltas;
- its output goes back as `conversation.item.create` `function_call_output`, whatever happened meanwhile (the
  conversation keeps a whole record);
- `response.create` follows only when every server call of that response has its output, the response itself
  ended `completed` (not cancelled by a barge-in or `response.cancel`), it held no call the client answers itself,
  no response is in progress, and the conversation did not move on (the user spoke, or another response began);
- a client's output for a server call is refused; with `visible` off, the client sees nothing of server calls.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from relay.policy import Refusal
from relay.protocol import dumps

#: The relay-owned field that marks an event about a server-run call (`{"server_tool": true}`).
MARK_FIELD = "relay"
MARK = {"server_tool": True}
#: `response.metadata.relay` of the responses the relay asks for: what it asked them for.
FOLLOW_UP = "tool_followup"
WAITING = "tool_wait"
EVENT_ID_PREFIX = "relay_tool_"

_ITEM_EVENTS = frozenset(
    {
        "response.output_item.added",
        "response.output_item.done",
        "conversation.item.added",
        "conversation.item.done",
    }
)
_ARGUMENT_EVENTS = frozenset(
    {"response.function_call_arguments.delta", "response.function_call_arguments.done"}
)


@dataclass(frozen=True)
class CallRequest:
    """A complete server call to run: which tool, the model's arguments, and where it came from."""

    call_id: str
    name: str
    arguments: str
    item_id: str
    response_id: str


@dataclass
class ToolVerdict:
    """What one upstream event means for server tools."""

    #: The event is about a server call the client must not see.
    drop: bool = False
    #: The event was rewritten in place (marked, or server items left out); forward it re-serialised.
    changed: bool = False
    start: list[CallRequest] = field(default_factory=list)
    to_upstream: list[str] = field(default_factory=list)


@dataclass
class _Response:
    calls: set[str] = field(default_factory=set)
    client_calls: int = 0
    status: str | None = None  # set by response.done
    followed_up: bool = False
    waited: bool = False
    superseded: bool = False


class ToolCalls:
    """Server tool calls of one session. `definitions` are the tools offered to it (already filtered by identity)."""

    def __init__(
        self, definitions: list[dict[str, Any]], *, visible: bool = True, waiting_instructions: str = ""
    ) -> None:
        self.definitions = definitions
        self.names = frozenset(str(d["name"]) for d in definitions)
        self.visible = visible
        self._waiting_instructions = waiting_instructions
        self._calls: dict[str, CallRequest] = {}
        self._answered: set[str] = set()
        self._items: set[str] = set()
        # Hidden items → the visible item each follows, so that `previous_item_id` never names a hidden one.
        self._hidden_after: dict[str, str | None] = {}
        self._responses: dict[str, _Response] = {}
        self._active: set[str] = set()
        self._ids = itertools.count(1)

    @property
    def reads_argument_deltas(self) -> bool:
        """True when `response.function_call_arguments.delta` must reach `from_upstream` (hidden calls: a fast
        path that forwards deltas unparsed would show the client a hidden call's arguments)."""
        return not self.visible

    # -- client → upstream -------------------------------------------------------------------------------

    def from_client(self, event: dict[str, Any]) -> tuple[Refusal | None, bool]:
        """Judge a client event: a refusal, or whether it was rewritten in place (server tools merged in)."""
        kind = event.get("type")
        if kind == "session.update" and isinstance(event.get("session"), dict):
            return self._merge(event["session"], "session")
        if kind == "response.create" and isinstance(event.get("response"), dict):
            return self._merge(event["response"], "response")
        if kind == "conversation.item.create":
            item = event.get("item")
            if (
                isinstance(item, dict)
                and item.get("type") == "function_call_output"
                and item.get("call_id") in self._calls
            ):
                return (
                    Refusal(
                        "relay_policy_violation",
                        f"Call {item['call_id']} is a server tool call: the relay runs it and sends its output "
                        "itself; answer only the calls of tools your client defined.",
                        "item.call_id",
                    ),
                    False,
                )
        return None, False

    def _merge(self, obj: dict[str, Any], root: str) -> tuple[Refusal | None, bool]:
        if "tools" not in obj:
            return None, False
        tools = obj["tools"]
        if not isinstance(tools, list):
            tools = []
        for index, tool in enumerate(tools):
            if isinstance(tool, dict) and tool.get("name") in self.names:
                return (
                    Refusal(
                        "relay_policy_violation",
                        f"{root}.tools[{index}] is named {tool['name']!r}, a tool this relay runs itself; give your "
                        "client's tool another name.",
                        f"{root}.tools[{index}].name",
                    ),
                    False,
                )
        # The client's tools pass as they came; the server's are kept beside them, so clients cannot remove them.
        obj["tools"] = [*tools, *self.definitions]
        return None, True

    # -- upstream → client -------------------------------------------------------------------------------

    def from_upstream(self, event: dict[str, Any]) -> ToolVerdict:
        """Judge an upstream event (mutating it when it must change for the client)."""
        kind = event.get("type")
        verdict = ToolVerdict()
        if kind in _ITEM_EVENTS or kind == "input_audio_buffer.committed":
            if kind in _ITEM_EVENTS:
                self._on_item(event, verdict)
            if not self.visible:
                self._skip_hidden_predecessor(event, verdict)
        elif kind in _ARGUMENT_EVENTS:
            if event.get("item_id") in self._items:
                self._hide_or_mark(event, verdict)
        elif kind == "response.created":
            self._on_created(event)
        elif kind == "response.done":
            self._on_done(event, verdict)
        elif kind == "input_audio_buffer.speech_started":
            # The user speaks: their turn will get its own response, which sees the outputs already given.
            self._supersede()
        elif kind == "error":
            error = event.get("error")
            if (
                not self.visible
                and isinstance(error, dict)
                and str(error.get("event_id", "")).startswith(EVENT_ID_PREFIX)
            ):
                verdict.drop = True
        return verdict

    def _on_item(self, event: dict[str, Any], verdict: ToolVerdict) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            return
        item_type = item.get("type")
        item_id = str(item.get("id", ""))
        if item_type == "function_call" and item.get("name") in self.names:
            self._items.add(item_id)
            if event["type"] == "response.output_item.done":
                self._call_done(event, item, verdict)
            self._hide_or_mark(event, verdict)
        elif item_type == "function_call_output" and item.get("call_id") in self._calls:
            self._items.add(item_id)
            self._hide_or_mark(event, verdict)
        elif item_type == "function_call" and event["type"] == "response.output_item.done":
            self._response(str(event.get("response_id", ""))).client_calls += 1

    def _skip_hidden_predecessor(self, event: dict[str, Any], verdict: ToolVerdict) -> None:
        previous = event.get("previous_item_id")
        if not isinstance(previous, str):
            previous = None
        item = event.get("item")
        if verdict.drop:
            if isinstance(item, dict) and "previous_item_id" in event:
                after = self._hidden_after.get(previous, previous) if previous is not None else None
                self._hidden_after[str(item.get("id", ""))] = after
        elif previous is not None and previous in self._hidden_after:
            event["previous_item_id"] = self._hidden_after[previous]
            verdict.changed = True

    def _call_done(self, event: dict[str, Any], item: dict[str, Any], verdict: ToolVerdict) -> None:
        call_id = item.get("call_id")
        if item.get("status") != "completed" or not isinstance(call_id, str) or call_id in self._calls:
            return  # cut off before its arguments were complete (or seen twice): nothing to run
        response_id = str(event.get("response_id", ""))
        request = CallRequest(
            call_id, str(item["name"]), str(item.get("arguments", "")), str(item.get("id", "")), response_id
        )
        self._calls[call_id] = request
        self._response(response_id).calls.add(call_id)
        verdict.start.append(request)

    def _hide_or_mark(self, event: dict[str, Any], verdict: ToolVerdict) -> None:
        if self.visible:
            event[MARK_FIELD] = dict(MARK)
            verdict.changed = True
        else:
            verdict.drop = True

    def _on_created(self, event: dict[str, Any]) -> None:
        response = event.get("response")
        if not isinstance(response, dict):
            return
        self._active.add(str(response.get("id", "")))
        metadata = response.get("metadata")
        if not (isinstance(metadata, dict) and metadata.get(MARK_FIELD) == WAITING):
            # A response the model gives on its own (a new turn, the client's request, or the follow-up itself)
            # carries the conversation on: owed follow-ups are no longer wanted.
            self._supersede()

    def _on_done(self, event: dict[str, Any], verdict: ToolVerdict) -> None:
        response = event.get("response")
        if not isinstance(response, dict):
            return
        response_id = str(response.get("id", ""))
        self._active.discard(response_id)
        known = self._responses.get(response_id)
        if known is not None:
            known.status = str(response.get("status"))
        output = response.get("output")
        if not self.visible and isinstance(output, list):
            kept = [i for i in output if not (isinstance(i, dict) and i.get("id") in self._items)]
            if len(kept) != len(output):
                response["output"] = kept
                verdict.changed = True
        verdict.to_upstream.extend(self._follow_ups())

    def _supersede(self) -> None:
        for response in self._responses.values():
            if response.status is not None:
                response.superseded = True

    def _response(self, response_id: str) -> _Response:
        return self._responses.setdefault(response_id, _Response())

    # -- results -----------------------------------------------------------------------------------------

    def finished(self, call_id: str, output: str) -> list[str]:
        """Frames for the upstream once a call has its output: the output item, then perhaps `response.create`."""
        request = self._calls.get(call_id)
        if request is None or call_id in self._answered:
            return []
        self._answered.add(call_id)
        item = {"type": "function_call_output", "call_id": call_id, "output": output}
        frames = [
            dumps({"type": "conversation.item.create", "event_id": self._event_id("output"), "item": item})
        ]
        return frames + self._follow_ups()

    def still_running(self, call_id: str) -> list[str]:
        """Frames for the upstream when a call runs long: ask the model to say it is looking (once per response)."""
        request = self._calls.get(call_id)
        if request is None or call_id in self._answered or not self._waiting_instructions:
            return []
        response = self._responses[request.response_id]
        if response.waited or response.status != "completed" or response.superseded or self._active:
            return []
        response.waited = True
        ask = {
            "instructions": self._waiting_instructions,
            "tool_choice": "none",
            "metadata": {MARK_FIELD: WAITING},
        }
        return [dumps({"type": "response.create", "event_id": self._event_id("wait"), "response": ask})]

    @property
    def tracked_responses(self) -> int:
        """Responses still tracked (settled ones are forgotten, so a long session does not grow)."""
        return len(self._responses)

    def _follow_ups(self) -> list[str]:
        # Responses with nothing left to decide are forgotten; their call ids stay known (to refuse client outputs).
        for response_id, response in list(self._responses.items()):
            settled = (
                response.followed_up or response.superseded or response.status not in (None, "completed")
            )
            if response.status is not None and settled and response.calls <= self._answered:
                del self._responses[response_id]
        if self._active:
            return []  # asked again when the response in progress is done
        for response in self._responses.values():
            if (
                response.calls
                and not response.followed_up
                and not response.superseded
                and response.status == "completed"
                and response.client_calls == 0
                and response.calls <= self._answered
            ):
                response.followed_up = True
                ask = {"metadata": {MARK_FIELD: FOLLOW_UP}}
                return [
                    dumps(
                        {"type": "response.create", "event_id": self._event_id("followup"), "response": ask}
                    )
                ]
        return []

    def _event_id(self, what: str) -> str:
        return f"{EVENT_ID_PREFIX}{what}_{next(self._ids)}"
