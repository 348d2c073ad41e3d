"""Declarative base, engine and the request's unit of work."""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import DateTime, Enum, MetaData, event, exc, func
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.util import await_

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True)}


def utc_now() -> datetime:
    return datetime.now(UTC)


class TimestampMixin:
    # Python-side defaults: distinct per row even inside one transaction (stable ordering).
    created_at: Mapped[datetime] = mapped_column(default=utc_now, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        default=utc_now, server_default=func.now(), onupdate=utc_now
    )


def str_enum(enum_class: type[enum.StrEnum]) -> Enum:
    """A Python enum stored as its string values (VARCHAR, no native PostgreSQL type)."""
    return Enum(
        enum_class,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


def async_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and point them at the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


def driver_url(url: str) -> str:
    """The same URL for asyncpg itself (`postgresql://`)."""
    return "postgresql://" + async_url(url).removeprefix("postgresql+asyncpg://")


# A connection back in the pool for less than this is not pinged again when checked out:
# it answered a moment ago (PgBouncer's server_check_delay, 30 s by default, is the same
# idea). A busy worker or API checks connections out many times a second.
CHECK_AFTER_SECONDS = 1.0


def create_engine(
    url: str, *, pool_size: int = 10, check_after_seconds: float = CHECK_AFTER_SECONDS
) -> AsyncEngine:
    engine = create_async_engine(async_url(url), pool_size=pool_size, max_overflow=pool_size)

    def checkin(dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        rested = time.monotonic() - record.info.get("checked_in", -math.inf)
        if rested >= check_after_seconds:
            _ping(dbapi_connection)

    event.listen(engine.sync_engine, "checkin", checkin)
    event.listen(engine.sync_engine, "checkout", checkout)
    return engine


def _ping(dbapi_connection: Any) -> None:
    """Pessimistic disconnect handling, as `pool_pre_ping=True` does, in one round trip.

    SQLAlchemy's asyncpg ping wraps its `;` in BEGIN / ROLLBACK (for pgbouncer in
    transaction mode, which we do not use): three round trips on each checkout, a third of
    a delivery claim's. A connection found dead is replaced before use, and the pool's
    older connections with it, as pre-ping does (InvalidatePoolError)."""
    connection: asyncpg.Connection = dbapi_connection.driver_connection
    try:
        await_(connection.fetchrow(";"))
    except Exception as error:
        raise exc.InvalidatePoolError(str(error)) from error


async def _keep_as_is(connection: asyncpg.Connection) -> None:
    """An Inbox connection has no state to reset between uses (single autocommitted
    statements: no transaction, lock, cursor, LISTEN or SET), so its pool skips asyncpg's
    reset query, a round trip per use."""


class Inbox:
    """One-statement writes that commit on their own, sent straight to asyncpg: no ORM
    session, no statement compilation, no BEGIN / COMMIT, no ping. For the hottest write of
    the service, a provider's status callback (one INSERT each).

    `Inbox.pool(url)` holds a small asyncpg pool of its own. A connection the database
    dropped (a restart, a failover) fails once, and the statement is sent again on another:
    only idempotent statements belong here.
    """

    def __init__(
        self,
        acquire: Callable[[], AbstractAsyncContextManager[asyncpg.Connection]],
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._acquire = acquire
        self._close = close

    @classmethod
    def pool(cls, url: str, size: int = 10) -> Inbox:
        """On an asyncpg pool of `size` connections, opened on first use."""
        pool: asyncpg.Pool | None = None
        opening = asyncio.Lock()

        @asynccontextmanager
        async def acquire() -> AsyncIterator[asyncpg.Connection]:
            nonlocal pool
            if pool is None:
                async with opening:
                    if pool is None:
                        pool = await asyncpg.create_pool(
                            driver_url(url), min_size=1, max_size=size, reset=_keep_as_is
                        )
            async with pool.acquire() as connection:
                yield connection

        async def close() -> None:
            if pool is not None:
                await pool.close()

        return cls(acquire, close)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """The first column of the first row of `sql` ($1, $2... placeholders)."""
        for retry in (False, True):
            async with self._acquire() as connection:
                try:
                    return await connection.fetchval(sql, *args)
                except Exception:
                    # Whatever asyncpg raised (the server's notice, a closed socket, a
                    # protocol state error), the connection is gone: try another once.
                    if retry or not connection.is_closed():
                        raise
            log.warning("database connection dropped; sending the statement again")
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self._close is not None:
            await self._close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def unit_of_work(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One transaction: committed when the block ends cleanly, rolled back otherwise."""
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()
