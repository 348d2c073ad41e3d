"""The audit trail: every change a person makes through the API is one event naming the key
(or the admin), the action, the target and the request, written with the change itself;
none for a change refused or rolled back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from app.campaigns import service as campaigns_service
from app.models import AuditAction, AuditEvent
from app.workers.audit_pruner import AuditPruner
from tests.support.api import ADMIN, make_school, people, recipients
from tests.test_recipients import set_status

Json = dict[str, Any]
PHONES = ("+12015550123", "+14155552671", "+13125550199")


class Trail:
    """Acts through the API and checks what each act left in the school's trail."""

    def __init__(self, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
        self.client = client
        self.auth = auth
        self.ids = count()

    async def events(self, **params: Any) -> list[Json]:
        response = await self.client.get(
            "/v1/audit-events", params={"limit": 500, **params}, headers=self.auth
        )
        assert response.status_code == 200, response.text
        items: list[Json] = response.json()["items"]
        return items

    async def act(
        self,
        method: str,
        path: str,
        status: int,
        *,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[httpx.Response, str]:
        request_id = f"req-{uuid.uuid4().hex[:8]}-{next(self.ids)}"
        sent = {**(headers or self.auth), "X-Request-ID": request_id}
        response = await self.client.request(method, path, headers=sent, **kwargs)
        assert response.status_code == status, response.text
        assert response.headers["x-request-id"] == request_id
        return response, request_id

    async def recorded(
        self,
        method: str,
        path: str,
        status: int,
        action: AuditAction,
        target: str | None = None,
        *,
        actor: str,
        **kwargs: Any,
    ) -> Json:
        """Do it; exactly one new event, for this request, its action, actor and target."""
        before = {e["id"] for e in await self.events()}
        response, request_id = await self.act(method, path, status, **kwargs)
        new = [e for e in await self.events() if e["id"] not in before]
        assert len(new) == 1, new
        event = new[0]
        assert (event["action"], event["actor"], event["request_id"]) == (
            action.value,
            actor,
            request_id,
        )
        if target is None:
            target = response.json()["id"]
        assert event["target_id"] == target
        assert abs(datetime.fromisoformat(event["created_at"]) - datetime.now(UTC)) < timedelta(
            minutes=1
        )
        return event

    async def refused(self, method: str, path: str, status: int, **kwargs: Any) -> None:
        """Do it; nothing new in the trail."""
        before = await self.events()
        await self.act(method, path, status, **kwargs)
        assert await self.events() == before


async def test_every_change_is_one_event_with_its_actor(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/v1/admin/schools",
        json={"name": "Lincoln High", "sending_window": None},
        headers={**ADMIN, "X-Request-ID": "create-school-1"},
    )
    school = created.json()
    auth = {"Authorization": f"Bearer {school['api_key']}"}
    me = school["api_key"][:12]
    trail = Trail(client, auth)
    [first] = await trail.events()
    assert (first["action"], first["actor"], first["target_id"], first["request_id"]) == (
        "school.create",
        "admin",
        school["id"],
        "create-school-1",
    )

    # The school's settings and provider account.
    await trail.recorded(
        "PATCH", "/v1/school", 200, AuditAction.school_update, actor=me, json={"timezone": "UTC"}
    )
    # An edit that changes nothing is no change.
    await trail.refused("PATCH", "/v1/school", 200, json={})
    await trail.refused("PATCH", "/v1/school", 200, json={"timezone": "UTC"})
    await trail.recorded(
        "PUT",
        "/v1/school/provider",
        200,
        AuditAction.provider_account_set,
        school["id"],
        actor=me,
        json={"provider": "simulator"},
    )
    # Keys, by the school and by the admin.
    key = (
        await trail.recorded(
            "POST", "/v1/api-keys", 201, AuditAction.api_key_create, actor=me, json={"name": "B"}
        )
    )["target_id"]
    await trail.recorded(
        "DELETE", f"/v1/api-keys/{key}", 204, AuditAction.api_key_revoke, key, actor=me
    )
    await trail.refused("DELETE", f"/v1/api-keys/{key}", 204)  # already revoked: no change
    admin_key = (
        await trail.recorded(
            "POST",
            f"/v1/admin/schools/{school['id']}/api-keys",
            201,
            AuditAction.api_key_create,
            actor="admin",
            headers=ADMIN,
            json={"name": "Support"},
        )
    )["target_id"]
    await trail.recorded(
        "DELETE",
        f"/v1/admin/schools/{school['id']}/api-keys/{admin_key}",
        204,
        AuditAction.api_key_revoke,
        admin_key,
        actor="admin",
        headers=ADMIN,
    )

    # Contact lists.
    list_id = (
        await trail.recorded(
            "POST",
            "/v1/contact-lists",
            201,
            AuditAction.contact_list_create,
            actor=me,
            json={"name": "Families"},
        )
    )["target_id"]
    await trail.recorded(
        "POST",
        f"/v1/contact-lists/{list_id}/contacts",
        200,
        AuditAction.contact_list_import,
        list_id,
        actor=me,
        json={"contacts": people(*PHONES)},
    )
    spare = (
        await trail.recorded(
            "POST",
            "/v1/contact-lists",
            201,
            AuditAction.contact_list_create,
            actor=me,
            json={"name": "Spare"},
        )
    )["target_id"]
    await trail.recorded(
        "DELETE",
        f"/v1/contact-lists/{spare}",
        204,
        AuditAction.contact_list_delete,
        spare,
        actor=me,
    )

    # Campaigns: create, edit, clone, delete, launch.
    draft = {"name": "Snow day", "body": "Hi {first_name}", "contact_list_id": list_id}
    cid = (
        await trail.recorded(
            "POST", "/v1/campaigns", 201, AuditAction.campaign_create, actor=me, json=draft
        )
    )["target_id"]
    await trail.recorded(
        "PATCH",
        f"/v1/campaigns/{cid}",
        200,
        AuditAction.campaign_update,
        cid,
        actor=me,
        json={"name": "Snow day!"},
    )
    await trail.refused("PATCH", f"/v1/campaigns/{cid}", 200, json={})
    await trail.refused("PATCH", f"/v1/campaigns/{cid}", 200, json={"name": "Snow day!"})
    clone = await trail.recorded(
        "POST", f"/v1/campaigns/{cid}/clone", 201, AuditAction.campaign_clone, actor=me
    )
    assert clone["details"] == {"source": cid}
    await trail.recorded(
        "DELETE",
        f"/v1/campaigns/{clone['target_id']}",
        204,
        AuditAction.campaign_delete,
        clone["target_id"],
        actor=me,
    )
    await trail.recorded(
        "POST", f"/v1/campaigns/{cid}/launch", 200, AuditAction.campaign_launch, cid, actor=me
    )


async def test_recipient_actions_and_opt_outs_are_recorded(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    school, auth = await make_school(client, sending_window=None)
    me = school["api_key"][:12]
    trail = Trail(client, auth)
    created = await client.post("/v1/contact-lists", json={"name": "F"}, headers=auth)
    list_id = created.json()["id"]
    await client.post(
        f"/v1/contact-lists/{list_id}/contacts", json={"contacts": people(*PHONES)}, headers=auth
    )
    draft = {"name": "Trip", "body": "Hi", "contact_list_id": list_id}
    cid = (await client.post("/v1/campaigns", json=draft, headers=auth)).json()["id"]
    await client.post(f"/v1/campaigns/{cid}/launch", headers=auth)
    by_phone = {r["phone"]: r["id"] for r in await recipients(client, auth, cid)}
    for phone in PHONES[:2]:
        await set_status(
            session, cid, phone, status="failed", failed_reason="blocked", next_attempt_at=None
        )

    rid = by_phone[PHONES[0]]
    resent = await trail.recorded(
        "POST",
        f"/v1/campaigns/{cid}/contacts/{rid}/resend",
        202,
        AuditAction.recipient_resend,
        str(rid),
        actor=me,
    )
    assert resent["details"] == {"campaign_id": cid}
    await trail.refused("POST", f"/v1/campaigns/{cid}/contacts/{rid}/resend", 409)
    bulk = await trail.recorded(
        "POST",
        f"/v1/campaigns/{cid}/resend-failed",
        202,
        AuditAction.campaign_resend_failed,
        cid,
        actor=me,
    )
    assert bulk["details"] == {"queued": 1}
    await trail.refused("POST", f"/v1/campaigns/{cid}/resend-failed", 202)  # nothing to resend

    opted = await trail.recorded(
        "POST",
        f"/v1/campaigns/{cid}/contacts/{by_phone[PHONES[2]]}/opt-out",
        201,
        AuditAction.opt_out_create,
        PHONES[2],
        actor=me,
    )
    assert opted["details"] == {"campaign_id": cid, "recipient_id": str(by_phone[PHONES[2]])}
    await trail.refused("POST", "/v1/opt-outs", 200, json={"phone": PHONES[2]})  # already out
    await trail.recorded(
        "POST",
        "/v1/opt-outs",
        201,
        AuditAction.opt_out_create,
        "+16175551212",
        actor=me,
        json={"phone": "+1 617 555 1212"},
    )
    await trail.recorded(
        "DELETE",
        "/v1/opt-outs/+16175551212",
        204,
        AuditAction.opt_out_delete,
        "+16175551212",
        actor=me,
    )
    await trail.refused("DELETE", "/v1/opt-outs/+16175551212", 404)

    await trail.refused("DELETE", f"/v1/campaigns/{cid}", 409)
    await trail.refused("POST", f"/v1/campaigns/{cid}/launch", 409)
    await trail.recorded(
        "POST", f"/v1/campaigns/{cid}/close", 200, AuditAction.campaign_close, cid, actor=me
    )
    await trail.refused("POST", f"/v1/campaigns/{cid}/close", 409)
    await trail.recorded(
        "POST", f"/v1/campaigns/{cid}/archive", 200, AuditAction.campaign_archive, cid, actor=me
    )
    await trail.refused("DELETE", f"/v1/contact-lists/{list_id}", 409)


async def test_a_change_rolled_back_leaves_no_event(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, auth = await make_school(client, sending_window=None)
    created = await client.post("/v1/contact-lists", json={"name": "F"}, headers=auth)
    list_id = created.json()["id"]
    await client.post(
        f"/v1/contact-lists/{list_id}/contacts", json={"contacts": people(*PHONES)}, headers=auth
    )
    draft = {"name": "Trip", "body": "Hi", "contact_list_id": list_id}
    cid = (await client.post("/v1/campaigns", json=draft, headers=auth)).json()["id"]
    trail = Trail(client, auth)
    before = await trail.events()

    async def crash(*args: Any) -> Any:
        raise RuntimeError("the answer could not be made")

    monkeypatch.setattr(campaigns_service, "view", crash)  # after the launch and its event
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as crashing:
        response = await crashing.post(f"/v1/campaigns/{cid}/launch", headers=auth)
    assert response.status_code == 500
    monkeypatch.undo()

    assert await trail.events() == before
    campaign = await client.get(f"/v1/campaigns/{cid}", headers=auth)
    assert campaign.json()["status"] == "draft"
    assert await recipients(client, auth, cid) == []


async def test_the_list_is_newest_first_filtered_and_paginated(
    client: httpx.AsyncClient,
) -> None:
    school, auth = await make_school(client)
    _, other_auth = await make_school(client, name="Roosevelt Middle")
    trail = Trail(client, auth)
    ids = []
    for name in ("A", "B", "C"):
        created = await client.post("/v1/contact-lists", json={"name": name}, headers=auth)
        ids.append(created.json()["id"])
    await client.delete(f"/v1/contact-lists/{ids[1]}", headers=auth)
    await client.post("/v1/contact-lists", json={"name": "theirs"}, headers=other_auth)

    everything = await trail.events()
    assert [(e["action"], e["target_id"]) for e in everything] == [
        ("contact_list.delete", ids[1]),
        ("contact_list.create", ids[2]),
        ("contact_list.create", ids[1]),
        ("contact_list.create", ids[0]),
        ("school.create", school["id"]),
    ]
    created_at = [datetime.fromisoformat(e["created_at"]) for e in everything]
    assert created_at == sorted(created_at, reverse=True)

    assert [e["target_id"] for e in await trail.events(action="contact_list.create")] == [
        ids[2],
        ids[1],
        ids[0],
    ]
    assert [e["action"] for e in await trail.events(target_id=ids[1])] == [
        "contact_list.delete",
        "contact_list.create",
    ]
    assert await trail.events(since=(datetime.now(UTC) + timedelta(minutes=1)).isoformat()) == []
    assert len(await trail.events(since=everything[-1]["created_at"])) == 5

    pages: list[Json] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/audit-events", params=params, headers=auth)).json()
        pages += page["items"]
        if not (cursor := page["next_cursor"]):
            break
    assert pages == everything

    theirs = await Trail(client, other_auth).events()
    assert [e["action"] for e in theirs] == ["contact_list.create", "school.create"]
    for bad in ({"action": "campaign.explode"}, {"since": "2026-01-01T00:00:00"}):
        response = await client.get("/v1/audit-events", params=bad, headers=auth)
        assert response.status_code == 422, response.text
    bad_cursor = await client.get("/v1/audit-events", params={"cursor": "nope"}, headers=auth)
    assert bad_cursor.status_code == 400


async def test_events_older_than_the_retention_are_pruned(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: Any,
    settings: Any,
) -> None:
    school, auth = await make_school(client)
    trail = Trail(client, auth)
    [kept] = await trail.events()
    old = AuditEvent(
        school_id=uuid.UUID(school["id"]),
        actor="admin",
        action="school.update",
        target_id=school["id"],
        request_id="long-ago",
        created_at=datetime.now(UTC) - timedelta(days=366),
    )
    session.add(old)
    await session.commit()
    assert len(await trail.events()) == 2

    forever = AuditPruner(sessionmaker, settings.model_copy(update={"audit_retention_days": 0}))
    assert await forever.run_once() is False
    assert len(await trail.events()) == 2

    pruner = AuditPruner(sessionmaker, settings.model_copy(update={"audit_retention_days": 365}))
    assert await pruner.run_once() is False  # less than a full batch: nothing more waits
    assert await trail.events() == [kept]
