"""Where conversations are kept: one code path over SQLAlchemy's async engine, SQLite (aiosqlite) or PostgreSQL
(asyncpg). Every query names the identity, so one identity never reads or deletes another's history."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import delete, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from relay.conversations.items import Item, visible
from relay.conversations.pricing import rounded
from relay.conversations.record import ConversationWrite, ItemWrite, UsageWrite, Write
from relay.conversations.schema import conversations, items, migrate, usage

#: How long SQLite waits for a lock held by another connection before the write fails (and is counted).
SQLITE_BUSY_SECONDS = 2.0


def database_url(configured: str, data_dir: Path) -> str:
    """The SQLAlchemy URL to use: RELAY_HISTORY_DATABASE_URL, or a SQLite file under the data directory."""
    if configured:
        url = make_url(configured)
        if url.drivername in ("postgresql", "postgres"):
            return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
        if url.drivername == "sqlite":
            return url.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
        return configured
    return f"sqlite+aiosqlite:///{data_dir / 'history.sqlite3'}"


def shown_url(url: str) -> str:
    """The URL for a log line: the password hidden."""
    return make_url(url).render_as_string(hide_password=True)


class ConversationStore:
    """Reads and writes saved conversations. `open()` first (it migrates the schema), `close()` at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None
        #: The schema version once migrations ran (None: not yet, e.g. the database was unreachable so far).
        self.version: int | None = None

    @property
    def engine(self) -> AsyncEngine:
        """The open engine."""
        if self._engine is None:
            raise RuntimeError("the conversation store is not open")
        return self._engine

    async def open(self) -> int:
        """Create the engine and bring the schema up to date; return its version."""
        self.connect()
        return await self.ensure_schema()

    async def ensure_schema(self) -> int:
        """Run the migrations unless they already ran (raises while the database cannot be reached)."""
        if self.version is None:
            self.version = await migrate(self.engine)
        return self.version

    def connect(self) -> None:
        """Create the engine (no connection is made until one is needed)."""
        if self._engine is not None:
            return
        parsed = make_url(self.url)
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_SECONDS}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=5)
        engine = create_async_engine(self.url, **kwargs)
        if parsed.get_backend_name() == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        self._engine = engine

    async def close(self) -> None:
        """Close every pooled connection."""
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    # -- writing ---------------------------------------------------------------------------------------------

    async def apply(self, writes: Sequence[Write]) -> None:
        """Apply writes in one transaction (each an upsert, so applying one twice changes nothing)."""
        async with self.engine.begin() as connection:
            for write in writes:
                if isinstance(write, ItemWrite):
                    await self._upsert(connection, items, _item_row(write), ("conversation_id", "item_id"))
                elif isinstance(write, UsageWrite):
                    await self._upsert(connection, usage, _usage_row(write), ("conversation_id", "usage_id"))
                elif isinstance(write, ConversationWrite):
                    await self._upsert(connection, conversations, _conversation_row(write), ("id",))

    async def _upsert(
        self, connection: AsyncConnection, table: Any, row: dict[str, Any], keys: tuple[str, ...]
    ) -> None:
        insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        statement = insert(table).values(**row)
        changed = {name: statement.excluded[name] for name in row if name not in keys}
        await connection.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=changed))

    # -- reading ---------------------------------------------------------------------------------------------

    async def list_conversations(self, identity: str, limit: int = 100) -> list[dict[str, Any]]:
        """`identity`'s conversations, newest first: date, first words, duration, cost."""
        query = (
            select(conversations)
            .where(conversations.c.identity == identity)
            .order_by(conversations.c.updated_at.desc())
            .limit(limit)
        )
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [_summary(row) for row in rows]

    async def get_conversation(self, identity: str, conversation_id: str) -> dict[str, Any] | None:
        """One of `identity`'s conversations with its items in order and its usage; None if it has no such one."""
        async with self.engine.connect() as connection:
            row = (
                (
                    await connection.execute(
                        select(conversations).where(
                            conversations.c.id == conversation_id, conversations.c.identity == identity
                        )
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            item_rows = (
                (
                    await connection.execute(
                        select(items).where(
                            items.c.conversation_id == conversation_id, items.c.identity == identity
                        )
                    )
                )
                .mappings()
                .all()
            )
            usage_rows = (
                (
                    await connection.execute(
                        select(usage)
                        .where(usage.c.conversation_id == conversation_id, usage.c.identity == identity)
                        .order_by(usage.c.created_at)
                    )
                )
                .mappings()
                .all()
            )
        shown = _summary(row)
        shown["items"] = [item.as_json() for item in visible([_item(r) for r in item_rows])]
        shown["usage"] = [
            {
                "id": r["usage_id"],
                "kind": r["kind"],
                "model": r["model"],
                "usage": json.loads(r["usage"]),
                "cost": None if r["cost"] is None else rounded(Decimal(r["cost"])),
            }
            for r in usage_rows
        ]
        return shown

    async def items_of(self, identity: str, conversation_id: str) -> list[Item] | None:
        """The visible items of one of `identity`'s conversations, in order (None: no such conversation)."""
        async with self.engine.connect() as connection:
            owner = (
                await connection.execute(
                    select(conversations.c.id).where(
                        conversations.c.id == conversation_id, conversations.c.identity == identity
                    )
                )
            ).first()
            if owner is None:
                return None
            rows = (
                (
                    await connection.execute(
                        select(items).where(
                            items.c.conversation_id == conversation_id, items.c.identity == identity
                        )
                    )
                )
                .mappings()
                .all()
            )
        return visible([_item(r) for r in rows])

    # -- deleting --------------------------------------------------------------------------------------------

    async def delete_conversation(self, identity: str, conversation_id: str) -> bool:
        """Delete one of `identity`'s conversations; False when it has no such conversation."""
        async with self.engine.begin() as connection:
            result = await connection.execute(
                delete(conversations).where(
                    conversations.c.id == conversation_id, conversations.c.identity == identity
                )
            )
            for table in (items, usage):
                await connection.execute(
                    delete(table).where(
                        table.c.conversation_id == conversation_id, table.c.identity == identity
                    )
                )
        return bool(result.rowcount)

    async def delete_identity(self, identity: str) -> list[str]:
        """Delete everything kept for `identity`; return the ids of the conversations that went."""
        async with self.engine.begin() as connection:
            gone = [
                row[0]
                for row in await connection.execute(
                    select(conversations.c.id).where(conversations.c.identity == identity)
                )
            ]
            await connection.execute(delete(conversations).where(conversations.c.identity == identity))
            for table in (items, usage):
                await connection.execute(delete(table).where(table.c.identity == identity))
        return gone

    async def delete_older_than(self, cutoff: float) -> list[str]:
        """Delete conversations last updated before `cutoff` (unix time); return their ids."""
        async with self.engine.begin() as connection:
            old = [
                row[0]
                for row in await connection.execute(
                    select(conversations.c.id).where(conversations.c.updated_at < cutoff)
                )
            ]
            if old:
                await connection.execute(delete(conversations).where(conversations.c.id.in_(old)))
                for table in (items, usage):
                    await connection.execute(delete(table).where(table.c.conversation_id.in_(old)))
        return old

    async def count(self, identity: str) -> int:
        """How many conversations `identity` has."""
        async with self.engine.connect() as connection:
            query = (
                select(func.count()).select_from(conversations).where(conversations.c.identity == identity)
            )
            return int((await connection.execute(query)).scalar() or 0)


def _sqlite_pragmas(connection: Any, record: Any) -> None:
    # WAL: readers (the HTTP API) never wait for the writer task, nor it for them.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SECONDS * 1000)}")
    cursor.close()


def _item_row(write: ItemWrite) -> dict[str, Any]:
    item = write.item
    return {
        "conversation_id": write.conversation_id,
        "item_id": item.item_id,
        "identity": write.identity,
        "seq": item.seq,
        "previous_item_id": item.previous_item_id,
        "kind": item.kind,
        "role": item.role,
        "text": item.text,
        "interrupted": item.interrupted,
        "audio_end_ms": item.audio_end_ms,
        "spoken": item.spoken,
        "call_id": item.call_id,
        "name": item.name,
        "arguments": item.arguments,
        "output": item.output,
        "response_id": item.response_id,
        "deleted": item.deleted,
        "created_at": item.created_at,
    }


def _item(row: Any) -> Item:
    return Item(
        item_id=row["item_id"],
        previous_item_id=row["previous_item_id"],
        seq=row["seq"],
        kind=row["kind"],
        role=row["role"],
        text=row["text"],
        interrupted=bool(row["interrupted"]),
        audio_end_ms=row["audio_end_ms"],
        spoken=bool(row["spoken"]),
        call_id=row["call_id"],
        name=row["name"],
        arguments=row["arguments"],
        output=row["output"],
        response_id=row["response_id"],
        deleted=bool(row["deleted"]),
        created_at=row["created_at"],
    )


def _usage_row(write: UsageWrite) -> dict[str, Any]:
    return {
        "conversation_id": write.conversation_id,
        "usage_id": write.usage_id,
        "identity": write.identity,
        "kind": write.kind,
        "model": write.model,
        "usage": json.dumps(write.usage, sort_keys=True),
        "cost": write.cost,
        "created_at": write.created_at,
    }


def _conversation_row(write: ConversationWrite) -> dict[str, Any]:
    return {
        "id": write.conversation_id,
        "identity": write.identity,
        "started_at": write.started_at,
        "updated_at": write.updated_at,
        "model": write.model,
        "first_words": write.first_words,
        "cost": write.cost,
        "continued_from": write.continued_from,
    }


def _summary(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "started_at": row["started_at"],
        "updated_at": row["updated_at"],
        "duration_s": round(row["updated_at"] - row["started_at"], 3),
        "model": row["model"],
        "first_words": row["first_words"],
        "cost": rounded(Decimal(row["cost"])),
        "currency": "USD",
        "continued_from": row["continued_from"],
    }
