"""The tests here commit for real, in a database of their own, through a pool of
connections, as a running service does: for what needs several connections at once (staff
acting while a batch is being sent) or a connection to lose."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.kit.db import create_engine


@pytest.fixture
def pool_size() -> int:
    return 5


@pytest.fixture
def settings(settings: Settings, own_database_url: str) -> Settings:
    return settings.model_copy(update={"database_url": own_database_url})


@pytest.fixture
async def engine(settings: Settings, pool_size: int) -> AsyncIterator[AsyncEngine]:
    assert settings.database_url
    engine = create_engine(settings.database_url, pool_size=pool_size)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
