"""The Inbox (app.kit.db): one-statement writes on an asyncpg pool of its own, which survive
a connection the database dropped."""

from __future__ import annotations

import asyncpg

from app.kit.db import Inbox, driver_url


async def test_a_dropped_connection_is_replaced_and_the_statement_sent_again(
    database_url: str,
) -> None:
    inbox = Inbox.pool(database_url, size=1)
    try:
        first = await inbox.fetchval("SELECT pg_backend_pid()")
        # The database drops the pool's only connection (a restart, a failover, an admin).
        admin = await asyncpg.connect(driver_url(database_url))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
        finally:
            await admin.close()
        again = await inbox.fetchval("SELECT pg_backend_pid()")
        assert again != first
    finally:
        await inbox.aclose()


async def test_errors_that_are_not_a_dropped_connection_are_raised_once(
    database_url: str,
) -> None:
    inbox = Inbox.pool(database_url, size=1)
    try:
        try:
            await inbox.fetchval("SELECT 1 / 0")
        except asyncpg.DivisionByZeroError:
            pass
        else:
            raise AssertionError("no error")
        assert await inbox.fetchval("SELECT 41 + 1") == 42
    finally:
        await inbox.aclose()
