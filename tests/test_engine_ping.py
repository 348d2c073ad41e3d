"""The engine's checkout ping: a connection the database dropped is replaced before use;
one back in the pool for less than the check delay is used without a ping."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.kit.db import create_engine, driver_url


async def test_a_dropped_connection_is_replaced_on_checkout(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, check_after_seconds=0.2)
    try:
        async with engine.connect() as connection:
            first = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        # The database drops the pool's only connection (a restart, a failover, an admin).
        admin = await asyncpg.connect(driver_url(database_url))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
        finally:
            await admin.close()
        await asyncio.sleep(0.25)  # past the check delay
        async with engine.connect() as connection:
            again = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert again != first
    finally:
        await engine.dispose()


def counting_pings(engine: AsyncEngine) -> list[str]:
    """The pings the engine's connections send (the checkout ping is `;`), as they go."""
    pings: list[str] = []

    def count_pings(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(
            lambda query: pings.append(query.query) if query.query == ";" else None
        )

    event.listen(engine.sync_engine, "connect", count_pings)
    return pings


async def use(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def test_a_connection_just_used_is_not_pinged_again(database_url: str) -> None:
    # Back to back, well within the check delay (even on a slow machine): pinged once,
    # when new.
    engine = create_engine(database_url, pool_size=1, check_after_seconds=5)
    pings = counting_pings(engine)
    try:
        for _ in range(3):
            await use(engine)
        assert pings == [";"]
    finally:
        await engine.dispose()
    # Rested past the delay (a short one, not to wait long): pinged again.
    engine = create_engine(database_url, pool_size=1, check_after_seconds=0.2)
    pings = counting_pings(engine)
    try:
        await use(engine)
        assert pings == [";"]  # new
        await asyncio.sleep(0.25)
        await use(engine)
        assert pings == [";", ";"]
    finally:
        await engine.dispose()
