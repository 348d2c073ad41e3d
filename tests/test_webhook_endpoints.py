"""Webhook endpoints (README, Events): only https URLs of public addresses are taken
(EVENTS_ALLOW_PRIVATE_URLS off, as in production), checked on the resolved address; a
refused one is a 422 problem and saves nothing."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from app.events import urls
from tests.support.api import make_school


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/events",
        "https://127.0.0.1/events",
        "https://10.0.0.1/events",
        "https://169.254.169.254/latest/meta-data",
        "https://localhost/events",
        "https://[::1]/events",
        "https://[::ffff:10.0.0.1]/events",  # IPv4-mapped
        "https://[64:ff9b::a00:1]/events",  # NAT64 of 10.0.0.1
        "https://[2002:a00:1::1]/events",  # 6to4 of 10.0.0.1
        "https://[::127.0.0.1]/events",  # IPv4-compatible (::/96) loopback
        "https://[::10.0.0.1]/events",  # IPv4-compatible 10.0.0.1
        "https://[::a9fe:a9fe]/events",  # IPv4-compatible 169.254.169.254, in hex
        "https://[::ffff:0:7f00:1]/events",  # IPv4-translated (::ffff:0:0:0/96) loopback
        "https://[::ffff:0:a00:1]/events",  # IPv4-translated 10.0.0.1
        "https://[::]/events",
        "ftp://example.org/events",
    ],
)
async def test_private_and_plain_urls_are_refused(client: httpx.AsyncClient, url: str) -> None:
    _, auth = await make_school(client)
    response = await client.post("/v1/webhook-endpoints", json={"url": url}, headers=auth)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    listed = await client.get("/v1/webhook-endpoints", headers=auth)
    assert listed.json()["items"] == []


@pytest.mark.parametrize(
    "address",
    [
        "::93.184.215.14",
        "::ffff:93.184.215.14",
        "::ffff:0:5db8:d70e",
        "64:ff9b::93.184.215.14",
        "2002:5db8:d70e::1",
    ],
)
async def test_a_public_ipv4_address_inside_an_ipv6_one_is_public(address: str) -> None:
    """Only the IPv4 address inside is refused when not public, not every such form."""
    found = await urls.public_addresses(address)
    assert [ipaddress.ip_address(a) for a in found] == [ipaddress.ip_address(address)]


@pytest.mark.parametrize(
    ("events", "why"),
    [
        ([], "null"),  # would receive nothing: the detail points at null, for every type
        (["recipient.updated", "recipient.updated"], "twice"),
        (["campaign.updated", "opt_out.created", "campaign.updated"], "twice"),
    ],
)
async def test_events_is_null_or_distinct_types_at_least_one(
    client: httpx.AsyncClient, events: list[str], why: str
) -> None:
    """`events: []` and a type named twice are a 422 problem naming the field, on POST and on
    PATCH, and save or change nothing; the OpenAPI document says so (minItems, uniqueItems)."""
    _, auth = await make_school(client)
    url = "https://93.184.215.14/events"

    def refused(response: httpx.Response) -> None:
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        [error] = response.json()["errors"]
        assert error["loc"] == ["body", "events"]
        assert why in error["msg"], error

    refused(
        await client.post(
            "/v1/webhook-endpoints", json={"url": url, "events": events}, headers=auth
        )
    )
    assert (await client.get("/v1/webhook-endpoints", headers=auth)).json()["items"] == []
    made = await client.post(
        "/v1/webhook-endpoints", json={"url": url, "events": ["opt_out.deleted"]}, headers=auth
    )
    assert made.status_code == 201, made.text
    path = f"/v1/webhook-endpoints/{made.json()['id']}"
    refused(await client.patch(path, json={"events": events}, headers=auth))
    assert (await client.get(path, headers=auth)).json()["events"] == ["opt_out.deleted"]
    document = (await client.get("/openapi.json")).json()["components"]["schemas"]
    for name in ("WebhookEndpointCreate", "WebhookEndpointUpdate"):
        [listed] = [b for b in document[name]["properties"]["events"]["anyOf"] if "items" in b]
        assert (listed.get("minItems"), listed.get("uniqueItems")) == (1, True), listed


async def test_an_endpoint_is_made_listed_changed_and_deleted(client: httpx.AsyncClient) -> None:
    """Its secret is shown once; another school cannot see it (404)."""
    _, auth = await make_school(client)
    _, other = await make_school(client, name="Other High")
    url = "https://93.184.215.14/events"  # a public address: no name to resolve
    made = await client.post(
        "/v1/webhook-endpoints",
        json={"url": url, "events": ["recipient.updated"], "description": "SIS"},
        headers=auth,
    )
    assert made.status_code == 201, made.text
    endpoint = made.json()
    assert endpoint["secret"].startswith("whsec_")
    assert (endpoint["url"], endpoint["events"], endpoint["enabled"]) == (
        url,
        ["recipient.updated"],
        True,
    )
    path = f"/v1/webhook-endpoints/{endpoint['id']}"
    shown = (await client.get(path, headers=auth)).json()
    assert "secret" not in shown
    assert (await client.get(path, headers=other)).status_code == 404
    changed = await client.patch(path, json={"enabled": False, "events": None}, headers=auth)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["enabled"], changed.json()["events"]) == (False, None)
    for same in ({}, {"enabled": False, "description": "SIS"}):  # changes nothing: no event
        assert (await client.patch(path, json=same, headers=auth)).status_code == 200
    refused = await client.patch(path, json={"url": "https://10.1.2.3/x"}, headers=auth)
    assert refused.status_code == 422
    assert (await client.get(path, headers=auth)).json()["url"] == url
    bad_type = await client.post(
        "/v1/webhook-endpoints", json={"url": url, "events": ["nope"]}, headers=auth
    )
    assert bad_type.status_code == 422
    assert (await client.delete(path, headers=auth)).status_code == 204
    assert (await client.get(path, headers=auth)).status_code == 404
    # Each change made is in the school's audit trail, once; the refused ones and those
    # that changed nothing are not.
    trail = (await client.get("/v1/audit-events", headers=auth)).json()["items"]
    mine = [(e["action"], e["target_id"]) for e in trail if "webhook_endpoint" in e["action"]]
    assert mine == [
        ("webhook_endpoint.delete", endpoint["id"]),
        ("webhook_endpoint.update", endpoint["id"]),
        ("webhook_endpoint.create", endpoint["id"]),
    ]


async def test_a_school_has_at_most_twenty_endpoints(client: httpx.AsyncClient) -> None:
    """The 21st is a 409 problem that saves nothing; once one is deleted, another may be
    made (each endpoint that stops answering holds one of a worker's posts)."""
    _, auth = await make_school(client)
    body = {"url": "https://93.184.215.14/events"}
    made = [
        (await client.post("/v1/webhook-endpoints", json=body, headers=auth)).json()["id"]
        for _ in range(20)
    ]
    refused = await client.post("/v1/webhook-endpoints", json=body, headers=auth)
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert "20 webhook endpoints" in refused.json()["detail"]
    listed = await client.get("/v1/webhook-endpoints", params={"limit": 100}, headers=auth)
    assert sorted(e["id"] for e in listed.json()["items"]) == sorted(made)
    deleted = await client.delete(f"/v1/webhook-endpoints/{made[0]}", headers=auth)
    assert deleted.status_code == 204, deleted.text
    again = await client.post("/v1/webhook-endpoints", json=body, headers=auth)
    assert again.status_code == 201, again.text
    _, other = await make_school(client, name="Other High")
    theirs = await client.post("/v1/webhook-endpoints", json=body, headers=other)
    assert theirs.status_code == 201, theirs.text  # the bound is each school's
