"""Posting events to webhook endpoints (README, Events): at least once, signed as the
Standard Webhooks specification says, retried with backoff for about three days.

Deliveries are rows (`app.models.WebhookDelivery`), made by the deliverer itself as it
claims: each claim first takes, for each enabled endpoint with new readable events of its
school (`app.events.outbox`), up to FAN_OUT of them after the endpoint's cursor, makes a
delivery of each of the types it takes, and moves the cursor past them, in the claim's
transaction (the endpoint's row locked, SKIP LOCKED: one worker at a time takes an
endpoint's events). Nothing of this is done while the changes are made: the writers only
write events. A `Deliverer` then claims due deliveries FOR UPDATE SKIP LOCKED and
leases them (`next_attempt_at` = now + LEASE_SECONDS, so several workers never post one at
once and a killed worker's posts are made again once the lease runs out), posts each in a
task of its own, at most `concurrency` in all and, to one endpoint, `per_endpoint` at once
while it answers 2xx, else one (an endpoint that hangs holds one of the `concurrency`, so
dead endpoints hold up their own deliveries, not others'), and records the answers
together, in the next claim's transaction (a worker killed before that posts nothing
twice at once: the lease runs out first, and those posts are made again). A 2xx answer
within TIMEOUT_SECONDS is a delivery; anything else (another status, a timeout, a refused
connection, a redirect: never followed, an address that is not public) is retried after
the next wait of RETRY_WAITS, then the delivery is failed. Every post of one event
carries the same `webhook-id` (the event's id)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
import uuid
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook

from app.events import outbox, render, urls
from app.kit.clock import utcnow
from app.kit.crypto import SecretBox
from app.kit.db import unit_of_work
from app.kit.http import SplitPool
from app.models import Event, WebhookDelivery, WebhookEndpoint

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
LEASE_SECONDS = 60  # longer than a post can take
ANSWER_BYTES = 65_536  # of an answer's body read, at most (and then ignored)
# The waits after each failed post: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (Standard
# Webhooks' and Svix's schedule, about 28 h), then 14 h, 14 h and 16 h: about three days
# in all. After the last retry fails, the delivery is failed.
RETRY_WAITS = (5, 300, 1800, 7200, 18000, 36000, 36000, 50400, 50400, 57600)
ROUNDS = 4  # rounds of an endpoint's posts a claim takes (ROUNDS x TIMEOUT < LEASE)

FAN_OUT = 1000  # events an endpoint takes per claim
# The deliveries of the events each enabled endpoint has not yet taken (readable ones, in
# the outbox's order, up to :limit), made due now, and the endpoint's cursor moved past
# the events looked at (those of types it does not take included); how many were made.
_FAN_OUT = text(
    f"""
    WITH endpoint AS (
        SELECT id, school_id, events, cursor_xid, cursor_id FROM webhook_endpoints AS w
        WHERE enabled AND EXISTS (
            SELECT FROM events
            WHERE school_id = w.school_id AND (xid, id) > (w.cursor_xid, w.cursor_id)
              AND xid < {outbox.HORIZON}
        )
        FOR NO KEY UPDATE SKIP LOCKED
    ),
    taken AS (
        SELECT w.id AS endpoint_id, w.events AS wanted, e.id AS event_id, e.xid, e.type
        FROM endpoint AS w
        CROSS JOIN LATERAL (
            SELECT id, xid, type FROM events
            WHERE school_id = w.school_id AND (xid, id) > (w.cursor_xid, w.cursor_id)
              AND xid < {outbox.HORIZON}
            ORDER BY xid, id
            LIMIT :limit
        ) AS e
    ),
    made AS (
        INSERT INTO webhook_deliveries (endpoint_id, event_id, next_attempt_at)
        SELECT endpoint_id, event_id, :now FROM taken
        WHERE wanted IS NULL OR type = ANY (wanted)
        ORDER BY endpoint_id, xid, event_id
        RETURNING 1
    ),
    moved AS (
        UPDATE webhook_endpoints AS w SET cursor_xid = last.xid, cursor_id = last.event_id
        FROM (
            SELECT DISTINCT ON (endpoint_id) endpoint_id, xid, event_id FROM taken
            ORDER BY endpoint_id, xid DESC, event_id DESC
        ) AS last
        WHERE w.id = last.endpoint_id
    )
    SELECT count(*) FROM made
    """
)
_PLAN_AFRESH = text("SET LOCAL plan_cache_mode = force_custom_plan")
# Each enabled endpoint's due deliveries, longest due first, up to `per_endpoint` of each
# (so one endpoint's backlog never hides another's: each is read on its own), locked (SKIP
# LOCKED: claims of several workers never share one).
_DUE = text(
    """
    SELECT d.id, d.endpoint_id
    FROM webhook_endpoints AS w
    CROSS JOIN LATERAL (
        SELECT id, endpoint_id, next_attempt_at FROM webhook_deliveries
        WHERE endpoint_id = w.id AND next_attempt_at <= :now
        ORDER BY next_attempt_at
        LIMIT :per_endpoint
        FOR UPDATE SKIP LOCKED
    ) AS d
    WHERE w.enabled
    ORDER BY d.next_attempt_at
    """
)
_LEASE = text(
    """
    UPDATE webhook_deliveries
    SET next_attempt_at = :lease_until, attempts = attempts + 1, updated_at = :now
    WHERE id = ANY(:ids)
    RETURNING id, endpoint_id, event_id, attempts
    """
)
# The answers of several posts, each its delivery's unless another post of it was made
# since (its lease ran out and another worker posted it: that post's answer is the one).
_RECORD = text(
    """
    UPDATE webhook_deliveries AS d
    SET status = a.status, next_attempt_at = a.next_attempt_at, last_status = a.last_status,
        last_error = a.last_error, delivered_at = a.delivered_at, updated_at = :now
    FROM unnest(
        CAST(:id AS bigint[]), CAST(:attempts AS integer[]), CAST(:status AS text[]),
        CAST(:next_attempt_at AS timestamptz[]), CAST(:last_status AS integer[]),
        CAST(:last_error AS text[]), CAST(:delivered_at AS timestamptz[])
    ) AS a(id, attempts, status, next_attempt_at, last_status, last_error, delivered_at)
    WHERE d.id = a.id AND d.attempts = a.attempts
    """
)
# Queued posts a stopping worker will not make: due again now, as if never leased.
_GIVE_BACK = text(
    """
    UPDATE webhook_deliveries AS d
    SET next_attempt_at = now(), attempts = d.attempts - 1
    FROM unnest(CAST(:ids AS bigint[]), CAST(:attempts AS integer[])) AS q(id, attempts)
    WHERE d.id = q.id AND d.attempts = q.attempts
    """
)


async def fan_out(session: AsyncSession, now: datetime, limit: int = FAN_OUT) -> int:
    """Make the deliveries of the events the enabled endpoints have not yet taken, up to
    `limit` events an endpoint, due `now`; how many.

    Planned afresh each time (for the rest of the transaction): a worker's connections keep
    their statements prepared, and a plan made while the events table was nearly empty
    (a worker started on a new database, or before a burst) scans the whole table for
    every claim until autovacuum next analyzes it (3x the cost per delivery in
    bench/receipt_applier.py)."""
    await session.execute(_PLAN_AFRESH)
    return int(await session.scalar(_FAN_OUT, {"limit": limit, "now": now}) or 0)


async def give_back(session: AsyncSession, posts: list[Post]) -> None:
    """Posts leased and not made: due again at once, as if never leased."""
    ids, attempts = [p.id for p in posts], [p.attempts for p in posts]
    await session.execute(_GIVE_BACK, {"ids": ids, "attempts": attempts})


@dataclass(frozen=True, slots=True)
class Post:
    """One claimed delivery, ready to post."""

    id: int
    endpoint_id: uuid.UUID
    attempts: int  # this post's number
    url: str
    secret: str
    event_id: str
    body: str
    lease_ends: float  # time.monotonic()


def sign(secret: str, event_id: str, moment: datetime, body: str) -> dict[str, str]:
    """The Standard Webhooks headers of a post (the official package's signature)."""
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, moment, body),
        "content-type": "application/json",
    }


class Deliverer:
    """Claims due deliveries and posts them, bounded per endpoint and in all.

    A claim takes, for each endpoint, up to ROUNDS rounds of its posts (`per_endpoint`
    each) and keeps them queued in memory: as a post ends, the next one of its endpoint
    starts at once, without a trip to the database. The answers are recorded together, in
    the next claim's transaction. ROUNDS x TIMEOUT_SECONDS is under LEASE_SECONDS, so the
    last queued post of an endpoint that times out on every one is still posted within
    its lease."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        box: SecretBox,
        *,
        allow_private: bool,
        concurrency: int = 50,
        per_endpoint: int = 4,
        http: httpx.AsyncClient | None = None,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.box = box
        self.allow_private = allow_private
        self.concurrency = concurrency
        self.per_endpoint = per_endpoint
        self.timeout = timeout  # a post's, whole: at most TIMEOUT_SECONDS (under the lease)
        # Split pools, as the providers' client (app/kit/http.py: httpcore walks every
        # connection of a pool on each request), connecting to public addresses only,
        # checked where each connection is made (unless private URLs are allowed).
        backend = None if allow_private else urls.PublicOnly()
        self.http = http or httpx.AsyncClient(
            timeout=TIMEOUT_SECONDS,
            follow_redirects=False,
            trust_env=False,
            transport=SplitPool(network_backend=backend),
        )
        self._queued: defaultdict[uuid.UUID, deque[Post]] = defaultdict(deque)
        self._in_flight: Counter[uuid.UUID] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._answers: list[Answer] = []  # recorded with the next claim
        self._unmade: list[Post] = []  # given back with the next claim
        self._room = asyncio.Event()  # an endpoint's queue ran dry: worth a claim
        # Endpoints whose last post here was answered 2xx: only those get `per_endpoint`
        # posts at once; any other (new to this worker, failing, dead) one at a time, so
        # that endpoints that hang hold one of the `concurrency` posts each, not more.
        self._answering: set[uuid.UUID] = set()
        self._dry: set[uuid.UUID] = set()  # endpoints whose queue ran dry during a claim

    @property
    def in_flight(self) -> int:
        """Posts under way or queued (claimed, not yet answered)."""
        return len(self._tasks) + sum(map(len, self._queued.values()))

    async def claim_and_post(self) -> int:
        """Record the answers of the posts that ended, claim what may be posted within the
        bounds, and start posting; how many were claimed."""
        self._room.clear()
        self._dry.clear()
        posts = await self._claim(self.concurrency * ROUNDS - self.in_flight)
        for post in posts:
            self._queued[post.endpoint_id].append(post)
        # An endpoint whose queue ran dry as this claim was made, and that it refilled, is
        # no reason for another claim at once.
        self._dry.difference_update(post.endpoint_id for post in posts)
        if not self._dry:
            self._room.clear()
        self._start()
        return len(posts)

    def _start(self) -> None:
        """Start the queued posts that the bounds let start. A post that could no longer
        end within its lease is not made here (so a post is never made twice at once,
        however long others held it queued): it is given back with the next claim, due at
        once for any worker, its attempt not counted."""
        latest = time.monotonic() + self.timeout + 1
        for endpoint_id, queue in self._queued.items():
            while (
                queue
                and self._in_flight[endpoint_id] < self._bound(endpoint_id)
                and len(self._tasks) < self.concurrency
            ):
                post = queue.popleft()
                if post.lease_ends < latest:
                    self._unmade.append(post)
                    continue
                self._in_flight[endpoint_id] += 1
                task = asyncio.create_task(self._deliver(post), name=f"webhook {post.id}")
                self._tasks.add(task)
                task.add_done_callback(functools.partial(self._ended, endpoint_id))

    def _bound(self, endpoint_id: uuid.UUID) -> int:
        """How many posts to the endpoint may be under way at once."""
        return self.per_endpoint if endpoint_id in self._answering else 1

    def _ended(self, endpoint_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._start()
        if not self._queued[endpoint_id]:  # its posts claimed so far all made or under way
            self._dry.add(endpoint_id)
            self._room.set()

    async def room(self, seconds: float) -> None:
        """Until a claim is worth making: a post ended with no other of its endpoint queued
        since the last claim began (at most `seconds`, after which the answers are worth
        recording anyway)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._room.wait(), seconds)

    async def _claim(self, room: int) -> list[Post]:
        """Record the answers so far, make the deliveries of new events, then lease up to
        `room` due deliveries, each endpoint's up to ROUNDS rounds of its posts less what
        it holds."""
        now = utcnow()
        answers, self._answers = self._answers, []
        unmade, self._unmade = self._unmade, []
        try:
            return await self._record_and_lease(answers, unmade, now, room)
        except BaseException:
            self._answers[:0] = answers  # recorded with the next claim, if there is one
            self._unmade[:0] = unmade
            raise

    async def _record_and_lease(
        self, answers: list[Answer], unmade: list[Post], now: datetime, room: int
    ) -> list[Post]:
        async with unit_of_work(self.sessionmaker) as session:
            if answers:
                await session.execute(_RECORD, Answer.columns(answers, now))
            if unmade:
                await give_back(session, unmade)
            await fan_out(session, now)
            if room <= 0:
                return []
            limit = self.per_endpoint * ROUNDS
            due = (await session.execute(_DUE, {"now": now, "per_endpoint": limit})).all()
            taken: Counter[uuid.UUID] = Counter()
            chosen: list[int] = []
            for row in due:
                held = self._in_flight[row.endpoint_id] + len(self._queued[row.endpoint_id])
                rounds = self._bound(row.endpoint_id) * ROUNDS
                if held + taken[row.endpoint_id] < rounds and len(chosen) < room:
                    taken[row.endpoint_id] += 1
                    chosen.append(row.id)
            if not chosen:
                return []
            lease_until = now + timedelta(seconds=LEASE_SECONDS)
            lease_ends = time.monotonic() + LEASE_SECONDS
            leased = (
                await session.execute(
                    _LEASE, {"ids": chosen, "lease_until": lease_until, "now": now}
                )
            ).all()
            endpoints = {
                e.id: (e.url, self.box.open(e.secret)["secret"])
                for e in await session.scalars(
                    select(WebhookEndpoint).where(
                        WebhookEndpoint.id.in_({row.endpoint_id for row in leased})
                    )
                )
            }
            bodies = {
                e.id: (
                    render.public_id(e.id, e.public_id),
                    json.dumps(render.envelope(e), separators=(",", ":")),
                )
                for e in await session.scalars(
                    select(Event).where(Event.id.in_({row.event_id for row in leased}))
                )
            }
            # An event pruned as its delivery was made (its endpoint that far behind): the
            # delivery goes the way of the pruned event's others.
            if pruned := [row.id for row in leased if row.event_id not in bodies]:
                await session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(pruned)))
            return [
                Post(
                    row.id,
                    row.endpoint_id,
                    row.attempts,
                    *endpoints[row.endpoint_id],
                    *bodies[row.event_id],
                    lease_ends,
                )
                for row in leased
                if row.event_id in bodies
            ]

    async def _deliver(self, post: Post) -> None:
        try:
            answer, error = await self._post(post)
            self._answers.append(Answer.of(post, answer, error))
            if answer is not None and 200 <= answer < 300:
                self._answering.add(post.endpoint_id)
            else:
                self._answering.discard(post.endpoint_id)
        except Exception:  # the lease runs out and the delivery is posted again
            log.exception("webhook delivery %s was not posted", post.id)
        finally:
            self._in_flight[post.endpoint_id] -= 1

    async def _post(self, post: Post) -> tuple[int | None, str | None]:
        headers = sign(post.secret, post.event_id, utcnow(), post.body)
        try:
            if not self.allow_private:  # saved with http while private URLs were allowed
                urls.shape(post.url, allow_private=False)
            # The whole post within the timeout (httpx's bounds each step: a receiver
            # answering a byte at a time would hold it past its lease), and of its answer's
            # body no more than ANSWER_BYTES read (read to its end, the connection is kept
            # for the next post; not, it is closed).
            async with (
                asyncio.timeout(self.timeout),
                self.http.stream("POST", post.url, content=post.body, headers=headers) as answer,
            ):
                read = 0
                async for chunk in answer.aiter_raw():
                    read += len(chunk)
                    if read > ANSWER_BYTES:
                        break
                return answer.status_code, None
        except (TimeoutError, httpx.TimeoutException):
            return None, f"no answer within {self.timeout:g} s"
        except urls.RefusedUrl as exc:  # not https, or its host is not public (any more)
            return None, str(exc)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]

    async def finish(self, seconds: float = TIMEOUT_SECONDS + 1) -> None:
        """Let the posts in flight end (for at most `seconds`), record their answers, give
        back the queued ones (due again at once, for any worker), then close the client."""
        queued = [*self._unmade, *(post for queue in self._queued.values() for post in queue)]
        self._queued.clear()
        self._unmade = []
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=seconds)
        try:
            async with unit_of_work(self.sessionmaker) as session:
                if self._answers:
                    await session.execute(_RECORD, Answer.columns(self._answers, utcnow()))
                    self._answers = []
                if queued:
                    await give_back(session, queued)
        finally:
            await self.http.aclose()


@dataclass(frozen=True, slots=True)
class Answer:
    """What became of one post, to record: delivered, due again after its wait, or failed."""

    id: int
    attempts: int
    status: str
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None

    @classmethod
    def of(cls, post: Post, answer: int | None, error: str | None) -> Answer:
        now = utcnow()
        if answer is not None and 200 <= answer < 300:
            return cls(post.id, post.attempts, "delivered", None, answer, error, now)
        if post.attempts <= len(RETRY_WAITS):
            wait = timedelta(seconds=RETRY_WAITS[post.attempts - 1])
            return cls(post.id, post.attempts, "pending", now + wait, answer, error, None)
        return cls(post.id, post.attempts, "failed", None, answer, error, None)

    @staticmethod
    def columns(answers: list[Answer], now: datetime) -> dict[str, Any]:
        """The answers as the columns `_RECORD` unnests."""
        return {
            "now": now,
            **{
                name: [getattr(a, name) for a in answers]
                for name in (
                    "id",
                    "attempts",
                    "status",
                    "next_attempt_at",
                    "last_status",
                    "last_error",
                    "delivered_at",
                )
            },
        }
