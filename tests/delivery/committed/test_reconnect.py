"""A sent batch is recorded even when the database dropped the worker's connection while
the messages were out (a restart, a failover): the record does not wait for the lease.

On a pool of one connection: the record gets the very connection the claim used a moment
before, which the pool hands out without a ping (`app.kit.db.CHECK_AFTER_SECONDS`)."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from app.delivery.engine import Engine
from app.kit.db import driver_url
from tests.support.api import launched, people, recipients
from tests.support.delivery import TimedFakeTwilio, TwilioSchool


@pytest.fixture
def pool_size() -> int:
    return 1


async def drop_connections(database_url: str) -> int:
    """What a restart or a failover does to the service's connections: every other
    connection to the database is closed by the server. How many there were."""
    others = (
        "FROM pg_stat_activity WHERE datname = current_database()"
        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
    )
    admin = await asyncpg.connect(driver_url(database_url))
    try:
        dropped: int = await admin.fetchval(f"SELECT count(pg_terminate_backend(pid)) {others}")
        # Gone, as they are by the time a failed-over database is used again (and the
        # client has seen its sockets close).
        for _ in range(500):
            if not await admin.fetchval(f"SELECT count(*) {others}"):
                break
            await asyncio.sleep(0.01)
    finally:
        await admin.close()
    return dropped


def sent(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "campanile_messages_sent_total", {"provider": "twilio", "outcome": outcome}
    )
    return value or 0.0


async def test_a_batch_sent_across_a_dropped_connection_is_recorded_at_once(
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    twilio: TimedFakeTwilio,
    delivery: Engine,
    own_database_url: str,
) -> None:
    numbers = ["+12015550100", "+12015550101", "+12015550102"]
    campaign = await launched(client, twilio_school.auth, people(*numbers))
    accepted_before = sent("accepted")

    jobs = await delivery.claim()
    outcomes = await delivery.send(jobs, asyncio.Event())
    assert await drop_connections(own_database_url) == 1  # the pool's one, idle since the claim
    await delivery.record(outcomes)

    # Recorded as if nothing happened: each message's attempt with its Twilio id, the
    # lease given back; nothing is sent again.
    assert sorted(r.to or "" for r in twilio.requests) == numbers
    rows = await recipients(client, twilio_school.auth, campaign["id"])
    assert [(r["phone"], r["status"], r["attempts"], r["next_attempt_at"]) for r in rows] == [
        (number, "queued", 1, None) for number in numbers
    ]
    assert await delivery.run_once() == 0
    assert len(twilio.requests) == 3
    # Each hand-over counted once, though its record ran twice.
    assert sent("accepted") - accepted_before == 3
