"""A school's API keys, as its IT administrator manages them: named, listed with their last
use and never with their secret, revoked at once; and the admin's view of schools."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.errors import PROBLEM_JSON
from app.schools.service import LastUsed
from tests.support.api import ADMIN, make_school

Json = dict[str, Any]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int) -> Json:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: Json = response.json()
    assert body["status"] == status
    return body


async def new_key(client: httpx.AsyncClient, auth: dict[str, str], name: str) -> Json:
    response = await client.post("/v1/api-keys", json={"name": name}, headers=auth)
    assert response.status_code == 201, response.text
    created: Json = response.json()
    return created


async def listed(client: httpx.AsyncClient, auth: dict[str, str]) -> list[Json]:
    response = await client.get("/v1/api-keys", headers=auth)
    assert response.status_code == 200, response.text
    items: list[Json] = response.json()["items"]
    return items


async def test_a_new_key_is_shown_once_then_listed_without_its_secret(
    client: httpx.AsyncClient, school: tuple[Json, dict[str, str]]
) -> None:
    body, auth = school
    created = await new_key(client, auth, "  Attendance sync  ")
    assert created["name"] == "Attendance sync"
    assert created["api_key"].startswith(created["prefix"])
    assert created["revoked_at"] is None and created["last_used_at"] is None

    me = await client.get("/v1/school", headers=bearer(created["api_key"]))
    assert me.status_code == 200 and me.json()["id"] == body["id"]

    response = await client.get("/v1/api-keys", headers=auth)
    assert created["api_key"] not in response.text
    assert body["api_key"] not in response.text
    items = response.json()["items"]
    assert [k["name"] for k in items] == ["API key", "Attendance sync"]
    assert all(
        set(k) == {"id", "name", "prefix", "created_at", "last_used_at", "revoked_at"}
        for k in items
    )


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "a\x00b"])
async def test_a_key_needs_a_name(
    client: httpx.AsyncClient, auth: dict[str, str], name: str
) -> None:
    assert_problem(await client.post("/v1/api-keys", json={"name": name}, headers=auth), 422)
    assert_problem(await client.post("/v1/api-keys", json={}, headers=auth), 422)


async def test_a_revoked_key_is_refused_at_once_and_the_others_keep_working(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    leaked = await new_key(client, auth, "Pasted in a ticket")
    kept = await new_key(client, auth, "Nightly export")
    leaked_auth = bearer(leaked["api_key"])
    assert (await client.get("/v1/campaigns", headers=leaked_auth)).status_code == 200

    revoked = await client.delete(f"/v1/api-keys/{leaked['id']}", headers=auth)
    assert revoked.status_code == 204

    assert_problem(await client.get("/v1/campaigns", headers=leaked_auth), 401)
    assert_problem(await client.get("/v1/api-keys", headers=leaked_auth), 401)
    assert (await client.get("/v1/campaigns", headers=auth)).status_code == 200
    assert (await client.get("/v1/campaigns", headers=bearer(kept["api_key"]))).status_code == 200

    by_id = {k["id"]: k for k in await listed(client, auth)}
    assert by_id[leaked["id"]]["revoked_at"] is not None
    assert by_id[kept["id"]]["revoked_at"] is None
    # Revoking it again changes nothing: still revoked, at the first time.
    again = await client.delete(f"/v1/api-keys/{leaked['id']}", headers=auth)
    assert again.status_code == 204
    assert {k["id"]: k for k in await listed(client, auth)}[leaked["id"]] == by_id[leaked["id"]]


async def test_a_key_can_revoke_itself(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    own = await new_key(client, auth, "Old laptop")
    own_auth = bearer(own["api_key"])
    assert (await client.delete(f"/v1/api-keys/{own['id']}", headers=own_auth)).status_code == 204
    assert_problem(await client.get("/v1/school", headers=own_auth), 401)
    assert (await client.get("/v1/school", headers=auth)).status_code == 200


async def test_a_school_cannot_see_or_revoke_another_schools_keys(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    _, other_auth = await make_school(client, name="Roosevelt Middle")
    other_keys = await listed(client, other_auth)
    assert_problem(await client.delete(f"/v1/api-keys/{other_keys[0]['id']}", headers=auth), 404)
    assert_problem(await client.delete(f"/v1/api-keys/{uuid.uuid4()}", headers=auth), 404)
    assert_problem(await client.delete("/v1/api-keys/not-an-id", headers=auth), 404)
    assert (await client.get("/v1/school", headers=other_auth)).status_code == 200
    assert {k["id"] for k in await listed(client, auth)}.isdisjoint({k["id"] for k in other_keys})


async def test_last_used_at_is_the_minute_of_the_latest_use_written_off_the_requests_way(
    app: FastAPI,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """A request notes its key's minute in memory; no request writes it on its way. The
    process writes every key's minute in one statement now and then (and a list of keys
    first), so the list shows the minute of the latest use, and a later minute moves it on."""
    now = datetime(2026, 12, 2, 10, 41, 37, tzinfo=UTC)
    last_used = LastUsed(clock=lambda: now)
    app.state.last_used = last_used
    key = await new_key(client, auth, "Front office")
    writes: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            writes.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        for _ in range(5):
            response = await client.get("/v1/school", headers=bearer(key["api_key"]))
            assert response.status_code == 200
        assert writes == []  # not one a request, nor one on any request's way
        assert await last_used.flush(sessionmaker) == 2  # the two keys used, in one statement
        assert len(writes) == 1
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)

    def shown() -> Any:
        return {k["id"]: k["last_used_at"] for k in listed_now}[key["id"]]

    listed_now = await listed(client, auth)
    assert shown() == "2026-12-02T10:41:00Z"
    now = now + timedelta(minutes=1, seconds=5)
    assert (await client.get("/v1/school", headers=bearer(key["api_key"]))).status_code == 200
    listed_now = await listed(client, auth)  # flushes this process's notes first
    assert shown() == "2026-12-02T10:42:00Z"
    assert await last_used.flush(sessionmaker) == 0  # nothing left to write


async def test_keys_are_paginated(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    for i in range(4):
        await new_key(client, auth, f"Key {i}")
    first = (await client.get("/v1/api-keys", params={"limit": 3}, headers=auth)).json()
    assert len(first["items"]) == 3 and first["next_cursor"]
    rest = await client.get(
        "/v1/api-keys", params={"limit": 3, "cursor": first["next_cursor"]}, headers=auth
    )
    assert len(rest.json()["items"]) == 2 and rest.json()["next_cursor"] is None
    names = [k["name"] for k in first["items"] + rest.json()["items"]]
    assert names == ["API key", "Key 0", "Key 1", "Key 2", "Key 3"]


async def test_the_admin_lists_schools_and_manages_their_keys(
    client: httpx.AsyncClient,
) -> None:
    made = [await make_school(client, name=f"School {i}") for i in range(3)]
    ids = [body["id"] for body, _ in made]

    seen: list[Json] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/admin/schools", params=params, headers=ADMIN)).json()
        seen += page["items"]
        if not (cursor := page["next_cursor"]):
            break
    assert [s["id"] for s in seen if s["id"] in ids] == ids
    assert all("api_key" not in s for s in seen)

    one = await client.get(f"/v1/admin/schools/{ids[1]}", headers=ADMIN)
    assert one.status_code == 200 and one.json()["name"] == "School 1"
    assert_problem(await client.get(f"/v1/admin/schools/{uuid.uuid4()}", headers=ADMIN), 404)

    issued = await client.post(
        f"/v1/admin/schools/{ids[1]}/api-keys", json={"name": "Support"}, headers=ADMIN
    )
    assert issued.status_code == 201 and issued.json()["name"] == "Support"
    keys = await client.get(f"/v1/admin/schools/{ids[1]}/api-keys", headers=ADMIN)
    assert [k["name"] for k in keys.json()["items"]] == ["API key", "Support"]
    assert issued.json()["api_key"] not in keys.text

    first_key = keys.json()["items"][0]["id"]
    revoked = await client.delete(f"/v1/admin/schools/{ids[1]}/api-keys/{first_key}", headers=ADMIN)
    assert revoked.status_code == 204
    assert_problem(await client.get("/v1/school", headers=made[1][1]), 401)
    assert (await client.get("/v1/school", headers=bearer(issued.json()["api_key"]))).is_success
    # A key id of another school is not found under this one.
    other_key = (await listed(client, made[0][1]))[0]["id"]
    assert_problem(
        await client.delete(f"/v1/admin/schools/{ids[1]}/api-keys/{other_key}", headers=ADMIN),
        404,
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/admin/schools"),
        ("GET", "/v1/admin/schools/{id}"),
        ("GET", "/v1/admin/schools/{id}/api-keys"),
        ("DELETE", "/v1/admin/schools/{id}/api-keys/{key}"),
    ],
)
async def test_admin_routes_need_the_admin_token(
    client: httpx.AsyncClient, school: tuple[Json, dict[str, str]], method: str, path: str
) -> None:
    body, auth = school
    key = (await listed(client, auth))[0]["id"]
    url = path.format(id=body["id"], key=key)
    assert_problem(await client.request(method, url), 401)
    assert_problem(await client.request(method, url, headers=auth), 401)
    assert (await client.get("/v1/school", headers=auth)).status_code == 200
