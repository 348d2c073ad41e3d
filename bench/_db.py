"""A database of the benchmark's own, made the way tests/conftest.py makes one: on the
server TEST_DATABASE_URL names, or on an embedded server; migrated with the real migrations."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent


def plain_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def with_database(url: str, name: str) -> str:
    """The same server URL, naming another database (keeps ?host= for sockets)."""
    base, _, query = url.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}" + (f"?{query}" if query else "")


async def admin(server_url: str, sql: str) -> None:
    connection = await asyncpg.connect(plain_url(server_url))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


# The outbox's triggers (README, Events), disabled to measure what they cost: `--events off`.
EVENTS_OFF = [
    "ALTER TABLE recipients DISABLE TRIGGER recipients_events",
    "ALTER TABLE campaigns DISABLE TRIGGER campaigns_events",
    "ALTER TABLE opt_outs DISABLE TRIGGER opt_outs_events",
]


def migrate(url: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


@contextmanager
def fresh_database(*, keep: bool = False) -> Iterator[str]:
    """A new database, migrated, on TEST_DATABASE_URL's server or on an embedded one started
    here (stopped and deleted when the process exits); its URL. Dropped on exit, unless
    `keep` and the server is TEST_DATABASE_URL's (an embedded server goes with the process).
    """
    from app.kit import embedded

    server_url = os.environ.get("TEST_DATABASE_URL")
    if server_url:
        server_url = plain_url(server_url)
    else:
        pgdata = Path(tempfile.mkdtemp(prefix="campanile-bench-"))
        server_url = embedded.start_server(pgdata, delete_on_exit=True)
        keep = False
    name = f"campanile_bench_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin(server_url, f'CREATE DATABASE "{name}"'))
    database_url = with_database(server_url, name)
    try:
        migrate(database_url)
        yield database_url
    finally:
        if keep:
            print(f"kept: {database_url}")
        else:
            asyncio.run(admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
