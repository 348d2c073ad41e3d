from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Recipient
from tests.support.api import launched, make_campaign, make_list, make_school, people, recipients

# Real, valid numbers of the plan (555-01xx are fictional and fail validation).
US = ("+12015550123", "+14155552671", "+13125550199")
UK = "+447911123456"


async def test_draft_create_edit_delete(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    campaign = await make_campaign(client, auth, people(*US))
    assert campaign["status"] == "draft"
    assert campaign["counts"] == {
        "total": 0,
        "queued": 0,
        "pending": 0,
        "scheduled": 0,
        "delivered": 0,
        "failed": 0,
    }
    cid = campaign["id"]
    edited = await client.patch(f"/v1/campaigns/{cid}", json={"name": "Late start"}, headers=auth)
    assert edited.status_code == 200
    assert edited.json()["name"] == "Late start"
    assert edited.json()["body"] == campaign["body"]
    deleted = await client.delete(f"/v1/campaigns/{cid}", headers=auth)
    assert deleted.status_code == 204
    assert (await client.get(f"/v1/campaigns/{cid}", headers=auth)).status_code == 404


async def test_launch_snapshots_list_and_fails_opted_out_and_international(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    opted = await client.post("/v1/opt-outs", json={"phone": US[1]}, headers=auth)
    assert opted.status_code == 201
    campaign = await launched(client, auth, people(US[0], US[1], UK))
    assert campaign["status"] == "active"
    assert campaign["launched_at"] is not None
    assert campaign["counts"]["total"] == 3
    assert campaign["counts"]["queued"] == 1
    assert campaign["counts"]["failed"] == 2
    by_phone = {r["phone"]: r for r in await recipients(client, auth, campaign["id"])}
    assert by_phone[US[0]]["status"] == "queued"
    assert by_phone[US[0]]["status_label"] == "Still in Queue"
    assert by_phone[US[0]]["status_group"] == "in_progress"
    assert by_phone[US[1]]["failed_reason"]["code"] == "opted_out"
    assert by_phone[US[1]]["failed_reason"]["label"] == "Opted out"
    assert by_phone[UK]["failed_reason"] == {
        "code": "international_number",
        "label": "International Number",
        "definition": "Phone number contains unsupported country code",
        "resendable": False,
        "provider_error_code": None,
    }
    assert by_phone[UK]["status_group"] == "failed"


async def test_launch_is_a_snapshot(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    campaign = await launched(client, auth, people(US[0]))
    list_id = campaign["contact_list_id"]
    more = await client.post(
        f"/v1/contact-lists/{list_id}/contacts", json={"contacts": people(US[1])}, headers=auth
    )
    assert more.status_code == 200
    assert len(await recipients(client, auth, campaign["id"])) == 1


async def test_launch_when_every_number_fails_completes_at_once(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    campaign = await launched(client, auth, people(UK))
    assert campaign["status"] == "complete"
    assert campaign["completed_at"] is not None


async def test_launch_later_is_scheduled_until_send_at(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
) -> None:
    send_at = datetime.now(UTC) + timedelta(hours=2)
    campaign = await launched(client, auth, people(US[0]), send_at=send_at.isoformat())
    assert campaign["status"] == "scheduled"
    due = (await session.execute(select(Recipient.next_attempt_at))).scalars().all()
    assert [abs((d - send_at).total_seconds()) < 1 for d in due if d] == [True]


async def test_wrong_states_are_409(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    campaign = await launched(client, auth, people(US[0]))
    cid = campaign["id"]
    for method, path, body in (
        ("POST", f"/v1/campaigns/{cid}/launch", None),
        ("PATCH", f"/v1/campaigns/{cid}", {"name": "x"}),
        ("DELETE", f"/v1/campaigns/{cid}", None),
    ):
        response = await client.request(method, path, json=body, headers=auth)
        assert response.status_code == 409, (method, path)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["campaign_status"] == "active"
    draft = await make_campaign(client, auth, people(US[1]))
    closing = await client.post(f"/v1/campaigns/{draft['id']}/close", headers=auth)
    assert closing.status_code == 409


async def test_launch_empty_list_is_409(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    created = await client.post("/v1/contact-lists", json={"name": "Empty"}, headers=auth)
    response = await client.post(
        "/v1/campaigns",
        json={"name": "x", "body": "hello", "contact_list_id": created.json()["id"]},
        headers=auth,
    )
    launch = await client.post(f"/v1/campaigns/{response.json()['id']}/launch", headers=auth)
    assert launch.status_code == 409
    again = await client.get(f"/v1/campaigns/{response.json()['id']}", headers=auth)
    assert again.json()["status"] == "draft"


async def test_close_stops_attempts_and_keeps_statuses(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
) -> None:
    campaign = await launched(client, auth, people(*US))
    closed = await client.post(f"/v1/campaigns/{campaign['id']}/close", headers=auth)
    assert closed.status_code == 200
    assert closed.json()["status"] == "closed"
    assert closed.json()["closed_at"] is not None
    rows = (await session.execute(select(Recipient))).scalars().all()
    assert {r.status for r in rows} == {"queued"}
    assert all(r.next_attempt_at is None for r in rows)
    again = await client.post(f"/v1/campaigns/{campaign['id']}/close", headers=auth)
    assert again.status_code == 409


async def test_archive_hides_and_freezes(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
) -> None:
    campaign = await launched(client, auth, people(*US))
    archived = await client.post(f"/v1/campaigns/{campaign['id']}/archive", headers=auth)
    assert archived.status_code == 200
    assert archived.json()["status"] == "archived"
    listed = await client.get("/v1/campaigns", headers=auth)
    assert campaign["id"] not in [c["id"] for c in listed.json()["items"]]
    only_archived = await client.get("/v1/campaigns", params={"status": "archived"}, headers=auth)
    assert [c["id"] for c in only_archived.json()["items"]] == [campaign["id"]]
    rows = (await session.execute(select(Recipient))).scalars().all()
    assert {r.status for r in rows} == {"queued"}  # Still in Queue stays Still in Queue
    assert all(r.next_attempt_at is None for r in rows)
    twice = await client.post(f"/v1/campaigns/{campaign['id']}/archive", headers=auth)
    assert twice.status_code == 409


async def test_clone_is_a_new_draft(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    campaign = await launched(client, auth, people(US[0]))
    clone = await client.post(f"/v1/campaigns/{campaign['id']}/clone", headers=auth)
    assert clone.status_code == 201
    body = clone.json()
    assert body["status"] == "draft"
    assert body["id"] != campaign["id"]
    assert body["name"] == "Snow day (copy)"
    assert body["body"] == campaign["body"]
    assert body["contact_list_id"] == campaign["contact_list_id"]
    assert body["counts"]["total"] == 0


async def test_list_pages_newest_first(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    list_id = await make_list(client, auth, people(US[0]))
    ids = []
    for i in range(5):
        response = await client.post(
            "/v1/campaigns",
            json={"name": f"c{i}", "body": "hi", "contact_list_id": list_id},
            headers=auth,
        )
        ids.append(response.json()["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/campaigns", params=params, headers=auth)).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


async def test_other_schools_campaigns_are_404(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    campaign = await make_campaign(client, auth, people(US[0]))
    _, other = await make_school(client, name="Other")
    for path in ("", "/launch", "/contacts", "/clone"):
        method = "GET" if path in ("", "/contacts") else "POST"
        response = await client.request(
            method, f"/v1/campaigns/{campaign['id']}{path}", headers=other
        )
        assert response.status_code == 404, path
    stolen = await client.post(
        "/v1/campaigns",
        json={"name": "x", "body": "hi", "contact_list_id": campaign["contact_list_id"]},
        headers=other,
    )
    assert stolen.status_code == 404
    assert (await client.get("/v1/campaigns/not-an-id", headers=auth)).status_code == 404


async def test_bad_campaign_input(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    list_id = await make_list(client, auth, people(US[0]))
    cases = [
        ({"name": "x", "body": "a" * 1601, "contact_list_id": list_id}, 422),
        ({"name": "x", "body": "hi", "contact_list_id": list_id, "colour": "red"}, 422),
        (
            {"name": "x", "body": "hi", "contact_list_id": list_id, "send_at": "2030-01-01T10:00"},
            422,
        ),
        ({"name": "", "body": "hi", "contact_list_id": list_id}, 422),
        ({"name": "x", "body": 5, "contact_list_id": list_id}, 422),
    ]
    for body, expected in cases:
        response = await client.post("/v1/campaigns", json=body, headers=auth)
        assert response.status_code == expected, body
        assert response.headers["content-type"] == "application/problem+json"
    malformed = await client.post(
        "/v1/campaigns", content=b"{not json", headers={**auth, "Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    listed = await client.get("/v1/campaigns", headers=auth)
    assert listed.json()["items"] == []


async def test_preview_counts_segments(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    response = await client.post(
        "/v1/campaigns/preview",
        json={
            "body": "Hi {first_name}! {grade}",
            "contact": {"first_name": "Ana", "fields": {"grade": "5"}},
        },
        headers=auth,
    )
    assert response.status_code == 200
    assert response.json() == {
        "text": "Hi Ana! 5",
        "encoding": "GSM-7",
        "characters": 9,
        "segments": 1,
    }
    unicode = await client.post(
        "/v1/campaigns/preview", json={"body": "Olá 👋" + "x" * 70}, headers=auth
    )
    assert unicode.json()["encoding"] == "UCS-2"
    assert unicode.json()["characters"] == 76
    assert unicode.json()["segments"] == 2
