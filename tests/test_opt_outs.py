from __future__ import annotations

import httpx

from tests.support.api import launched, make_school, people, recipients


async def test_opt_out_list_lifecycle(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    created = await client.post(
        "/v1/opt-outs", json={"phone": "(415) 555-2671", "keyword": "STOP"}, headers=auth
    )
    assert created.status_code == 201
    record = created.json()
    assert record["phone"] == "+14155552671"
    assert record["source"] == "staff"
    assert record["keyword"] == "STOP"
    assert record["created_at"]
    again = await client.post("/v1/opt-outs", json={"phone": "+14155552671"}, headers=auth)
    assert again.status_code == 200
    assert again.json()["keyword"] == "STOP"  # the first record is kept

    listed = await client.get("/v1/opt-outs", headers=auth)
    assert [o["phone"] for o in listed.json()["items"]] == ["+14155552671"]

    removed = await client.delete("/v1/opt-outs/%2B14155552671", headers=auth)
    assert removed.status_code == 204
    gone = await client.delete("/v1/opt-outs/%2B14155552671", headers=auth)
    assert gone.status_code == 404
    assert (await client.get("/v1/opt-outs", headers=auth)).json()["items"] == []


async def test_opted_back_in_number_is_sent_again(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    await client.post("/v1/opt-outs", json={"phone": "+14155552671"}, headers=auth)
    await client.delete("/v1/opt-outs/+14155552671", headers=auth)
    campaign = await launched(client, auth, people("+14155552671"))
    assert (await recipients(client, auth, campaign["id"]))[0]["status"] == "queued"


async def test_opt_outs_belong_to_one_school(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    await client.post("/v1/opt-outs", json={"phone": "+14155552671"}, headers=auth)
    _, other = await make_school(client, name="Other")
    assert (await client.get("/v1/opt-outs", headers=other)).json()["items"] == []
    campaign = await launched(client, other, people("+14155552671"))
    assert (await recipients(client, other, campaign["id"]))[0]["status"] == "queued"


async def test_bad_opt_out_input(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    for body in (
        {"phone": "not a phone"},
        {"phone": "+1 555"},
        {},
        {"phone": "+14155552671", "x": 1},
    ):
        response = await client.post("/v1/opt-outs", json=body, headers=auth)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == "application/problem+json"
        # Each problem names the field, whether the schema or the number's parsing found it.
        assert response.json()["errors"][0]["loc"][0] == "body", body
    for body in ({"phone": "not a phone"}, {"phone": "+1 555"}):
        response = await client.post("/v1/opt-outs", json=body, headers=auth)
        [error] = response.json()["errors"]
        assert (error["loc"], error["type"]) == (["body", "phone"], "phone_invalid")
        assert error["msg"] == response.json()["detail"]
    response = await client.delete("/v1/opt-outs/not-a-phone", headers=auth)
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert (error["loc"], error["type"]) == (["path", "phone"], "phone_invalid")
    assert (await client.get("/v1/opt-outs", headers=auth)).json()["items"] == []
