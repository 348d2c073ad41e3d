"""Fixtures for the delivery engine: a fake Twilio on loopback, a school whose provider
account points at it (set over the API, so its credentials are sealed and opened for
real), and the real Engine on the test's savepoint sessionmaker."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import Response

from app.config import Settings
from app.delivery import inbox as receipts
from app.delivery.engine import Engine
from app.kit.crypto import SecretBox
from app.providers import codes
from app.providers.base import Receipt
from app.providers.registry import Registry
from tests.conftest import make_school
from tests.fakes.twilio import FakeTwilio
from tests.helpers import apply_receipts, inbox_on


@dataclass
class TimedFakeTwilio(FakeTwilio):
    """The fake Twilio, also noting when each create call arrived (monotonic seconds)."""

    arrivals: list[float] = field(default_factory=list)
    # ("create" | "list", To) in the order the calls arrived.
    events: list[tuple[str, str | None]] = field(default_factory=list)
    # (monotonic seconds, To) of each create call.
    creates: list[tuple[float, str | None]] = field(default_factory=list)

    async def _create(self, request: Request) -> Response:
        arrived = time.monotonic()
        self.arrivals.append(arrived)
        form = dict(parse_qsl((await request.body()).decode("utf-8")))  # the body is cached
        self.events.append(("create", form.get("To")))
        self.creates.append((arrived, form.get("To")))
        return await super()._create(request)

    async def _list(self, request: Request) -> Response:
        self.events.append(("list", request.query_params.get("To")))
        return await super()._list(request)

    def reset(self) -> None:
        super().reset()
        self.arrivals.clear()
        self.events.clear()
        self.creates.clear()

    def sid_to(self, to: str) -> str:
        """The sid of the one message the fake holds for `to`."""
        [sid] = [m["sid"] for m in self.messages if m["to"] == to]
        return str(sid)


@dataclass(frozen=True)
class TwilioSchool:
    """A school sending through the fake Twilio: its id and API headers."""

    id: str
    auth: dict[str, str]


@pytest.fixture(autouse=True)
def shipped_code_tables() -> Iterator[None]:
    """Every test starts from the shipped code tables, whatever the environment says."""
    codes.configure(Settings(twilio_code_table=None, telnyx_code_table=None))
    yield
    codes.reset()


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


async def set_twilio_account(
    client: httpx.AsyncClient, auth: dict[str, str], fake: FakeTwilio, **extra: Any
) -> dict[str, Any]:
    """Point the school's provider account at the fake, over the API."""
    account = {
        "provider": "twilio",
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "from_number": fake.from_number,
        "api_base": fake.url,
        **extra,
    }
    response = await client.put("/v1/school/provider", json=account, headers=auth)
    assert response.status_code == 200, response.text
    assert "auth_token" not in response.json()
    body: dict[str, Any] = response.json()
    return body


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
