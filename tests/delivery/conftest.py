"""Fixtures for the delivery engine: a fake Twilio on loopback, a school whose provider
account points at it (set over the API, so its credentials are sealed and opened for
real), and the real Engine on the test's savepoint sessionmaker."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.delivery import inbox as receipts
from app.delivery.engine import Engine
from app.kit.crypto import SecretBox
from app.providers.base import Receipt
from app.providers.registry import Registry
from tests.support.api import apply_receipts, inbox_on, make_school
from tests.support.delivery import TimedFakeTwilio, TwilioSchool, set_twilio_account


@pytest.fixture(scope="session")
async def twilio_server() -> AsyncIterator[TimedFakeTwilio]:
    fake = TimedFakeTwilio()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def twilio(twilio_server: TimedFakeTwilio) -> TimedFakeTwilio:
    """The fake Twilio server, emptied for this test."""
    twilio_server.reset()
    return twilio_server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The one shared outbound client, as the service has it (short timeouts)."""
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(2.0, connect=1.0), trust_env=False
    ) as client:
        yield client


@pytest.fixture
async def twilio_school(client: httpx.AsyncClient, twilio: TimedFakeTwilio) -> TwilioSchool:
    """A school on the fake Twilio that may send at any hour (tests set a window when
    they need one)."""
    school, auth = await make_school(client, sending_window=None)
    await set_twilio_account(client, auth, twilio)
    return TwilioSchool(school["id"], auth)


@pytest.fixture
def registry(
    http: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> Registry:
    assert settings.secret_key

    async def on_simulated_receipt(receipt: Receipt) -> None:
        """Kept as the worker keeps it, and applied as its receipt applier would."""
        await receipts.keep(inbox_on(sessionmaker), receipt)
        await apply_receipts(sessionmaker)

    return Registry(
        http, SecretBox(settings.secret_key), settings.public_base_url, on_simulated_receipt
    )


@pytest.fixture
def delivery(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, registry: Registry
) -> Engine:
    """The real engine, with a seeded random source for its jitter."""
    return Engine(sessionmaker, settings, registry, rng=random.Random(1234))
