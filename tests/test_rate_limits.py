"""Per-key rate limits: a burst over a key's limit is refused with 429 and `Retry-After`,
another school's key answers as usual, and the providers' webhooks are never counted."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.errors import PROBLEM_JSON
from app.kit.crypto import new_token
from app.kit.rate_limit import TokenBuckets
from tests.support.api import make_school

Json = dict[str, Any]
LIMIT = 20


class FrozenClock:
    """Time stands still unless a test moves it: a burst is a burst however slow the run."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(app: FastAPI) -> FrozenClock:
    clock = FrozenClock()
    app.state.rate_limits = TokenBuckets(LIMIT, clock=clock)
    return clock


def test_the_default_is_600_a_minute() -> None:
    assert Settings(_env_file=None).rate_limit_per_minute == 600


async def burst(client: httpx.AsyncClient, auth: dict[str, str], n: int) -> list[httpx.Response]:
    return [await client.get("/v1/campaigns", headers=auth) for _ in range(n)]


async def test_a_burst_over_the_limit_is_refused_with_retry_after(
    client: httpx.AsyncClient, auth: dict[str, str], clock: FrozenClock
) -> None:
    answers = await burst(client, auth, LIMIT + 5)
    assert [r.status_code for r in answers] == [200] * LIMIT + [429] * 5
    refused = answers[-1]
    assert refused.headers["content-type"] == PROBLEM_JSON
    body = refused.json()
    assert body["status"] == 429 and body["type"].endswith("too-many-requests")
    # One request comes back every 60/LIMIT seconds.
    assert refused.headers["retry-after"] == str(math.ceil(60 / LIMIT))

    clock.now += int(refused.headers["retry-after"])
    assert (await client.get("/v1/campaigns", headers=auth)).status_code == 200
    assert (await client.get("/v1/campaigns", headers=auth)).status_code == 429
    # A minute later, a whole burst again.
    clock.now += 60
    assert [r.status_code for r in await burst(client, auth, LIMIT)] == [200] * LIMIT


async def test_one_schools_burst_leaves_another_school_answering(
    client: httpx.AsyncClient, auth: dict[str, str], clock: FrozenClock
) -> None:
    _, other = await make_school(client, name="Roosevelt Middle")
    answers = await burst(client, auth, LIMIT * 2)
    assert {r.status_code for r in answers[LIMIT:]} == {429}
    assert [r.status_code for r in await burst(client, other, LIMIT)] == [200] * LIMIT
    # Each key has a budget of its own, within a school too.
    created = await client.post("/v1/api-keys", json={"name": "Second"}, headers=other)
    assert created.status_code == 429
    clock.now += 60
    created = await client.post("/v1/api-keys", json={"name": "Second"}, headers=other)
    second = {"Authorization": f"Bearer {created.json()['api_key']}"}
    assert [r.status_code for r in await burst(client, other, LIMIT - 1)] == [200] * (LIMIT - 1)
    assert (await client.get("/v1/campaigns", headers=other)).status_code == 429
    assert (await client.get("/v1/campaigns", headers=second)).status_code == 200


async def test_made_up_tokens_are_refused_and_leave_nothing_behind(
    app: FastAPI,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    clock: FrozenClock,
    engine: AsyncEngine,
) -> None:
    """Someone trying tokens (or a script with a mistyped one) gets 401s; the process keeps
    no bucket and writes no last use for them, however many, and nobody's budget is spent."""
    assert (await client.get("/v1/campaigns", headers=auth)).status_code == 200
    buckets: TokenBuckets = app.state.rate_limits
    held = (len(buckets), len(app.state.last_used))
    writes: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE")):
            writes.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        for _ in range(LIMIT * 10):
            made_up = {"Authorization": f"Bearer {new_token('cmp')}"}
            response = await client.get("/v1/campaigns", headers=made_up)
            assert response.status_code == 401, response.text
        # One made-up token, again and again: never a bucket to run out, so never a 429.
        mistyped = {"Authorization": f"Bearer {auth['Authorization'][7:]}x"}
        assert {r.status_code for r in await burst(client, mistyped, LIMIT * 2)} == {401}
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)

    assert (len(buckets), len(app.state.last_used)) == held
    assert writes == []
    # The school's own key still has its whole burst, less the one request it made.
    assert [r.status_code for r in await burst(client, auth, LIMIT)] == [200] * (LIMIT - 1) + [429]


@pytest.mark.parametrize(
    "path", ["/v1/webhooks/twilio/status", "/v1/webhooks/twilio/inbound", "/v1/webhooks/telnyx"]
)
async def test_webhooks_are_never_counted_nor_refused_with_429(
    client: httpx.AsyncClient, auth: dict[str, str], clock: FrozenClock, path: str
) -> None:
    for _ in range(LIMIT * 3):
        # Unsigned (403), and carrying a school's key that is spent meanwhile: no matter.
        response = await client.post(path, content=b"MessageSid=SM1", headers=auth)
        assert response.status_code != 429, response.text
    assert [r.status_code for r in await burst(client, auth, LIMIT)] == [200] * LIMIT


async def test_limits_off(app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    app.state.rate_limits = None  # RATE_LIMIT_PER_MINUTE=0
    assert {r.status_code for r in await burst(client, auth, 50)} == {200}


def test_a_bucket_refills_at_the_steady_rate_up_to_a_burst() -> None:
    clock = FrozenClock()
    buckets = TokenBuckets(60, clock=clock)
    assert all(buckets.take("k") == 0.0 for _ in range(60))
    assert buckets.take("k") == pytest.approx(1.0)
    clock.now += 0.5
    assert buckets.take("k") == pytest.approx(0.5)
    clock.now += 0.5
    assert buckets.take("k") == 0.0
    clock.now += 3600  # idle for an hour: a burst, no more
    assert sum(buckets.take("k") == 0.0 for _ in range(100)) == 60
