"""Fixtures: a real PostgreSQL (TEST_DATABASE_URL, or an embedded server started here),
migrated by the real migrations; one rolled-back transaction per test; the ASGI client."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.kit import embedded
from app.kit.crypto import SecretBox, new_secret_key
from app.kit.db import create_engine
from app.main import create_app
from tests.helpers import inbox_on

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "test-admin-token"


def plain_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def with_database(url: str, name: str) -> str:
    """The same server URL, naming another database (keeps ?host= for sockets)."""
    base, _, query = url.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return plain_url(url)
    # Not under pytest's tmp_path: pytest prunes old base dirs, even a concurrent run's.
    pgdata = Path(tempfile.mkdtemp(prefix="campanile-test-pg-")) / "data"
    return embedded.start_server(pgdata, delete_on_exit=True)


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


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh database on the server, migrated to head, dropped at the end."""
    name = f"campanile_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin_sql(server_url, f'CREATE DATABASE "{name}"'))
    url = with_database(server_url, name)
    command.upgrade(alembic_config(url), "head")
    yield url
    asyncio.run(admin_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def own_database_url(server_url: str) -> AsyncIterator[str]:
    """A database of the test's own, migrated to head, dropped at the end: for tests whose
    writes commit (worker processes, dropped connections) and must not reach the others."""
    name = f"campanile_own_{uuid.uuid4().hex[:12]}"
    await admin_sql(server_url, f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    try:
        # Without a connection given, env.py runs an event loop of its own: in a thread.
        await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
        yield url
    finally:
        await admin_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        secret_key=new_secret_key(),
        admin_token=ADMIN_TOKEN,
        public_base_url="https://campanile.test",
    )


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    assert settings.database_url
    engine = create_engine(settings.database_url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture
async def sessionmaker(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on one connection inside a transaction that is rolled back after the test;
    each session's commit only releases a savepoint."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        yield async_sessionmaker(
            bind=connection,
            join_transaction_mode="create_savepoint",
            expire_on_commit=False,
            autoflush=False,
        )
        await transaction.rollback()


@pytest.fixture
async def session(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        yield session


@pytest.fixture
async def app(
    settings: Settings, engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[FastAPI]:
    assert settings.secret_key
    app = create_app(settings)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = sessionmaker
    app.state.inbox = inbox_on(sessionmaker)
    app.state.secret_box = SecretBox(settings.secret_key)
    async with httpx.AsyncClient() as http:
        app.state.http = http
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def make_school(
    client: httpx.AsyncClient, **settings: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    """Create a school over the API: (its JSON, headers carrying its API key)."""
    response = await client.post(
        "/v1/admin/schools", json={"name": "Lincoln High", **settings}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body, {"Authorization": f"Bearer {body['api_key']}"}


@pytest.fixture
async def school(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, str]]:
    return await make_school(client)


@pytest.fixture
async def auth(school: tuple[dict[str, Any], dict[str, str]]) -> dict[str, str]:
    return school[1]
