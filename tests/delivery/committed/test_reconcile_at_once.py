"""Several workers reconcile at once (README, `app.delivery.reconcile`): two passes on
two engines of their own, committing for real, never look up the same message twice."""

from __future__ import annotations

import asyncio

import httpx

from app.config import Settings
from app.delivery.engine import Engine
from app.delivery.reconcile import Reconciler
from app.kit.db import Inbox, create_engine, create_sessionmaker
from app.providers.registry import Registry
from tests.fakes.twilio import Answer
from tests.support.api import apply_receipts
from tests.support.delivery import (
    TimedFakeTwilio,
    TwilioSchool,
    by_phone,
    campaign_of,
    launch,
    phone,
)

EVERY = 3600


async def test_two_sweeps_at_once_never_fetch_the_same_message_twice(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    settings: Settings,
    registry: Registry,
) -> None:
    """Eight silent messages, all delivered at Twilio, due for a lookup; two workers sweep
    at once, three at a time, each fetch slow enough for their passes to overlap. Each
    message is fetched once, and all end delivered."""
    assert settings.database_url is not None
    school = twilio_school
    numbers = [phone(i) for i in range(8)]
    campaign_id = await launch(client, school, *numbers)
    assert await delivery.run_once() == 8
    sids = [twilio.sid_to(n) for n in numbers]
    for sid in sids:
        twilio.mark_sent(sid, "delivered")
    twilio.script_fetch(*[Answer.slow(0.2)] * len(sids))
    short = settings.model_copy(update={"reconcile_after_seconds": EVERY})
    engines = [create_engine(settings.database_url, pool_size=2) for _ in range(2)]
    inboxes = [Inbox.pool(settings.database_url, size=2) for _ in range(2)]
    try:
        async with engines[0].begin() as connection:
            await connection.exec_driver_sql(
                "UPDATE attempts SET checked_at = now() - interval '3601 seconds'"
            )
        sweeps = [
            Reconciler(create_sessionmaker(engine), short, registry, inbox)
            for engine, inbox in zip(engines, inboxes, strict=True)
        ]

        async def sweep_all(reconciler: Reconciler) -> int:
            looked_up = 0
            while (passed := await reconciler.sweep_once(limit=3)).claimed:
                looked_up += passed.looked_up
            return looked_up

        done = await asyncio.gather(*(sweep_all(s) for s in sweeps))
    finally:
        for engine in engines:
            await engine.dispose()
        for inbox in inboxes:
            await inbox.aclose()
    assert sum(done) == len(sids)
    assert sorted(twilio.fetches) == sorted(sids)
    await apply_receipts(delivery.sessionmaker)
    shown = await by_phone(client, school.auth, campaign_id)
    assert {shown[n]["status"] for n in numbers} == {"delivered"}
    assert (await campaign_of(client, school.auth, campaign_id))["status"] == "complete"
