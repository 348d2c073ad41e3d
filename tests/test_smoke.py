from typing import Any

import httpx

from tests.support.api import ADMIN


async def test_school_created_with_defaults_and_key_works(
    client: httpx.AsyncClient, school: tuple[dict[str, Any], dict[str, str]]
) -> None:
    body, headers = school
    assert body["sending_window"] == {"start": "08:00", "end": "21:00"}
    assert body["allowed_country_codes"] == [1]
    me = await client.get("/v1/school", headers=headers)
    assert me.status_code == 200
    assert me.json()["id"] == body["id"]
    assert "api_key" not in me.json()


async def test_bad_key_is_401_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/school", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401


async def test_admin_needs_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/admin/schools", json={"name": "x"})
    assert response.status_code == 401
    response = await client.post("/v1/admin/schools", json={"name": "x", "bogus": 1}, headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["errors"]
