"""The engine's checkout ping: a connection the database dropped is replaced before use."""

from __future__ import annotations

import asyncpg
from sqlalchemy import text

from app.kit.db import create_engine, driver_url


async def test_a_dropped_connection_is_replaced_on_checkout(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            first = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        # The database drops the pool's only connection (a restart, a failover, an admin).
        admin = await asyncpg.connect(driver_url(database_url))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
        finally:
            await admin.close()
        async with engine.connect() as connection:
            again = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert again != first
    finally:
        await engine.dispose()
