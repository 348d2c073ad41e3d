"""Events posted to schools' webhook endpoints (README, Events): signed as Standard Webhooks
says (checked with the official `standardwebhooks` package), at least once, the same
`webhook-id` on every retry, a dead endpoint never holding up a healthy one. Real receivers
on loopback, real commits."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.config import Settings
from app.delivery.engine import Engine
from app.events.deliveries import LEASE_SECONDS, RETRY_WAITS, Answer, Deliverer, Post
from app.kit.clock import utcnow
from app.kit.crypto import SecretBox
from app.kit.db import unit_of_work
from app.models import WebhookDelivery
from tests.support.api import make_school
from tests.support.delivery import (
    Sessions,
    TimedFakeTwilio,
    TwilioSchool,
    by_phone,
    committed_receipt,
    launch,
    phone,
)
from tests.support.receiver import Receiver

PATIENCE_SECONDS = 30.0


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Any]]:
    started: list[Receiver] = []

    async def start(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs)
        await receiver.start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        await receiver.stop()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Endpoints on loopback allowed (EVENTS_ALLOW_PRIVATE_URLS, as for development)."""
    return settings.model_copy(update={"events_allow_private_urls": True})


async def subscribe(
    client: httpx.AsyncClient, school: TwilioSchool, url: str, events: list[str] | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/v1/webhook-endpoints", json={"url": url, "events": events}, headers=school.auth
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def deliver_all(
    sessionmaker: Sessions, deliverer: Deliverer, until: Callable[[], bool]
) -> None:
    """Run the deliverer as the worker does, until `until()`."""
    async with asyncio.timeout(PATIENCE_SECONDS):
        while not until():
            await deliverer.claim_and_post()
            await asyncio.sleep(0.02)


async def make_retries_due(sessionmaker: Sessions) -> None:
    """Time passes: every delivery waiting for a retry is due now."""
    async with unit_of_work(sessionmaker) as session:
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.next_attempt_at.is_not(None))
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


@pytest.fixture
def deliverers(sessionmaker: Sessions, settings: Settings) -> Callable[..., Deliverer]:
    """Webhook deliverers on the test's database, as a worker makes them (private URLs
    allowed unless `allow_private=False` is given)."""
    assert settings.secret_key
    box = SecretBox(settings.secret_key)

    def make(**options: Any) -> Deliverer:
        options.setdefault("allow_private", True)
        return Deliverer(sessionmaker, box, **options)

    return make


def verified(secret: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(body, headers)
    return payload


async def test_events_are_posted_signed_and_retried_with_the_same_id(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    sessionmaker: Sessions,
    deliverers: Callable[..., Deliverer],
    receivers: Callable[..., Any],
) -> None:
    # The first post of each event fails (500), the retry is taken.
    receiver: Receiver = await receivers(answer=lambda n: 500 if n % 2 else 200)
    endpoint = await subscribe(client, twilio_school, receiver.url, ["campaign.updated"])
    assert endpoint["secret"].startswith("whsec_")
    deliverer = deliverers()
    try:
        cid = await launch(client, twilio_school, phone(0))
        await deliver_all(sessionmaker, deliverer, lambda: len(receiver.posts) >= 1)
        await asyncio.sleep(0.2)
        await make_retries_due(sessionmaker)
        await deliver_all(sessionmaker, deliverer, lambda: len(receiver.posts) >= 2)
    finally:
        await deliverer.finish()

    (first_headers, first_body), (again_headers, again_body) = receiver.posts
    first = verified(endpoint["secret"], first_headers, first_body)
    again = verified(endpoint["secret"], again_headers, again_body)
    assert first["type"] == "campaign.updated"
    assert first["data"]["id"] == cid and first["data"]["status"] == "active"
    assert first_headers["webhook-id"] == again_headers["webhook-id"] == first["id"]
    assert again == first
    # A tampered body, or an old timestamp, fails the receiver's verification.
    with pytest.raises(WebhookVerificationError):
        verified(endpoint["secret"], first_headers, first_body.replace(b"active", b"closed"))
    stale = {**first_headers, "webhook-timestamp": str(int(utcnow().timestamp()) - 3600)}
    with pytest.raises(WebhookVerificationError):
        verified(endpoint["secret"], stale, first_body)

    response = await client.get(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=twilio_school.auth
    )
    assert response.status_code == 200, response.text
    [delivery] = response.json()["items"]
    assert (delivery["event_id"], delivery["status"], delivery["attempts"]) == (
        first["id"],
        "delivered",
        2,
    )
    assert delivery["last_status"] == 200


async def test_a_redirect_is_not_followed_and_the_post_is_retried(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    sessionmaker: Sessions,
    deliverers: Callable[..., Deliverer],
    receivers: Callable[..., Any],
) -> None:
    """An endpoint answering 302 elsewhere: nothing is posted where it points, and the
    delivery is not made (retried later), its log showing the 302."""
    elsewhere: Receiver = await receivers()
    redirecting: Receiver = await receivers(answer=lambda n: 302, location=elsewhere.url)
    endpoint = await subscribe(client, twilio_school, redirecting.url, ["campaign.updated"])
    deliverer = deliverers()
    try:
        await launch(client, twilio_school, phone(0))
        await deliver_all(sessionmaker, deliverer, lambda: len(redirecting.posts) >= 1)
        await asyncio.sleep(0.2)
    finally:
        await deliverer.finish()
    assert elsewhere.posts == []
    response = await client.get(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=twilio_school.auth
    )
    [delivery] = response.json()["items"]
    assert (delivery["status"], delivery["last_status"], delivery["attempts"]) == (
        "pending",
        302,
        1,
    )
    assert delivery["next_attempt_at"] is not None


async def test_a_post_that_times_out_is_posted_again_later_with_the_same_id(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    sessionmaker: Sessions,
    deliverers: Callable[..., Deliverer],
    receivers: Callable[..., Any],
) -> None:
    """The receiver takes the first post and never answers it: the post ends at the
    deliverer's timeout, and the retry carries the same `webhook-id`."""
    receiver: Receiver = await receivers(hang_first=1)
    endpoint = await subscribe(client, twilio_school, receiver.url, ["campaign.updated"])
    path = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries"
    deliverer = deliverers(timeout=0.5)

    async def timed_out() -> bool:
        items = (await client.get(path, headers=twilio_school.auth)).json()["items"]
        return bool(items) and "no answer within 0.5 s" in (items[0]["last_error"] or "")

    try:
        await launch(client, twilio_school, phone(0))
        async with asyncio.timeout(PATIENCE_SECONDS):
            while not await timed_out():
                await deliverer.claim_and_post()
                await asyncio.sleep(0.05)
        assert len(receiver.posts) == 1
        await make_retries_due(sessionmaker)
        await deliver_all(sessionmaker, deliverer, lambda: len(receiver.posts) >= 2)
        async with asyncio.timeout(PATIENCE_SECONDS):
            while (await client.get(path, headers=twilio_school.auth)).json()["items"][0][
                "status"
            ] != "delivered":
                await deliverer.claim_and_post()
                await asyncio.sleep(0.05)
    finally:
        await deliverer.finish(0.1)
    first, again = (verified(endpoint["secret"], h, b) for h, b in receiver.posts)
    assert receiver.posts[0][0]["webhook-id"] == receiver.posts[1][0]["webhook-id"]
    assert first == again


@pytest.mark.parametrize(
    ("scheme_and_host", "why"),
    [("https://localhost", "not public"), ("http://127.0.0.1", "must use https")],
)
async def test_an_address_that_is_not_public_is_refused_where_the_post_connects(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    deliverers: Callable[..., Deliverer],
    receivers: Callable[..., Any],
    scheme_and_host: str,
    why: str,
) -> None:
    """An endpoint saved while its name resolved to a public address, now resolving to
    loopback, or one saved with plain http while private URLs were allowed (saved here
    with them allowed, then posted by a deliverer that does not allow them): nothing
    reaches the receiver, and the deliveries log says why."""
    receiver: Receiver = await receivers()
    url = receiver.url.replace("http://127.0.0.1", scheme_and_host)
    endpoint = await subscribe(client, twilio_school, url, ["campaign.updated"])
    path = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries"
    deliverer = deliverers(allow_private=False)

    async def answered() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await client.get(path, headers=twilio_school.auth)).json()[
            "items"
        ]
        return [item for item in items if item["last_error"]]

    try:
        await launch(client, twilio_school, phone(0))
        async with asyncio.timeout(PATIENCE_SECONDS):
            while not (refused := await answered()):
                await deliverer.claim_and_post()
                await asyncio.sleep(0.05)
    finally:
        await deliverer.finish(0.1)
    assert why in refused[0]["last_error"]
    assert (refused[0]["status"], refused[0]["last_status"]) == ("pending", None)
    assert receiver.posts == []


def test_a_delivery_is_retried_for_about_three_days_then_failed() -> None:
    """The waits grow, add up to about three days, and the post after the last wait that
    fails fails the delivery."""
    assert list(RETRY_WAITS) == sorted(RETRY_WAITS)
    assert 2.5 * 86_400 <= sum(RETRY_WAITS) <= 3.5 * 86_400
    post = Post(1, uuid.uuid4(), 1, "https://example.org", "whsec_x", "evt_1", "{}", 0.0)
    before = utcnow()
    for attempt, wait in enumerate(RETRY_WAITS, start=1):
        retried = Answer.of(replace(post, attempts=attempt), 500, None)
        assert retried.status == "pending" and retried.next_attempt_at is not None
        assert retried.next_attempt_at - before >= timedelta(seconds=wait)
    last = Answer.of(replace(post, attempts=len(RETRY_WAITS) + 1), None, "no answer")
    assert (last.status, last.next_attempt_at) == ("failed", None)
    assert Answer.of(post, 204, None).status == "delivered"


async def test_a_dead_endpoint_does_not_hold_up_a_healthy_one(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    sessionmaker: Sessions,
    deliverers: Callable[..., Deliverer],
    receivers: Callable[..., Any],
) -> None:
    dead: Receiver = await receivers(hang=True)
    healthy: Receiver = await receivers()
    await subscribe(client, twilio_school, dead.url)
    await subscribe(client, twilio_school, healthy.url)
    deliverer = deliverers(concurrency=4, per_endpoint=2)
    try:
        numbers = [phone(n) for n in range(20)]
        cid = await launch(client, twilio_school, *numbers)
        for n in numbers:  # forty events beside the campaign's, the dead one's due first
            response = await client.post(
                "/v1/opt-outs", json={"phone": n}, headers=twilio_school.auth
            )
            assert response.status_code == 201, response.text
        await deliver_all(sessionmaker, deliverer, lambda: len(healthy.posts) >= 41)
        # The dead one, which never answered, had one post at a time while it hangs.
        assert len(dead.posts) == 1
    finally:
        await deliverer.finish(0.1)
    kinds = [json.loads(body)["type"] for _, body in healthy.posts]
    assert kinds.count("opt_out.created") == 20
    assert kinds.count("recipient.updated") == 20  # each opted-out recipient failed
    assert cid


async def test_a_school_s_dead_endpoints_do_not_hold_up_another_school_s_events(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    sessionmaker: Sessions,
    deliverers: Callable[..., Deliverer],
    receivers: Callable[..., Any],
) -> None:
    """Three endpoints of one school that never answer, as many as a worker posts to at
    once but one: each holds one post, and the other school's endpoint gets every event of
    its own school (and none of the first's) while they hang."""
    dead = [await receivers(hang=True) for _ in range(3)]
    for receiver in dead:
        await subscribe(client, twilio_school, receiver.url)
    _, other = await make_school(client, name="Other High")
    healthy: Receiver = await receivers()
    response = await client.post(
        "/v1/webhook-endpoints", json={"url": healthy.url, "events": None}, headers=other
    )
    assert response.status_code == 201, response.text
    # The dead ones' posts do not end during the test.
    deliverer = deliverers(concurrency=4, per_endpoint=2, timeout=PATIENCE_SECONDS + 5)
    theirs = [phone(n) for n in range(10)]
    ours = [phone(n) for n in range(10, 20)]
    try:
        for school, numbers in ((twilio_school.auth, theirs), (other, ours)):
            for n in numbers:
                created = await client.post("/v1/opt-outs", json={"phone": n}, headers=school)
                assert created.status_code == 201, created.text
        await deliver_all(sessionmaker, deliverer, lambda: len(healthy.posts) >= len(ours))
        await asyncio.sleep(0.2)  # time for a post too many, if one was made
    finally:
        await deliverer.finish(0.1)
    got = [json.loads(body)["data"]["phone"] for _, body in healthy.posts]
    assert sorted(got) == sorted(ours)
    assert [len(receiver.posts) for receiver in dead] == [1, 1, 1]


async def test_a_campaign_s_every_change_reaches_the_receiver_and_its_last_word_is_the_api_s(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    sessionmaker: Sessions,
    deliverers: Callable[..., Deliverer],
    receivers: Callable[..., Any],
) -> None:
    receiver: Receiver = await receivers()
    endpoint = await subscribe(client, twilio_school, receiver.url, ["recipient.updated"])
    numbers = [phone(n) for n in range(4)]
    cid = await launch(client, twilio_school, *numbers)
    assert await delivery.run_once() == 4
    outcomes = {numbers[0]: "delivered", numbers[1]: "delivered", numbers[2]: "undelivered"}
    for number, final in outcomes.items():
        await committed_receipt(sessionmaker, twilio.sid_to(number), "sent")
        code = "30003" if final == "undelivered" else None
        await committed_receipt(sessionmaker, twilio.sid_to(number), final, code)
    # numbers[3]: accepted, no receipt yet: Still in Queue, no visible change, no event.
    deliverer = deliverers()
    try:
        await deliver_all(sessionmaker, deliverer, lambda: len(receiver.posts) >= 6)
        await asyncio.sleep(0.3)  # nothing more comes
        await deliver_all(sessionmaker, deliverer, lambda: True)
    finally:
        await deliverer.finish()

    received = [verified(endpoint["secret"], h, b) for h, b in receiver.posts]
    assert len({e["id"] for e in received}) == len(received) == 6  # one per change
    last: dict[str, dict[str, Any]] = {}
    for event in sorted(received, key=lambda e: e["data"]["sequence"]):
        last[event["data"]["phone"]] = event["data"]
    contacts = await by_phone(client, twilio_school.auth, cid)
    for number in numbers[:3]:
        shown = {k: v for k, v in contacts[number].items() if k != "attempts_history"}
        assert last[number] == {**shown, "campaign_id": cid, "sequence": last[number]["sequence"]}
    assert numbers[3] not in last


async def test_a_receiver_down_for_a_while_gets_the_same_event_later(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    sessionmaker: Sessions,
    deliverers: Callable[..., Deliverer],
) -> None:
    receiver = Receiver()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    receiver.port = sock.getsockname()[1]
    sock.close()  # nothing listens there yet
    endpoint = await subscribe(client, twilio_school, receiver.url, ["campaign.updated"])
    deliverer = deliverers()
    try:
        await launch(client, twilio_school, phone(0))

        async def first_failed() -> bool:
            response = await client.get(
                f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=twilio_school.auth
            )
            items = response.json()["items"]
            return bool(items) and items[0]["last_error"] is not None

        async with asyncio.timeout(PATIENCE_SECONDS):
            while not await first_failed():
                await deliverer.claim_and_post()
                await asyncio.sleep(0.05)
        await receiver.start()  # back up
        try:
            await make_retries_due(sessionmaker)
            await deliver_all(sessionmaker, deliverer, lambda: len(receiver.posts) >= 1)
        finally:
            await receiver.stop()
    finally:
        await deliverer.finish()
    [(headers, body)] = receiver.posts
    event = verified(endpoint["secret"], headers, body)
    response = await client.get(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=twilio_school.auth
    )
    [delivery] = response.json()["items"]
    assert (delivery["event_id"], delivery["status"], delivery["attempts"]) == (
        event["id"],
        "delivered",
        2,
    )


async def test_a_worker_killed_mid_delivery_loses_nothing(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    sessionmaker: Sessions,
    deliverers: Callable[..., Deliverer],
    receivers: Callable[..., Any],
) -> None:
    """A worker claimed (leased) the delivery and died before posting: once the lease runs
    out, another worker posts it."""
    receiver: Receiver = await receivers()
    await subscribe(client, twilio_school, receiver.url, ["campaign.updated"])
    await launch(client, twilio_school, phone(0))
    doomed = deliverers()
    assert len(await doomed._claim(10)) == 1  # claimed, never posted: the worker died
    await doomed.http.aclose()
    heir = deliverers()
    try:
        assert await heir.claim_and_post() == 0  # leased to the dead one
        await make_retries_due(sessionmaker)  # its lease runs out
        await deliver_all(sessionmaker, heir, lambda: len(receiver.posts) >= 1)
    finally:
        await heir.finish()
    assert len(receiver.posts) == 1


async def test_a_worker_killed_after_its_post_arrived_is_posted_again_with_the_same_id(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    sessionmaker: Sessions,
    deliverers: Callable[..., Deliverer],
    receivers: Callable[..., Any],
) -> None:
    """The post reached the receiver, and the worker died before it recorded the answer:
    once the lease runs out, another worker posts it again, with the same `webhook-id` (at
    least once: the receiver drops the repeat by its id), and records it."""
    receiver: Receiver = await receivers()
    endpoint = await subscribe(client, twilio_school, receiver.url, ["campaign.updated"])
    await launch(client, twilio_school, phone(0))
    doomed = deliverers()
    assert await doomed.claim_and_post() == 1
    async with asyncio.timeout(PATIENCE_SECONDS):
        while len(receiver.posts) < 1 or doomed.in_flight:  # noqa: ASYNC110 - another's state
            await asyncio.sleep(0.02)
    await doomed.http.aclose()  # killed: its answer is never recorded
    heir = deliverers()
    try:
        assert await heir.claim_and_post() == 0  # still leased to the dead one
        await make_retries_due(sessionmaker)  # its lease runs out
        await deliver_all(sessionmaker, heir, lambda: len(receiver.posts) >= 2)
        await heir.claim_and_post()  # records the answer
    finally:
        await heir.finish()
    (first, _), (again, _) = receiver.posts
    assert first["webhook-id"] == again["webhook-id"]
    response = await client.get(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=twilio_school.auth
    )
    [delivery] = response.json()["items"]
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 2)


async def test_a_stopping_worker_posts_nothing_it_queued_and_gives_it_back_at_once(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    sessionmaker: Sessions,
    deliverers: Callable[..., Deliverer],
    receivers: Callable[..., Any],
) -> None:
    """A claim queues several rounds of an endpoint's posts; a worker told to stop makes
    those in flight, and the queued ones are due again at once (not after their lease), for
    any worker, their attempt not counted."""
    slow: Receiver = await receivers(hang=True)
    await subscribe(client, twilio_school, slow.url)
    numbers = [phone(n) for n in range(6)]
    for n in numbers:
        response = await client.post("/v1/opt-outs", json={"phone": n}, headers=twilio_school.auth)
        assert response.status_code == 201, response.text
    stopping = deliverers(per_endpoint=2)
    # An endpoint yet to answer: one post at a time, four rounds: one in flight, three queued.
    assert await stopping.claim_and_post() == 4
    await deliver_all(sessionmaker, stopping, lambda: len(slow.posts) >= 1)  # claims no more
    await stopping.finish(0.1)  # the one hangs past it
    assert len(slow.posts) == 1
    async with unit_of_work(sessionmaker) as session:
        rows = (await session.scalars(select(WebhookDelivery))).all()
        now = (await session.execute(text("SELECT now()"))).scalar_one()
    given_back = [r for r in rows if r.attempts == 0]
    assert len(given_back) == 5  # the three queued, and the two never claimed
    assert all(r.next_attempt_at is not None and r.next_attempt_at <= now for r in given_back)
    assert all(r.status == "pending" for r in rows)


async def test_a_post_that_could_not_end_within_its_lease_is_given_back_not_counted(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    sessionmaker: Sessions,
    deliverers: Callable[..., Deliverer],
    receivers: Callable[..., Any],
) -> None:
    """A worker whose posts may take as long as their lease makes none of them (another
    worker could post the same once the lease ran out): each is due again at once, and
    the deliveries log counts no attempt for it."""
    receiver: Receiver = await receivers()
    await subscribe(client, twilio_school, receiver.url)
    response = await client.post(
        "/v1/opt-outs", json={"phone": phone(1)}, headers=twilio_school.auth
    )
    assert response.status_code == 201, response.text
    deliverer = deliverers(timeout=LEASE_SECONDS)
    assert await deliverer.claim_and_post() == 1
    await deliverer.finish(0.1)
    assert receiver.posts == []
    async with unit_of_work(sessionmaker) as session:
        row = (await session.scalars(select(WebhookDelivery))).one()
        now = (await session.execute(text("SELECT now()"))).scalar_one()
    assert (row.attempts, row.status) == (0, "pending")
    assert row.next_attempt_at is not None and row.next_attempt_at <= now


async def test_an_endpoint_gets_each_event_of_while_it_is_enabled_once(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    sessionmaker: Sessions,
    deliverers: Callable[..., Deliverer],
    receivers: Callable[..., Any],
) -> None:
    """An endpoint gets the events from when it is made, none of those while it is
    disabled, and each of the others once, however many workers deliver."""

    async def opt_out(number: str) -> None:
        response = await client.post(
            "/v1/opt-outs", json={"phone": number}, headers=twilio_school.auth
        )
        assert response.status_code == 201, response.text

    async def enable(on: bool) -> None:
        response = await client.patch(
            f"/v1/webhook-endpoints/{endpoint['id']}",
            json={"enabled": on},
            headers=twilio_school.auth,
        )
        assert response.status_code == 200, response.text

    async def deliver(posts: int) -> None:
        async with asyncio.timeout(PATIENCE_SECONDS):
            while len(receiver.posts) < posts:
                await asyncio.gather(*(worker.claim_and_post() for worker in workers))
                await asyncio.sleep(0.02)
        for _ in range(5):  # anything more would come now
            await asyncio.gather(*(worker.claim_and_post() for worker in workers))
            await asyncio.sleep(0.05)

    workers = [deliverers() for _ in range(2)]
    receiver: Receiver = await receivers()
    # Another job's transaction, older than everything here, is open meanwhile: an
    # endpoint still starts after the events committed before it was made.
    async with sessionmaker() as older:
        await older.execute(text("SELECT pg_current_xact_id()"))
        await opt_out(phone(0))  # before the endpoint
        endpoint = await subscribe(client, twilio_school, receiver.url, ["opt_out.created"])
        await older.rollback()
    try:
        await opt_out(phone(1))
        await launch(client, twilio_school, phone(5))  # events of a type it does not take
        await deliver(1)
        await enable(False)
        await opt_out(phone(2))  # while disabled
        await deliver(1)
        await enable(True)
        await opt_out(phone(3))
        await deliver(2)
    finally:
        for worker in workers:
            await worker.finish()
    posted = [json.loads(body)["data"]["phone"] for _, body in receiver.posts]
    assert posted == [phone(1), phone(3)]
    response = await client.get(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=twilio_school.auth
    )
    assert len(response.json()["items"]) == 2
    # Deleting the endpoint deletes its deliveries.
    gone = await client.delete(
        f"/v1/webhook-endpoints/{endpoint['id']}", headers=twilio_school.auth
    )
    assert gone.status_code == 204, gone.text
    async with unit_of_work(sessionmaker) as session:
        assert await session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
