"""Against a live server (real commits, real concurrency): a shuffled log of receipts with
duplicates, posted concurrently, ends where in-order application ends; and a status
callback racing the send's record step ends applied."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.kit.db import create_engine, create_sessionmaker, unit_of_work
from app.models import Attempt, CampaignStatus
from app.providers import codes
from app.providers.twilio.signature import HEADER, compute_signature
from app.sending import status as rules
from tests.support.api import ADMIN, launched, people
from tests.support.webhooks import FORM, TWILIO_STATUS, LiveServer, TwilioAccount, status_form

# The log: 4 receipts per recipient, then 20% more that repeat earlier ones. The default
# is the full 10,000; WEBHOOK_LOG_RECEIPTS=1000 makes a quick local run of the same test.
RECEIPTS = int(os.environ.get("WEBHOOK_LOG_RECEIPTS", "10000")) // 5 * 5
RECIPIENTS = RECEIPTS // 5
DUPLICATES = RECEIPTS - 4 * RECIPIENTS
CONCURRENCY = 20


@dataclass
class LiveSchool:
    auth: dict[str, str]
    account: TwilioAccount
    campaign_id: str
    recipient_ids: list[int]


async def live_school(live: httpx.AsyncClient, server: LiveServer, count: int) -> LiveSchool:
    """A school with a Twilio account and a launched campaign of `count` recipients, over
    the live server's API (so the auth token is sealed with its SECRET_KEY); its sending
    window is closed now."""
    created = await live.post(
        "/v1/admin/schools", json={"name": f"Live {uuid.uuid4().hex[:6]}"}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    auth = {"Authorization": f"Bearer {created.json()['api_key']}"}
    account = TwilioAccount()
    response = await live.put(
        "/v1/school/provider",
        json={
            "provider": "twilio",
            "account_sid": account.account_sid,
            "auth_token": account.auth_token,
            "from_number": account.from_number,
        },
        headers=auth,
    )
    assert response.status_code == 200, response.text
    # The live worker applies receipts; it must send nothing: the window opens in 6 hours.
    opens = datetime.now(UTC) + timedelta(hours=6)
    window = {"start": f"{opens:%H:%M}", "end": f"{opens + timedelta(hours=1):%H:%M}"}
    response = await live.patch(
        "/v1/school", json={"timezone": "UTC", "sending_window": window}, headers=auth
    )
    assert response.status_code == 200, response.text
    campaign = await launched(live, auth, people(*(f"+1201555{i:04d}" for i in range(count))))
    rows = await server.fetch(
        "SELECT id FROM recipients WHERE campaign_id = $1 ORDER BY id", uuid.UUID(campaign["id"])
    )
    return LiveSchool(auth, account, campaign["id"], [row["id"] for row in rows])


async def add_attempts(server: LiveServer, pairs: list[tuple[int, str | None]]) -> None:
    """One more attempt for each (recipient, message sid), as the delivery engine leaves it:
    handed over and accepted (`queued`), or still being handed over (no sid: `sending`)."""
    await server.sql(
        """INSERT INTO attempts (recipient_id, provider, provider_message_id, status)
           SELECT r, 'twilio', s, CASE WHEN s IS NULL THEN 'sending' ELSE 'queued' END
           FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS t(r, s, n) ORDER BY n""",
        [r for r, _ in pairs],
        [s for _, s in pairs],
    )
    await server.sql(
        """UPDATE recipients SET attempts = attempts + 1, next_attempt_at = NULL,
               first_attempt_at = coalesce(first_attempt_at, now())
           WHERE id = ANY($1::bigint[])""",
        list({r for r, _ in pairs}),
    )


async def until_applied(
    server: LiveServer, sids: list[str], count: int, within: float = 120
) -> None:
    """Wait until `count` receipts for these messages are applied: the service stores each
    receipt before it answers, and its receipt applier applies them on its own."""
    deadline = time.monotonic() + within
    while True:
        rows = await server.fetch(
            "SELECT count(applied_at) AS n FROM receipts WHERE provider_message_id = ANY($1)",
            sids,
        )
        if rows[0]["n"] >= count:
            return
        assert time.monotonic() < deadline, f"{rows[0]['n']} of {count} receipts applied"
        await asyncio.sleep(0.1)


# -- the log -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    recipient_id: int
    sid: str
    status: str
    code: str | None = None


def stories(first: str, second: str, kind: int) -> list[tuple[str, str, str | None]]:
    """A recipient's callbacks, in the order Twilio produced them. Every recipient has two
    attempts: the first soft-bounced (or failed) and was retried as the second."""
    bounce = [(first, "sent", None), (first, "undelivered", "30001")]
    return [
        [*bounce, (second, "sent", None), (second, "delivered", None)],
        [*bounce, (second, "sent", None), (second, "undelivered", "30003")],
        [*bounce, (second, "sent", None), (first, "delivered", None)],  # late delivered
        [*bounce, (second, "sent", None), (second, "undelivered", "30017")],  # soft again
        [
            (first, "sent", None),
            (first, "failed", "30008"),
            (second, "queued", None),  # stale: the attempt is queued already
            (second, "sent", None),
        ],
    ][kind]


# What each kind of story ends as (`app.sending.status`): a cross-check of the in-order fold.
EXPECTED_END = {
    0: ("delivered", None, None),
    1: ("failed", "unreachable_number", "30003"),
    2: ("delivered", None, None),
    3: ("scheduled", "reattempting", "30017"),
    4: ("pending", None, None),
}


def in_order(
    events: list[Event], latest: dict[int, str]
) -> tuple[dict[int, rules.State], dict[str, tuple[str, str | None]]]:
    """The end state when the log is applied one receipt at a time, in order, by the status
    rules: (recipient → state, attempt sid → (status, error code))."""
    states: dict[int, rules.State] = {r: rules.State(rules.Status.queued) for r in latest}
    attempts: dict[str, tuple[str, str | None]] = {}
    for event in events:
        phase = rules.phase_of(event.status)
        current = attempts.get(event.sid, ("queued", None))[0]
        if phase is None or not rules.advance(rules.phase_of(current), phase):
            continue
        attempts[event.sid] = (event.status, event.code)
        failed = phase is rules.Phase.failed
        change = rules.on_receipt(
            states[event.recipient_id],
            CampaignStatus.active,
            phase,
            codes.classify("twilio", event.code, "receipt") if failed else None,
            event.code,
            latest_attempt=latest[event.recipient_id] == event.sid,
            retry_allowed=True,
        )
        if change is not None:
            states[event.recipient_id] = change.state
    return states, attempts


def signed_request(account: TwilioAccount, base: str, event: Event) -> tuple[bytes, str]:
    params = status_form(account, event.sid, event.status, event.code)
    return urlencode(params).encode(), compute_signature(
        base + TWILIO_STATUS, params, account.auth_token
    )


async def post_all(live: httpx.AsyncClient, requests: list[tuple[bytes, str]]) -> Counter[int]:
    """Post every request, CONCURRENCY at a time; the count of each answer's status."""
    answers: Counter[int] = Counter()
    pending = iter(requests)

    async def worker() -> None:
        for body, signature in pending:
            headers = {"Content-Type": FORM, HEADER: signature}
            try:
                response = await live.post(TWILIO_STATUS, content=body, headers=headers)
            except (httpx.ReadError, httpx.RemoteProtocolError):
                # A keep-alive connection the server closed as the client reused it (on a
                # starved machine, after 5 s without a request): Twilio posts again, and
                # so does this test; a callback is deduplicated by its event either way.
                response = await live.post(TWILIO_STATUS, content=body, headers=headers)
            answers[response.status_code] += 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return answers


async def test_shuffled_log_with_duplicates_posted_concurrently_ends_as_in_order(
    live: httpx.AsyncClient, live_server: LiveServer
) -> None:
    school = await live_school(live, live_server, RECIPIENTS)
    first = {r: f"SM{r:016x}{'a' * 16}" for r in school.recipient_ids}
    second = {r: f"SM{r:016x}{'b' * 16}" for r in school.recipient_ids}
    await add_attempts(live_server, [(r, first[r]) for r in school.recipient_ids])
    await add_attempts(live_server, [(r, second[r]) for r in school.recipient_ids])

    kinds = {r: i % 5 for i, r in enumerate(school.recipient_ids)}
    log = [
        Event(r, sid, status, code)
        for r in school.recipient_ids
        for sid, status, code in stories(first[r], second[r], kinds[r])
    ]
    assert len(log) + DUPLICATES == RECEIPTS
    rng = random.Random(20261127)
    posted = log + rng.choices(log, k=DUPLICATES)
    rng.shuffle(posted)
    requests = [signed_request(school.account, live_server.url, e) for e in posted]

    started, cpu = time.perf_counter(), time.process_time()
    answers = await post_all(live, requests)
    elapsed = time.perf_counter() - started
    assert answers == Counter({200: RECEIPTS})
    print(
        f"\n{RECEIPTS} receipts, {CONCURRENCY} at a time: {elapsed:.1f} s, "
        f"client CPU {(time.process_time() - cpu) / RECEIPTS * 1000:.2f} ms/request"
    )

    # The service answered once each receipt was stored; its receipt applier applies them.
    await until_applied(live_server, [*first.values(), *second.values()], len(log))

    states, attempt_states = in_order(log, second)
    for r, state in states.items():
        assert (state.status.value, state.failed_reason, state.provider_error_code) == (
            EXPECTED_END[kinds[r]]
        ), (kinds[r], state)

    rows = await live_server.fetch(
        """SELECT id, status, failed_reason, provider_error_code, failed_definition,
                  next_attempt_at IS NOT NULL AS due
           FROM recipients WHERE campaign_id = $1""",
        uuid.UUID(school.campaign_id),
    )
    got = {
        row["id"]: (
            row["status"],
            row["failed_reason"],
            row["provider_error_code"],
            row["failed_definition"],
            row["due"],
        )
        for row in rows
    }
    want = {
        r: (
            s.status.value,
            s.failed_reason,
            s.provider_error_code,
            s.definition,
            s.status is rules.Status.scheduled,
        )
        for r, s in states.items()
    }
    assert got == want

    attempt_rows = await live_server.fetch(
        """SELECT a.provider_message_id, a.status, a.error_code FROM attempts a
           JOIN recipients r ON r.id = a.recipient_id WHERE r.campaign_id = $1""",
        uuid.UUID(school.campaign_id),
    )
    got_attempts = {
        row["provider_message_id"]: (row["status"], row["error_code"]) for row in attempt_rows
    }
    assert got_attempts == attempt_states

    stored = await live_server.fetch(
        """SELECT count(*) AS n, count(applied_at) AS applied FROM receipts
           WHERE provider_message_id = ANY($1::text[])""",
        [*first.values(), *second.values()],
    )
    assert (stored[0]["n"], stored[0]["applied"]) == (len(log), len(log))
    campaign = (await live.get(f"/v1/campaigns/{school.campaign_id}", headers=school.auth)).json()
    assert campaign["status"] == "active"
    ends = Counter(EXPECTED_END[kind][0] for kind in kinds.values())
    statuses = ("queued", "pending", "scheduled", "delivered", "failed")
    assert campaign["counts"] == {"total": RECIPIENTS, **{s: ends[s] for s in statuses}}


@pytest.fixture
async def live_sessions(live_server: LiveServer) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the live server's database, for playing the delivery engine's part."""
    engine: AsyncEngine = create_engine(live_server.database_url, pool_size=2)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def record_step(
    sessions: async_sessionmaker[AsyncSession],
    attempt_id: int,
    sid: str,
    before_commit: Any = None,
) -> None:
    """The engine's record step for an accepted send: the message id stored on the attempt,
    in one transaction (`before_commit` runs inside it, before the commit)."""
    async with unit_of_work(sessions) as session:
        attempt = await session.get_one(Attempt, attempt_id)
        attempt.provider_message_id = sid
        attempt.status = "queued"
        await session.flush()
        if before_commit is not None:
            await before_commit()


async def sending_attempt(server: LiveServer, school: LiveSchool) -> int:
    await add_attempts(server, [(school.recipient_ids[0], None)])
    rows = await server.fetch(
        "SELECT id FROM attempts WHERE recipient_id = $1", school.recipient_ids[0]
    )
    return int(rows[0]["id"])


async def recipient_status(server: LiveServer, school: LiveSchool) -> str:
    rows = await server.fetch(
        "SELECT status FROM recipients WHERE id = $1", school.recipient_ids[0]
    )
    return str(rows[0]["status"])


def signed_status(school: LiveSchool, server: LiveServer, sid: str, status: str) -> dict[str, Any]:
    params = status_form(school.account, sid, status)
    signature = compute_signature(server.url + TWILIO_STATUS, params, school.account.auth_token)
    return {"content": urlencode(params), "headers": {"Content-Type": FORM, HEADER: signature}}


async def test_callback_while_the_record_step_is_uncommitted_ends_applied(
    live: httpx.AsyncClient,
    live_server: LiveServer,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The callback arrives while the transaction recording its message id is still open:
    it is stored and answered at once, and applied once that transaction commits."""
    school = await live_school(live, live_server, 1)
    attempt_id = await sending_attempt(live_server, school)
    sid = f"SM{uuid.uuid4().hex}"

    async def meanwhile() -> None:
        response = await live.post(
            TWILIO_STATUS, **signed_status(school, live_server, sid, "delivered")
        )
        assert response.status_code == 200, response.text
        await asyncio.sleep(0.5)  # more than the applier's pause: it has looked, and not seen
        assert await recipient_status(live_server, school) == "queued"

    await record_step(live_sessions, attempt_id, sid, before_commit=meanwhile)
    await until_applied(live_server, [sid], 1, within=10)
    assert await recipient_status(live_server, school) == "delivered"
    rows = await live_server.fetch(
        "SELECT applied_at IS NOT NULL AS applied, attempt_id FROM receipts "
        "WHERE provider_message_id = $1",
        sid,
    )
    assert [(r["applied"], r["attempt_id"]) for r in rows] == [(True, attempt_id)]


async def test_callback_before_the_record_step_waits_then_is_applied(
    live: httpx.AsyncClient,
    live_server: LiveServer,
    live_sessions: async_sessionmaker[AsyncSession],
) -> None:
    school = await live_school(live, live_server, 1)
    attempt_id = await sending_attempt(live_server, school)
    sid = f"SM{uuid.uuid4().hex}"
    for status in ("delivered", "sent"):
        response = await live.post(TWILIO_STATUS, **signed_status(school, live_server, sid, status))
        assert response.status_code == 200, response.text
    await asyncio.sleep(0.5)
    assert await recipient_status(live_server, school) == "queued"
    await record_step(live_sessions, attempt_id, sid)
    await until_applied(live_server, [sid], 2, within=10)
    assert await recipient_status(live_server, school) == "delivered"
