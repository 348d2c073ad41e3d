"""Per-key rate limits: a burst over a key's limit is refused with 429 and `Retry-After`, as
is a request over the key's requests in flight; another school's key answers as usual, and
the providers' webhooks are never counted."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.errors import PROBLEM_JSON
from app.kit.clock import utcnow
from app.kit.crypto import new_token, token_hash
from app.kit.db import unit_of_work
from app.kit.rate_limit import InFlight, TokenBuckets
from app.models import ApiKey
from app.schools.service import KnownKeys
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


def test_the_defaults_are_600_a_minute_and_8_in_flight() -> None:
    settings = Settings(_env_file=None)
    assert (settings.rate_limit_per_minute, settings.rate_limit_in_flight) == (600, 8)


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


async def test_a_request_over_its_schools_requests_in_flight_is_refused_at_once(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str], clock: FrozenClock
) -> None:
    in_flight: InFlight = app.state.in_flight
    assert in_flight.cap == 8
    _, other = await make_school(client, name="Roosevelt Middle")
    created = await client.post("/v1/api-keys", json={"name": "Second"}, headers=auth)
    second = {"Authorization": f"Bearer {created.json()['api_key']}"}
    assert (await client.get("/v1/campaigns", headers=second)).status_code == 200
    # As many of the school's requests as may be, still running (the key seen valid here).
    school_id = app.state.known_keys.school_of(token_hash(_secret(auth)))
    counted = f"school:{school_id}"
    for _ in range(in_flight.cap):
        assert in_flight.enter(counted)

    answers = await burst(client, auth, 5)
    assert [r.status_code for r in answers] == [429] * 5
    refused = answers[0]
    assert refused.headers["content-type"] == PROBLEM_JSON
    assert refused.headers["retry-after"] == "1"
    assert "8 requests in progress" in refused.json()["detail"]
    # Its other key is held up with it: the cap is the school's, however many keys it has.
    assert (await client.get("/v1/campaigns", headers=second)).status_code == 429
    # Another school's key is not.
    assert (await client.get("/v1/campaigns", headers=other)).status_code == 200

    for _ in range(in_flight.cap):
        in_flight.leave(counted)
    # Those refused spent nothing of the key's rate limit: its burst is there, less the
    # request that made the second key.
    assert [r.status_code for r in await burst(client, auth, LIMIT - 1)] == [200] * (LIMIT - 1)
    assert (await client.get("/v1/campaigns", headers=auth)).status_code == 429
    assert len(in_flight) == 0  # each request's count left with it


def _secret(auth: dict[str, str]) -> str:
    return auth["Authorization"].removeprefix("Bearer ")


async def test_a_revoked_key_over_its_limit_is_answered_401_not_429(
    app: FastAPI,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    clock: FrozenClock,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Refused before its lookup for being over a limit, a key is still looked up once its
    validity was last read a second ago: revoked by another process, it is answered 401
    within a second; revoked by this one, at once."""
    known = KnownKeys(clock=clock)
    app.state.known_keys = known
    created = await client.post("/v1/api-keys", json={"name": "Sync"}, headers=auth)
    sync = {"Authorization": f"Bearer {created.json()['api_key']}"}
    assert [r.status_code for r in await burst(client, sync, LIMIT + 1)][-1] == 429
    async with unit_of_work(sessionmaker) as session:  # as another process would
        await session.execute(
            update(ApiKey).where(ApiKey.id == created.json()["id"]).values(revoked_at=utcnow())
        )
    clock.now += 0.5  # read less than a second ago: over the limit, refused as such
    assert (await client.get("/v1/campaigns", headers=sync)).status_code == 429
    clock.now += 0.5
    refused = await client.get("/v1/campaigns", headers=sync)
    assert refused.status_code == 401, refused.text
    assert (await client.get("/v1/campaigns", headers=sync)).status_code == 401

    # Revoked through this process: 401 at once, over its limit or not.
    third = await client.post("/v1/api-keys", json={"name": "Third"}, headers=auth)
    key = {"Authorization": f"Bearer {third.json()['api_key']}"}
    assert [r.status_code for r in await burst(client, key, LIMIT + 1)][-1] == 429
    revoked = await client.delete(f"/v1/api-keys/{third.json()['id']}", headers=auth)
    assert revoked.status_code == 204
    assert (await client.get("/v1/campaigns", headers=key)).status_code == 401


async def test_a_client_that_waits_for_each_answer_is_never_refused_for_requests_in_flight(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    app.state.rate_limits = None
    app.state.in_flight = InFlight(1)
    made_up = {"Authorization": f"Bearer {new_token('cmp')}"}
    # Whatever each answer was: a refused body, an unknown id, a made-up token, a list.
    for _ in range(5):
        answers = [
            await client.post("/v1/campaigns", json={"name": ""}, headers=auth),
            await client.get("/v1/campaigns/not-an-id", headers=auth),
            await client.get("/v1/campaigns", headers=made_up),
            await client.get("/v1/campaigns", headers=auth),
        ]
        assert [r.status_code for r in answers] == [422, 404, 401, 200]
    assert len(app.state.in_flight) == 0


async def test_limits_off(app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    app.state.rate_limits = None  # RATE_LIMIT_PER_MINUTE=0
    app.state.in_flight = None  # RATE_LIMIT_IN_FLIGHT=0
    assert {r.status_code for r in await burst(client, auth, 50)} == {200}


def test_requests_in_flight_are_counted_per_key_and_forgotten_at_none() -> None:
    in_flight = InFlight(2)
    assert in_flight.enter("a") and in_flight.enter("a") and not in_flight.enter("a")
    assert in_flight.enter("b")
    in_flight.leave("a")
    assert in_flight.enter("a") and not in_flight.enter("a")
    for key in ("a", "a", "b"):
        in_flight.leave(key)
    assert len(in_flight) == 0


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
