from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Attempt, Recipient
from tests.support.api import launched, people, recipients

US = ("+12015550123", "+14155552671", "+13125550199", "+16175551212")


async def set_status(session: AsyncSession, campaign_id: str, phone: str, **values: Any) -> None:
    await session.execute(
        update(Recipient)
        .where(Recipient.campaign_id == uuid.UUID(campaign_id), Recipient.phone == phone)
        .values(**values)
    )
    await session.commit()


async def test_filters_and_search(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
) -> None:
    contacts = people(*US)
    contacts[2]["first_name"] = "Zoë"
    campaign = await launched(client, auth, contacts)
    cid = campaign["id"]
    await set_status(session, cid, US[0], status="delivered", next_attempt_at=None)
    await set_status(
        session,
        cid,
        US[1],
        status="failed",
        failed_reason="blocked",
        failed_definition=1,
        provider_error_code="30004",
        next_attempt_at=None,
    )
    await set_status(session, cid, US[2], status="pending", next_attempt_at=None)

    def phones(items: list[dict[str, Any]]) -> list[str]:
        return [r["phone"] for r in items]

    assert phones(await recipients(client, auth, cid, status="delivered")) == [US[0]]
    assert phones(await recipients(client, auth, cid, status_group="in_progress")) == [US[2], US[3]]
    assert phones(await recipients(client, auth, cid, failed_reason="blocked")) == [US[1]]
    assert phones(await recipients(client, auth, cid, q="zoë")) == [US[2]]
    assert phones(await recipients(client, auth, cid, q="415555")) == [US[1]]
    assert phones(await recipients(client, auth, cid, q="Kid3 Doe")) == [US[3]]
    blocked = (await recipients(client, auth, cid, status="failed"))[0]
    assert blocked["failed_reason"] == {
        "code": "blocked",
        "label": "Blocked by Carrier/User",
        "definition": "This number is blocked from receiving this message",
        "resendable": True,
        "provider_error_code": "30004",
    }
    counts = (await client.get(f"/v1/campaigns/{cid}", headers=auth)).json()["counts"]
    assert counts == {
        "total": 4,
        "queued": 1,
        "pending": 1,
        "scheduled": 0,
        "delivered": 1,
        "failed": 1,
    }
    bad = await client.get(
        f"/v1/campaigns/{cid}/contacts", params={"failed_reason": "nope"}, headers=auth
    )
    assert bad.status_code == 422


async def test_pages_cover_every_recipient_once(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    campaign = await launched(client, auth, people(*US))
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        response = await client.get(
            f"/v1/campaigns/{campaign['id']}/contacts", params=params, headers=auth
        )
        body = response.json()
        seen += [r["phone"] for r in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(US)
    bad = await client.get(
        f"/v1/campaigns/{campaign['id']}/contacts", params={"cursor": "!!"}, headers=auth
    )
    assert bad.status_code == 400


async def test_detail_has_attempts_history_and_preview(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
) -> None:
    campaign = await launched(client, auth, people(US[0]), body="Hi {first_name} ({grade})")
    rid = (await recipients(client, auth, campaign["id"]))[0]["id"]
    session.add(
        Attempt(
            recipient_id=int(rid),
            provider="twilio",
            provider_message_id="SM" + "a" * 32,
            status="sent",
        )
    )
    await session.commit()
    detail = await client.get(f"/v1/campaigns/{campaign['id']}/contacts/{rid}", headers=auth)
    assert detail.status_code == 200
    history = detail.json()["attempts_history"]
    assert [(a["provider"], a["status"]) for a in history] == [("twilio", "sent")]
    preview = await client.get(
        f"/v1/campaigns/{campaign['id']}/contacts/{rid}/preview", headers=auth
    )
    assert preview.json() == {
        "text": "Hi Kid0 (5)",
        "encoding": "GSM-7",
        "characters": 11,
        "segments": 1,
    }
    missing = await client.get(f"/v1/campaigns/{campaign['id']}/contacts/999999999", headers=auth)
    assert missing.status_code == 404


async def test_resend_rules(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
) -> None:
    campaign = await launched(client, auth, people(US[0], US[1], US[2]))
    cid = campaign["id"]
    await set_status(
        session,
        cid,
        US[0],
        status="failed",
        failed_reason="unreachable_number",
        next_attempt_at=None,
    )
    await set_status(
        session, cid, US[1], status="failed", failed_reason="blocked", next_attempt_at=None
    )
    await set_status(session, cid, US[2], status="delivered", next_attempt_at=None)
    by_phone = {r["phone"]: r["id"] for r in await recipients(client, auth, cid)}

    refused = await client.post(
        f"/v1/campaigns/{cid}/contacts/{by_phone[US[0]]}/resend", headers=auth
    )
    assert refused.status_code == 409
    assert "unreachable_number" in refused.json()["detail"]
    delivered = await client.post(
        f"/v1/campaigns/{cid}/contacts/{by_phone[US[2]]}/resend", headers=auth
    )
    assert delivered.status_code == 409

    accepted = await client.post(
        f"/v1/campaigns/{cid}/contacts/{by_phone[US[1]]}/resend", headers=auth
    )
    assert accepted.status_code == 202
    assert accepted.json()["status"] == "queued"
    assert accepted.json()["failed_reason"] is None
    assert accepted.json()["next_attempt_at"] is not None


async def test_resend_reopens_a_complete_campaign_and_bulk_reports_skips(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
) -> None:
    campaign = await launched(client, auth, people(*US))
    cid = campaign["id"]
    await set_status(
        session,
        cid,
        US[0],
        status="failed",
        failed_reason="unreachable_number",
        next_attempt_at=None,
    )
    await set_status(
        session, cid, US[1], status="failed", failed_reason="unknown", next_attempt_at=None
    )
    await set_status(
        session, cid, US[2], status="failed", failed_reason="sending_error", next_attempt_at=None
    )
    await set_status(
        session, cid, US[3], status="failed", failed_reason="opted_out", next_attempt_at=None
    )
    from app.campaigns import repository

    await repository.complete_if_done(session, uuid.UUID(cid))
    await session.commit()
    assert (await client.get(f"/v1/campaigns/{cid}", headers=auth)).json()["status"] == "complete"

    report = await client.post(f"/v1/campaigns/{cid}/resend-failed", headers=auth)
    assert report.status_code == 202
    assert report.json() == {"queued": 2, "skipped": {"unreachable_number": 1, "opted_out": 1}}
    after = (await client.get(f"/v1/campaigns/{cid}", headers=auth)).json()
    assert after["status"] == "active"
    assert after["counts"]["queued"] == 2


async def test_no_resend_on_closed_campaign(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
) -> None:
    campaign = await launched(client, auth, people(US[0]))
    cid = campaign["id"]
    await set_status(
        session, cid, US[0], status="failed", failed_reason="unknown", next_attempt_at=None
    )
    await client.post(f"/v1/campaigns/{cid}/close", headers=auth)
    rid = (await recipients(client, auth, cid))[0]["id"]
    assert (
        await client.post(f"/v1/campaigns/{cid}/contacts/{rid}/resend", headers=auth)
    ).status_code == 409
    assert (
        await client.post(f"/v1/campaigns/{cid}/resend-failed", headers=auth)
    ).status_code == 409


async def test_staff_opt_out_cancels_waiting_messages_school_wide(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
) -> None:
    first = await launched(client, auth, people(US[0], US[1]))
    second = await launched(client, auth, people(US[0]))
    third = await launched(client, auth, people(US[0]))
    await set_status(session, first["id"], US[0], status="scheduled", failed_reason="reattempting")
    await set_status(session, third["id"], US[0], status="delivered", next_attempt_at=None)
    rid = {r["phone"]: r["id"] for r in await recipients(client, auth, first["id"])}[US[0]]

    response = await client.post(
        f"/v1/campaigns/{first['id']}/contacts/{rid}/opt-out", headers=auth
    )
    assert response.status_code == 201
    assert response.json()["source"] == "staff"
    assert response.json()["campaign_id"] == first["id"]
    again = await client.post(f"/v1/campaigns/{first['id']}/contacts/{rid}/opt-out", headers=auth)
    assert again.status_code == 200

    rows = (
        (
            await session.execute(
                select(Recipient)
                .where(Recipient.phone == US[0])
                .execution_options(populate_existing=True)
            )
        )
        .scalars()
        .all()
    )
    by_campaign = {str(r.campaign_id): r for r in rows}
    for cid in (first["id"], second["id"]):
        assert by_campaign[cid].status == "failed"
        assert by_campaign[cid].failed_reason == "opted_out"
        assert by_campaign[cid].next_attempt_at is None
    assert by_campaign[third["id"]].status == "delivered"
    # The second campaign had only that number: it is complete now.
    assert (await client.get(f"/v1/campaigns/{second['id']}", headers=auth)).json()[
        "status"
    ] == "complete"
    # Opt-out and preview stay available on every status.
    preview = await client.get(f"/v1/campaigns/{first['id']}/contacts/{rid}/preview", headers=auth)
    assert preview.status_code == 200


async def test_csv_export(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
) -> None:
    contacts = people(US[0], US[1])
    contacts[1]["first_name"] = "=HYPERLINK(1)"
    campaign = await launched(client, auth, contacts)
    await set_status(
        session,
        campaign["id"],
        US[0],
        status="failed",
        failed_reason="invalid_number",
        failed_definition=1,
        provider_error_code="30005",
        next_attempt_at=None,
    )
    response = await client.get(f"/v1/campaigns/{campaign['id']}/contacts.csv", headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert rows[0]["phone"] == US[0]
    assert rows[0]["status_label"] == "Failed"
    assert rows[0]["failed_reason_label"] == "Invalid Number"
    assert rows[0]["failed_reason_definition"] == "This number is unknown and may no longer exist"
    assert rows[0]["provider_error_code"] == "30005"
    assert rows[1]["status_label"] == "Still in Queue"
    assert rows[1]["first_name"] == "'=HYPERLINK(1)"
