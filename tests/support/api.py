"""Small API helpers shared by tests (not fixtures)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from app.delivery import applier as receipts
from app.kit.db import Inbox, unit_of_work


async def make_list(
    client: httpx.AsyncClient, auth: dict[str, str], contacts: list[dict[str, Any]]
) -> str:
    """A contact list with these contacts, imported over the API; returns its id."""
    created = await client.post("/v1/contact-lists", json={"name": "Families"}, headers=auth)
    assert created.status_code == 201, created.text
    list_id: str = created.json()["id"]
    imported = await client.post(
        f"/v1/contact-lists/{list_id}/contacts", json={"contacts": contacts}, headers=auth
    )
    assert imported.status_code == 200, imported.text
    assert imported.json()["rejected"] == [], imported.text
    return list_id


async def make_campaign(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    contacts: list[dict[str, Any]],
    body: str = "Hi {first_name}, school is closed tomorrow.",
    **extra: Any,
) -> dict[str, Any]:
    list_id = await make_list(client, auth, contacts)
    response = await client.post(
        "/v1/campaigns",
        json={"name": "Snow day", "body": body, "contact_list_id": list_id, **extra},
        headers=auth,
    )
    assert response.status_code == 201, response.text
    campaign: dict[str, Any] = response.json()
    return campaign


async def launched(
    client: httpx.AsyncClient, auth: dict[str, str], contacts: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    campaign = await make_campaign(client, auth, contacts, **extra)
    response = await client.post(f"/v1/campaigns/{campaign['id']}/launch", headers=auth)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def recipients(
    client: httpx.AsyncClient, auth: dict[str, str], campaign_id: str, **params: Any
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/v1/campaigns/{campaign_id}/contacts", params={"limit": 500, **params}, headers=auth
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def people(*phones: str) -> list[dict[str, Any]]:
    return [
        {"phone": phone, "first_name": f"Kid{i}", "last_name": "Doe", "fields": {"grade": "5"}}
        for i, phone in enumerate(phones)
    ]


def inbox_on(sessionmaker: async_sessionmaker[AsyncSession]) -> Inbox:
    """The app's Inbox, writing on the test's own connection: inside the transaction the
    test rolls back, like every other write of the test."""
    connection: AsyncConnection = sessionmaker.kw["bind"]

    @asynccontextmanager
    async def acquire() -> AsyncIterator[asyncpg.Connection]:
        yield (await connection.get_raw_connection()).driver_connection

    return Inbox(acquire)


async def apply_receipts(sessionmaker: async_sessionmaker[AsyncSession]) -> list[receipts.Result]:
    """What the receipt applier of a running service does moments after receipts arrive:
    apply every stored receipt whose message is known, batch after batch; the results."""
    results: list[receipts.Result] = []
    while True:
        async with unit_of_work(sessionmaker) as session:
            batch = await receipts.apply_stored(session)
        if not batch:
            return results
        results += batch


ADMIN_TOKEN = "test-admin-token"


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
