"""The test database: URLs, migrations, and statements run as the server's admin."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from alembic.config import Config

ROOT = Path(__file__).resolve().parents[2]  # the repository


def plain_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def with_database(url: str, name: str) -> str:
    """The same server URL, naming another database (keeps ?host= for sockets)."""
    base, _, query = url.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}" + (f"?{query}" if query else "")


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    return config


async def admin_sql(server_url: str, sql: str) -> None:
    connection = await asyncpg.connect(plain_url(server_url))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()
