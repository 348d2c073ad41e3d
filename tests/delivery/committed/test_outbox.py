"""The outbox (README, Events): every visible change of a recipient, every change of a
campaign's status, every opt-out made or undone leaves exactly one event, in the change's
own transaction, whoever wrote it; a change rolled back leaves none; and a reader never
passes an event still to commit. The real Engine against the fake Twilio, real commits."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, tuple_, update

from app.config import Settings
from app.delivery.engine import Engine
from app.events import deliveries, outbox, render
from app.kit.clock import utcnow
from app.kit.db import unit_of_work
from app.models import Event, Recipient, WebhookDelivery
from app.workers.events import EventPruner
from tests.fakes.twilio import Answer
from tests.support.delivery import (
    Sessions,
    TimedFakeTwilio,
    TwilioSchool,
    by_phone,
    campaign_of,
    committed_receipt,
    launch,
    phone,
)

PATIENCE_SECONDS = 20.0


async def events(
    sessionmaker: Sessions,
    after: outbox.Position = outbox.START,
    campaign_id: uuid.UUID | None = None,
    *,
    wait: bool = True,
) -> list[dict[str, Any]]:
    """The events readable after `after`, in the outbox's order, as integrators receive
    them: once every event committed by now is readable (a transaction of another test
    or process left open on the server holds them back meanwhile), or at once without
    `wait`."""
    written = select(func.max(Event.xid))
    async with asyncio.timeout(PATIENCE_SECONDS):
        while wait:
            async with unit_of_work(sessionmaker) as session:
                if (await session.scalar(written) or 0) < await outbox.horizon(session):
                    break
            await asyncio.sleep(0.05)
    query = (
        select(Event)
        .where(tuple_(Event.xid, Event.id) > after.clause())
        .where(outbox.READABLE)
        .order_by(Event.xid, Event.id)
    )
    if campaign_id is not None:
        query = query.where(Event.campaign_id == campaign_id)
    async with unit_of_work(sessionmaker) as session:
        return [render.envelope(event) for event in await session.scalars(query)]


async def now(sessionmaker: Sessions) -> outbox.Position:
    """The outbox's position now: after every event committed so far."""
    async with unit_of_work(sessionmaker) as session:
        return outbox.Position(await outbox.horizon(session), 0)


async def count_events(sessionmaker: Sessions) -> int:
    async with unit_of_work(sessionmaker) as session:
        return int(await session.scalar(select(func.count()).select_from(Event)) or 0)


async def test_each_change_has_one_event_and_the_last_is_the_api_s_view(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
) -> None:
    auth = twilio_school.auth
    delivered, undelivered, refused = phone(0), phone(1), phone(2)
    twilio.script(refused, Answer.error(21211))  # invalid number: failed at once, hard
    cid = await launch(client, twilio_school, delivered, undelivered, refused)
    assert await delivery.run_once() == 3
    for number, statuses in ((delivered, ["sent", "delivered"]), (undelivered, ["sent"])):
        for status in statuses:
            await committed_receipt(sessionmaker, twilio.sid_to(number), status)
    await committed_receipt(sessionmaker, twilio.sid_to(undelivered), "undelivered", "30003")

    found = await events(sessionmaker)
    recipients = await by_phone(client, auth, cid)
    per_recipient: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in found:
        if event["type"] == "recipient.updated":
            per_recipient[event["data"]["phone"]].append(event["data"])
    # Launch made them Still in Queue (an insert: no change yet); the claim and an
    # accepted answer left them so. Then each visible change, once.
    assert {number: [d["status"] for d in seen] for number, seen in per_recipient.items()} == {
        delivered: ["pending", "delivered"],
        undelivered: ["pending", "failed"],
        refused: ["failed"],
    }
    for number, seen in per_recipient.items():
        shown = {k: v for k, v in recipients[number].items() if k != "attempts_history"}
        assert seen[-1] == {**shown, "campaign_id": cid, "sequence": seen[-1]["sequence"]}
        sequences = [d["sequence"] for d in seen]
        assert sequences == sorted(set(sequences))  # grows with each event of the recipient
    assert per_recipient[undelivered][-1]["failed_reason"]["code"] == "unreachable_number"

    campaign = await campaign_of(client, auth, cid)
    assert campaign["status"] == "complete"
    campaign_events = [e["data"] for e in found if e["type"] == "campaign.updated"]
    assert [c["status"] for c in campaign_events] == ["active", "complete"]
    assert campaign_events[-1] == {**campaign, "sequence": campaign_events[-1]["sequence"]}
    assert all(e["id"].startswith("evt_") for e in found)
    assert len({e["id"] for e in found}) == len(found)


async def test_a_change_rolled_back_leaves_no_event(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    cid = await launch(client, twilio_school, phone(0))
    before = await count_events(sessionmaker)
    change = (
        update(Recipient)
        .where(Recipient.campaign_id == uuid.UUID(cid))
        .values(status="failed", failed_reason="unknown", next_attempt_at=None)
    )
    async with sessionmaker() as session:
        await session.execute(change)
        await session.rollback()
    assert await count_events(sessionmaker) == before
    # A write that changes nothing visible leaves none either; one that does, one.
    async with unit_of_work(sessionmaker) as session:
        await session.execute(
            update(Recipient).where(Recipient.campaign_id == uuid.UUID(cid)).values(attempts=0)
        )
    assert await count_events(sessionmaker) == before
    async with unit_of_work(sessionmaker) as session:
        await session.execute(change)
    assert await count_events(sessionmaker) == before + 1


async def test_opt_outs_made_and_undone_are_events(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    auth = twilio_school.auth
    number = phone(7)
    response = await client.post("/v1/opt-outs", json={"phone": number}, headers=auth)
    assert response.status_code == 201, response.text
    again = await client.post("/v1/opt-outs", json={"phone": number}, headers=auth)
    assert again.status_code in (200, 201, 409), again.text
    response = await client.delete(f"/v1/opt-outs/{number}", headers=auth)
    assert response.status_code == 204, response.text

    mine = [e for e in await events(sessionmaker) if e["type"].startswith("opt_out.")]
    assert [(e["type"], e["data"]["phone"]) for e in mine] == [
        ("opt_out.created", number),
        ("opt_out.deleted", number),
    ]
    assert mine[0]["data"]["source"] == "staff"


async def test_a_reader_never_passes_an_event_still_to_commit(
    client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    """The transaction that writes the first event commits last: a reader sees neither
    until it has, then both in the order they were written: none is passed over, however
    late it commits. One rolled back holds back nothing once it has ended."""
    cid = await launch(client, twilio_school, phone(0), phone(1), phone(2), phone(3))
    campaign = uuid.UUID(cid)
    async with unit_of_work(sessionmaker) as session:
        ids = (
            await session.scalars(
                select(Recipient.id).where(Recipient.campaign_id == campaign).order_by(Recipient.id)
            )
        ).all()
    position = await now(sessionmaker)

    def fail(recipient_id: int) -> Any:
        return (
            update(Recipient)
            .where(Recipient.id == recipient_id)
            .values(status="failed", failed_reason="unknown", next_attempt_at=None)
        )

    async with sessionmaker() as slow:
        await slow.execute(fail(ids[0]))  # its event is written first
        async with unit_of_work(sessionmaker) as quick:
            await quick.execute(fail(ids[1]))
        # The quick one has committed, but the slow one, older, may still write events
        # before it in the order: a reader waits for it.
        assert await events(sessionmaker, position, campaign_id=campaign, wait=False) == []
        await slow.commit()
    seen = await events(sessionmaker, position, campaign_id=campaign)
    assert [e["data"]["id"] for e in seen] == [str(ids[0]), str(ids[1])]
    # A transaction rolled back holds back nothing once it has ended.
    position = await now(sessionmaker)
    async with sessionmaker() as doomed:
        await doomed.execute(fail(ids[2]))
        async with unit_of_work(sessionmaker) as quick:
            await quick.execute(fail(ids[3]))
        assert await events(sessionmaker, position, campaign_id=campaign, wait=False) == []
        await doomed.rollback()
    seen = await events(sessionmaker, position, campaign_id=campaign)
    assert [e["data"]["id"] for e in seen] == [str(ids[3])]


async def test_events_past_the_retention_are_pruned(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    sessionmaker: Sessions,
    settings: Settings,
) -> None:
    """Oldest first, a batch at a time, with their deliveries, by the worker's pruner once
    they are EVENTS_RETENTION_DAYS old."""
    subscribed = await client.post(
        "/v1/webhook-endpoints",
        json={"url": "https://93.184.215.14/events"},
        headers=twilio_school.auth,
    )
    assert subscribed.status_code == 201, subscribed.text
    await launch(client, twilio_school, phone(0))
    response = await client.post(
        "/v1/opt-outs", json={"phone": phone(0)}, headers=twilio_school.auth
    )
    assert response.status_code == 201, response.text
    everything = await events(sessionmaker)
    async with unit_of_work(sessionmaker) as session:
        assert await deliveries.fan_out(session, utcnow()) == len(everything)
    old, kept = everything[:-1], everything[-1]
    async with unit_of_work(sessionmaker) as session:
        await session.execute(
            update(Event)
            .where(Event.id.in_([e["data"]["sequence"] for e in old]))  # (the event's id)
            .values(occurred_at=utcnow() - timedelta(days=8))
        )

    def pruner(days: int) -> EventPruner:
        kept_for = settings.model_copy(update={"events_retention_days": days})
        return EventPruner(sessionmaker, kept_for)

    assert await pruner(9).run_once() is False  # eight days old: kept nine
    assert len(await events(sessionmaker)) == len(everything)
    async with unit_of_work(sessionmaker) as session:
        assert await outbox.prune(session, utcnow() - timedelta(days=7), limit=1) == 1
    assert await pruner(7).run_once() is False  # the rest, in one batch
    assert [e["id"] for e in await events(sessionmaker)] == [kept["id"]]
    async with unit_of_work(sessionmaker) as session:
        left = select(Event.id).join(WebhookDelivery, WebhookDelivery.event_id == Event.id)
        assert (await session.scalars(left)).all() == [kept["data"]["sequence"]]
        assert await session.scalar(select(func.count()).select_from(WebhookDelivery)) == 1
