"""`GET /v1/failed-reasons`: the catalog of `app.sending.reasons`, open to anyone."""

from __future__ import annotations

from typing import Any

import httpx

# The catalog, row by row (the front ends build their tooltips from it).
EXPECTED: list[dict[str, Any]] = [
    {
        "code": "blocked",
        "label": "Blocked by Carrier/User",
        "definitions": [
            "This message was filtered or blocked by the carrier",
            "This number is blocked from receiving this message",
        ],
        "resendable": True,
    },
    {
        "code": "international_number",
        "label": "International Number",
        "definitions": ["Phone number contains unsupported country code"],
        "resendable": False,
    },
    {
        "code": "invalid_number",
        "label": "Invalid Number",
        "definitions": [
            "Phone number is invalid",
            "This number is unknown and may no longer exist",
        ],
        "resendable": False,
    },
    {
        "code": "opted_out",
        "label": "Opted out",
        "definitions": ["This number has opted out of a previous campaign."],
        "resendable": False,
    },
    {
        "code": "sending_error",
        "label": "Sending Error",
        "definitions": ["There was an issue sending messages, please contact support"],
        "resendable": True,
    },
    {
        "code": "unknown",
        "label": "Unknown Error",
        "definitions": ["This message delivery failed for an unknown reason"],
        "resendable": True,
    },
    {
        "code": "partial_failure",
        "label": "Partial Failure",
        "definitions": [
            "One or more segments associated with your multi-part inbound message was not received"
        ],
        "resendable": True,
    },
    {
        "code": "reattempting",
        "label": "Re-attempting Delivery",
        "definitions": ["The message is queued and will be retried"],
        "resendable": None,
    },
    {
        "code": "unreachable_number",
        "label": "Unreachable Number",
        "definitions": [
            "This number is switched off or otherwise unavailable",
            "This number was sent to a landline or unreachable carrier for this phone number type",
        ],
        "resendable": False,
    },
    {
        "code": "failed_to_create",
        "label": "Failed to create message",
        "definitions": ["All other errors"],
        "resendable": True,
    },
]


async def test_catalog_without_auth(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/failed-reasons")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == EXPECTED


async def test_catalog_ignores_a_bad_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/failed-reasons", headers={"Authorization": "Bearer not-a-key"})
    assert response.status_code == 200
    assert [reason["code"] for reason in response.json()] == [r["code"] for r in EXPECTED]


async def test_catalog_is_documented(client: httpx.AsyncClient) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"]["/v1/failed-reasons"]["get"]
    assert operation["description"].startswith("The failed-reason catalog")
    assert "security" not in operation
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["type"] == "array"
    assert schema["items"]["$ref"].endswith("/FailedReasonOut")
