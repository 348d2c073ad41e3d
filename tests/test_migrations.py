"""The migration history: one head, a schema equal to the models, and a round trip
(upgrade, downgrade to base, upgrade) with rows present. Each test gets a database of its
own on the test server, so the shared test database is never touched."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

import app.models  # noqa: F401  (fills the metadata)
from app.kit.db import Base, create_engine
from tests.support.database import alembic_config, plain_url, with_database


@pytest.fixture
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    name = f"campanile_migrations_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(plain_url(server_url))
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    await admin(f'CREATE DATABASE "{name}"')
    yield with_database(server_url, name)
    await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def run_sync(url: str, work: Callable[[Connection], Any]) -> Any:
    """Run `work` on a sync facade of an async connection, in one committed transaction."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(work)
    finally:
        await engine.dispose()


async def alembic(url: str, action: Callable[[Config], None]) -> None:
    """Run an alembic command in-process, on our connection (env.py takes it as given)."""

    def work(connection: Connection) -> None:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        action(config)

    await run_sync(url, work)


def schema_differences(connection: Connection) -> list[Any]:
    """What `alembic revision --autogenerate` would write: nothing when the schema is current."""
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    differences: list[Any] = compare_metadata(context, Base.metadata)
    return differences


def first_revision() -> str:
    bases = ScriptDirectory.from_config(alembic_config("")).get_bases()
    assert len(bases) == 1, f"expected one base revision, found {bases}"
    return bases[0]


def test_one_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config("")).get_heads()
    assert len(heads) == 1, f"several heads {heads}: merge them (`alembic merge heads`)"


async def test_migrated_schema_matches_the_models(fresh_database: str) -> None:
    await alembic(fresh_database, lambda config: command.upgrade(config, "head"))
    assert await run_sync(fresh_database, schema_differences) == []


# Rows in the first revision's schema (which never changes once released), so every later
# migration is also run over existing data.
SEED = [
    """INSERT INTO schools (id, name, timezone, default_region, allowed_country_codes,
           retry_base_delay_seconds, retry_max_delay_seconds)
       VALUES (:school, 'Lincoln High', 'America/Chicago', 'US', ARRAY[1], 60, 3600)""",
    "INSERT INTO contact_lists (id, school_id, name) VALUES (:list, :school, 'Parents')",
    """INSERT INTO contacts (contact_list_id, phone, country_code, first_name, fields)
       VALUES (:list, '+13125550101', 1, 'Ada', '{"grade": "5"}'),
              (:list, '+13125550102', 1, 'Grace', '{}')""",
    """INSERT INTO campaigns (id, school_id, name, body, contact_list_id, status, launched_at)
       VALUES (:campaign, :school, 'Snow day', 'Hi {first_name}', :list, 'active', now())""",
    """INSERT INTO recipients (campaign_id, school_id, phone, first_name, status, attempts)
       VALUES (:campaign, :school, '+13125550101', 'Ada', 'pending', 1),
              (:campaign, :school, '+13125550102', 'Grace', 'queued', 0)""",
]


def seed(connection: Connection) -> None:
    ids = {"school": uuid.uuid4(), "list": uuid.uuid4(), "campaign": uuid.uuid4()}
    for statement in SEED:
        connection.execute(text(statement), ids)


def leftovers(connection: Connection) -> list[str]:
    """Relations and types in the public schema, but alembic's own version table."""
    rows = connection.execute(
        text(
            """SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND relname NOT LIKE 'alembic_version%'
               UNION ALL
               SELECT typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
               WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r')"""
        )
    )
    return sorted(rows.scalars())


def count_recipients(connection: Connection) -> int:
    return int(connection.execute(text("SELECT count(*) FROM recipients")).scalar_one())


async def test_downgrade_to_base_and_back_with_data(fresh_database: str) -> None:
    url = fresh_database
    await alembic(url, lambda config: command.upgrade(config, first_revision()))
    await run_sync(url, seed)

    await alembic(url, lambda config: command.upgrade(config, "head"))
    assert await run_sync(url, count_recipients) == 2

    await alembic(url, lambda config: command.downgrade(config, "base"))
    assert await run_sync(url, leftovers) == []

    await alembic(url, lambda config: command.upgrade(config, "head"))
    assert await run_sync(url, schema_differences) == []


# -- recipients.delivery_confirmed (README, Webhooks) -------------------------------------------

DELIVERY_CONFIRMED = "d5e8a2c4f017"


def set_statuses(connection: Connection) -> None:
    """Ada delivered (by a carrier's receipt, the only way to it before the column), Grace
    still queued."""
    connection.execute(
        text("UPDATE recipients SET status = 'delivered' WHERE phone = '+13125550101'")
    )


def confirmations(connection: Connection) -> dict[str, tuple[str, bool | None]]:
    rows = connection.execute(text("SELECT phone, status, delivery_confirmed FROM recipients"))
    return {phone: (status, confirmed) for phone, status, confirmed in rows}


def recipient_columns(connection: Connection) -> set[str]:
    rows = connection.execute(
        text("SELECT column_name FROM information_schema.columns WHERE table_name = 'recipients'")
    )
    return set(rows.scalars())


async def test_delivery_confirmed_upgrades_and_downgrades_with_data(fresh_database: str) -> None:
    url = fresh_database
    revision = ScriptDirectory.from_config(alembic_config("")).get_revision(DELIVERY_CONFIRMED)
    assert revision is not None and isinstance(revision.down_revision, str)
    before: str = revision.down_revision
    await alembic(url, lambda config: command.upgrade(config, first_revision()))
    await run_sync(url, seed)
    await alembic(url, lambda config: command.upgrade(config, before))
    await run_sync(url, set_statuses)

    await alembic(url, lambda config: command.upgrade(config, DELIVERY_CONFIRMED))
    assert await run_sync(url, confirmations) == {
        "+13125550101": ("delivered", True),  # delivered by a carrier's receipt: confirmed
        "+13125550102": ("queued", None),  # not delivered: null
    }

    await alembic(url, lambda config: command.downgrade(config, before))
    assert "delivery_confirmed" not in await run_sync(url, recipient_columns)
    assert await run_sync(url, count_recipients) == 2

    await alembic(url, lambda config: command.upgrade(config, "head"))
    assert (await run_sync(url, confirmations))["+13125550101"] == ("delivered", True)
