"""The history's tables and the versioned migrations that create and change them.

A small runner instead of Alembic: the schema is three tables, it must migrate itself at start-up inside the
relay's own async engine on SQLite and PostgreSQL alike, and nobody should need a separate command or an
alembic.ini in the image. Each migration is a numbered function; `schema_version` holds the last one applied.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

metadata = MetaData()

schema_version = Table("schema_version", metadata, Column("version", Integer, nullable=False))

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("identity", String(256), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("model", String(128)),
    Column("first_words", Text, nullable=False, default=""),
    Column("cost", Numeric(18, 9), nullable=False, default=0),
    Column("continued_from", String(64)),
    Index("conversations_by_identity", "identity", "updated_at"),
)

items = Table(
    "items",
    metadata,
    Column("conversation_id", String(64), primary_key=True),
    Column("item_id", String(128), primary_key=True),
    Column("identity", String(256), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("previous_item_id", String(128)),
    Column("kind", String(32), nullable=False),
    Column("role", String(16)),
    Column("text", Text, nullable=False, default=""),
    Column("interrupted", Boolean, nullable=False, default=False),
    Column("audio_end_ms", Integer),
    Column("spoken", Boolean, nullable=False, default=False),
    Column("call_id", String(128)),
    Column("name", String(256)),
    Column("arguments", Text),
    Column("output", Text),
    Column("response_id", String(128)),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
)

usage = Table(
    "usage",
    metadata,
    Column("conversation_id", String(64), primary_key=True),
    Column("usage_id", String(160), primary_key=True),
    Column("identity", String(256), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("model", String(128)),
    Column("usage", Text, nullable=False),
    Column("cost", Numeric(18, 9)),
    Column("created_at", Float, nullable=False),
)


async def _v1(connection: AsyncConnection) -> None:
    await connection.run_sync(
        lambda sync: metadata.create_all(sync, tables=[conversations, items, usage], checkfirst=True)
    )


#: Every migration in order; the last number is the schema this code reads and writes.
MIGRATIONS: tuple[tuple[int, Callable[[AsyncConnection], Awaitable[None]]], ...] = ((1, _v1),)
SCHEMA_VERSION = MIGRATIONS[-1][0]


async def migrate(engine: AsyncEngine) -> int:
    """Apply the migrations the database has not seen, in one transaction; return the schema version.

    On PostgreSQL an advisory lock keeps two relays starting together from migrating at once.
    """
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(1919249505)"))
        await connection.run_sync(lambda sync: schema_version.create(sync, checkfirst=True))
        current = (await connection.execute(select(schema_version.c.version))).scalar()
        if current is not None and current > SCHEMA_VERSION:
            raise RuntimeError(
                f"the history database has schema version {current}, newer than this relay's {SCHEMA_VERSION}; "
                "run the newer relay, or point RELAY_HISTORY_DATABASE_URL at another database"
            )
        applied = current or 0
        for version, step in MIGRATIONS:
            if version > applied:
                await step(connection)
                applied = version
        if current is None:
            await connection.execute(schema_version.insert().values(version=applied))
        elif applied != current:
            await connection.execute(schema_version.update().values(version=applied))
        return applied
