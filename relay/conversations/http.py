"""The history over HTTP: list, open, export and delete one's own conversations.

Every request is authenticated as the WebSocket is (relay.access.Door): a token, a signed-in cookie, a trusted
Tailscale identity or the anonymous local user. Reads check the Origin when one is sent; deletions need what the
WebSocket needs (a cookie only with the relay's own Origin). Every query names the identity, so a conversation of
someone else is simply not found (404, the same answer as one that never existed).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.access import Admission, Denial, Door, mark_denied, request_from_scope
from relay.conversations.service import Conversations
from relay.conversations.writer import problem_of

_log = structlog.get_logger("relay.history")
#: Conversation ids are the relay's session ids; anything else is not looked up.
_ID = re.compile(r"rs_[A-Za-z0-9]{1,60}")


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": "invalid_request_error", "code": code, "message": message}}, status
    )


def _denied(denial: Denial) -> JSONResponse:
    mark_denied()
    return JSONResponse(denial.body(), status_code=denial.status, headers=dict(denial.headers))


def _not_found(conversation_id: str) -> JSONResponse:
    return _error(
        404,
        "conversation_not_found",
        f"You have no saved conversation {conversation_id[:70]!r}; list yours with GET /api/conversations.",
    )


def history_routes(door: Door, conversations: Conversations) -> list[Route]:
    """The /api/conversations routes."""

    def who(request: Request, *, changes: bool) -> Admission | Denial:
        door_request = request_from_scope(request.scope)
        if changes:
            return door.admit_websocket(door_request)
        return door.check_origin(door_request) or door.identify(door_request)

    Handler = Callable[[Request, str], Awaitable[Response]]

    def guarded(handler: Handler, *, changes: bool) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            verdict = who(request, changes=changes)
            if isinstance(verdict, Denial):
                return _denied(verdict)
            if conversations.store is None:
                return _error(
                    404,
                    "history_off",
                    "This relay does not save conversations (RELAY_HISTORY is off); the operator can turn it on.",
                )
            try:
                await conversations.store.ensure_schema()
                return await handler(request, verdict.identity)
            except Exception as exc:
                _log.warning("history_read_failed", problem=problem_of(exc))
                return _error(
                    503,
                    "history_unavailable",
                    "The history database does not answer right now; try again in a minute. Sessions are not "
                    "affected.",
                )

        return endpoint

    async def list_all(request: Request, identity: str) -> Response:
        assert conversations.store is not None
        return JSONResponse({"conversations": await conversations.store.list_conversations(identity)})

    async def open_one(request: Request, identity: str) -> Response:
        assert conversations.store is not None
        conversation_id = str(request.path_params["conversation_id"])
        found = (
            await conversations.store.get_conversation(identity, conversation_id)
            if _ID.fullmatch(conversation_id)
            else None
        )
        if found is None:
            return _not_found(conversation_id)
        if request.url.path.endswith("/export"):
            return JSONResponse(
                found, headers={"content-disposition": f'attachment; filename="{conversation_id}.json"'}
            )
        return JSONResponse(found)

    async def delete_one(request: Request, identity: str) -> Response:
        assert conversations.store is not None
        conversation_id = str(request.path_params["conversation_id"])
        if not _ID.fullmatch(conversation_id) or not await conversations.store.delete_conversation(
            identity, conversation_id
        ):
            return _not_found(conversation_id)
        if conversations.recordings is not None:
            conversations.recordings.delete([conversation_id])
        _log.info("conversation_deleted", conversation_id=conversation_id)
        return Response(status_code=204)

    async def delete_all(request: Request, identity: str) -> Response:
        assert conversations.store is not None
        gone = await conversations.store.delete_identity(identity)
        if conversations.recordings is not None:
            conversations.recordings.delete(gone)
        _log.info("conversations_deleted", conversations=len(gone))
        return JSONResponse({"deleted": len(gone)})

    return [
        Route("/api/conversations", guarded(list_all, changes=False), methods=["GET"]),
        Route("/api/conversations", guarded(delete_all, changes=True), methods=["DELETE"]),
        Route("/api/conversations/{conversation_id}", guarded(open_one, changes=False), methods=["GET"]),
        Route(
            "/api/conversations/{conversation_id}/export", guarded(open_one, changes=False), methods=["GET"]
        ),
        Route("/api/conversations/{conversation_id}", guarded(delete_one, changes=True), methods=["DELETE"]),
    ]
