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

import httpx
import pytest
from alembic import command
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.kit import embedded
from app.kit.crypto import SecretBox, new_secret_key
from app.kit.db import create_engine
from app.main import create_app
from app.providers import codes
from tests.support.api import ADMIN_TOKEN, inbox_on, make_school
from tests.support.database import admin_sql, alembic_config, plain_url, with_database


@pytest.fixture(autouse=True)
def shipped_code_tables() -> Iterator[None]:
    """Every test reads the shipped code tables, whatever the environment says."""
    codes.configure(Settings(twilio_code_table=None, telnyx_code_table=None))
    yield
    codes.reset()


@pytest.fixture(scope="session")
def server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return plain_url(url)
    # Not under pytest's tmp_path: pytest prunes old base dirs, even a concurrent run's.
    pgdata = Path(tempfile.mkdtemp(prefix="campanile-test-pg-")) / "data"
    return embedded.start_server(pgdata, delete_on_exit=True)


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


@pytest.fixture
async def school(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, str]]:
    return await make_school(client)


@pytest.fixture
async def auth(school: tuple[dict[str, Any], dict[str, str]]) -> dict[str, str]:
    return school[1]
