"""Posting events to webhook endpoints (README, Events): at least once, signed as the
Standard Webhooks specification says, retried with backoff for about three days.

Deliveries are rows (`app.models.WebhookDelivery`), made by the sequencer
(`app.events.outbox.sequence`). A `Deliverer` claims due ones FOR UPDATE SKIP LOCKED and
leases them (`next_attempt_at` = now + LEASE_SECONDS, so several workers never post one at
once and a killed worker's posts are made again once the lease runs out), posts each in a
task of its own, at most `per_endpoint` at once to one endpoint and `concurrency` in all,
so a slow or dead endpoint holds up only its own deliveries, and records each answer in a
transaction of its own. A 2xx answer within TIMEOUT_SECONDS is a delivery; anything else
(another status, a timeout, a refused connection, a redirect: never followed, an address
that is not public) is retried after the next wait of RETRY_WAITS, then the delivery is
failed. Every post of one event carries the same `webhook-id` (the event's id)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook

from app.events import render, urls
from app.kit.clock import utcnow
from app.kit.crypto import SecretBox
from app.kit.db import unit_of_work
from app.models import Event, WebhookEndpoint

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
LEASE_SECONDS = 60  # longer than a post can take
# The waits after each failed post (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: about 28 h
# of waiting, spread over some three days of retries counting the last); after the last
# retry fails, the delivery is failed.
RETRY_WAITS = (5, 300, 1800, 7200, 18000, 36000, 36000)

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
_RECORD = text(
    """
    UPDATE webhook_deliveries
    SET status = :status, next_attempt_at = :next_attempt_at, last_status = :last_status,
        last_error = :last_error, delivered_at = :delivered_at, updated_at = :now
    WHERE id = :id AND attempts = :attempts
    """
)


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


def sign(secret: str, event_id: str, moment: datetime, body: str) -> dict[str, str]:
    """The Standard Webhooks headers of a post (the official package's signature)."""
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, moment, body),
        "content-type": "application/json",
    }


class Deliverer:
    """Claims due deliveries and posts them, bounded per endpoint and in all."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        box: SecretBox,
        *,
        allow_private: bool,
        concurrency: int = 50,
        per_endpoint: int = 4,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.box = box
        self.allow_private = allow_private
        self.concurrency = concurrency
        self.per_endpoint = per_endpoint
        self.http = http or httpx.AsyncClient(
            timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
        )
        self._in_flight: Counter[uuid.UUID] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._answered = asyncio.Event()  # a post ended: there may be room for another

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def claim_and_post(self) -> int:
        """Claim what may be posted now, within the bounds, and start posting it (each
        post a task of its own); how many were claimed."""
        room = self.concurrency - len(self._tasks)
        if room <= 0:
            return 0
        posts = await self._claim(room)
        for post in posts:
            self._in_flight[post.endpoint_id] += 1
            task = asyncio.create_task(self._deliver(post), name=f"webhook {post.id}")
            self._tasks.add(task)
            task.add_done_callback(self._ended)
        return len(posts)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._answered.set()

    async def answered(self, seconds: float) -> None:
        """Until a post in flight ends (at most `seconds`)."""
        self._answered.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._answered.wait(), seconds)

    async def _claim(self, room: int) -> list[Post]:
        now = utcnow()
        async with unit_of_work(self.sessionmaker) as session:
            due = (
                await session.execute(_DUE, {"now": now, "per_endpoint": self.per_endpoint})
            ).all()
            taken: Counter[uuid.UUID] = Counter()
            chosen: list[int] = []
            for row in due:
                busy = self._in_flight[row.endpoint_id] + taken[row.endpoint_id]
                if busy < self.per_endpoint and len(chosen) < room:
                    taken[row.endpoint_id] += 1
                    chosen.append(row.id)
            if not chosen:
                return []
            lease_until = now + timedelta(seconds=LEASE_SECONDS)
            leased = (
                await session.execute(
                    _LEASE, {"ids": chosen, "lease_until": lease_until, "now": now}
                )
            ).all()
            endpoints = {
                e.id: e
                for e in await session.scalars(
                    select(WebhookEndpoint).where(
                        WebhookEndpoint.id.in_({row.endpoint_id for row in leased})
                    )
                )
            }
            events = {
                e.id: e
                for e in await session.scalars(
                    select(Event).where(Event.id.in_({row.event_id for row in leased}))
                )
            }
            posts = []
            for row in leased:
                endpoint, event = endpoints[row.endpoint_id], events[row.event_id]
                posts.append(
                    Post(
                        row.id,
                        row.endpoint_id,
                        row.attempts,
                        endpoint.url,
                        self.box.open(endpoint.secret)["secret"],
                        event.public_id,
                        json.dumps(render.envelope(event), separators=(",", ":")),
                    )
                )
            return posts

    async def _deliver(self, post: Post) -> None:
        try:
            answer, error = await self._post(post)
            await self._record(post, answer, error)
        except Exception:  # the lease runs out and the delivery is posted again
            log.exception("webhook delivery %s could not be recorded", post.id)
        finally:
            self._in_flight[post.endpoint_id] -= 1

    async def _post(self, post: Post) -> tuple[int | None, str | None]:
        try:
            await urls.check(post.url, allow_private=self.allow_private)
        except urls.RefusedUrl as exc:
            return None, str(exc)
        headers = sign(post.secret, post.event_id, utcnow(), post.body)
        try:
            response = await self.http.post(post.url, content=post.body, headers=headers)
        except httpx.TimeoutException:
            return None, f"no answer within {TIMEOUT_SECONDS:.0f} s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        return response.status_code, None

    async def _record(self, post: Post, answer: int | None, error: str | None) -> None:
        now = utcnow()
        values: dict[str, Any] = {
            "id": post.id,
            "attempts": post.attempts,
            "now": now,
            "last_status": answer,
            "last_error": error,
            "delivered_at": None,
        }
        if answer is not None and 200 <= answer < 300:
            values.update(status="delivered", next_attempt_at=None, delivered_at=now)
        elif post.attempts <= len(RETRY_WAITS):
            wait = RETRY_WAITS[post.attempts - 1]
            values.update(status="pending", next_attempt_at=now + timedelta(seconds=wait))
        else:
            values.update(status="failed", next_attempt_at=None)
        async with unit_of_work(self.sessionmaker) as session:
            await session.execute(_RECORD, values)

    async def finish(self, seconds: float = TIMEOUT_SECONDS + 1) -> None:
        """Let the posts in flight end (for at most `seconds`), then close the client."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=seconds)
        await self.http.aclose()
