"""Fixtures for the provider layer: code tables as shipped, a shared HTTP client, fake Twilio."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.providers.twilio.client import TwilioProvider
from tests.fakes.twilio import FakeTwilio


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The one shared client, as the service has it (short timeouts: tests stay fast)."""
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(2.0, connect=1.0), trust_env=False
    ) as client:
        yield client


@pytest.fixture(scope="session")
async def fake_twilio_server() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def fake_twilio(fake_twilio_server: FakeTwilio) -> FakeTwilio:
    """The fake Twilio server, emptied for this test."""
    fake_twilio_server.reset()
    return fake_twilio_server


@pytest.fixture
def twilio(http: httpx.AsyncClient, fake_twilio: FakeTwilio) -> TwilioProvider:
    return TwilioProvider(
        http,
        account_sid=fake_twilio.account_sid,
        auth_token=fake_twilio.auth_token,
        from_number=fake_twilio.from_number,
        api_base=fake_twilio.url,
    )
