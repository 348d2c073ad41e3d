"""A campaign's live stream (README, Events): Server-Sent Events of its `recipient.updated`
and `campaign.updated` events, each with its position in the outbox's order as its `id`
(`app.events.outbox.Position`).

One `Broadcaster` per process listens for the notification of each commit that wrote
events (PostgreSQL `LISTEN`, one connection, however many clients), reads the events of
its streams' campaigns that have become readable since, once, and hands each to the
streams of its campaign. A stream subscribes first, then
replays from the outbox what its client missed (after `Last-Event-ID`), then passes on
what the broadcaster hands it, skipping what it replayed: nothing missed, nothing twice. A
client too slow to keep up is dropped (its queue full); it reconnects with its
`Last-Event-ID` and replays. The broadcaster also looks every POLL_SECONDS, should a
notification be lost, or an event be held back by a transaction still open when it was
notified (a dropped listening connection is opened again).

Each stream was opened with an API key (or a stream token naming one). When a key is
revoked, in whatever process, its streams end within a moment (README, API keys): the
revocation notifies `service.KEY_REVOKED` at its commit and the broadcaster, listening,
ends them; each time it starts listening again (a notification may have been missed
meanwhile) it asks which of its streams' keys are revoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sse_starlette import ServerSentEvent

from app.events import outbox, render
from app.kit.db import driver_url, unit_of_work
from app.models import Event
from app.schools import repository as keys
from app.schools.service import KEY_REVOKED

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
PACE_SECONDS = 0.05
QUEUE_SIZE = 10_000  # events a stream may lag behind before it is dropped
STREAMED = (render.RECIPIENT_UPDATED, render.CAMPAIGN_UPDATED)


def frame(position: outbox.Position, event: Event) -> bytes:
    """An event as its stream sends it: an SSE message whose `id` is its position, framed
    by sse-starlette once per event, whatever the number of clients (EventSourceResponse
    sends bytes as they are)."""
    data = json.dumps(render.envelope(event), separators=(",", ":"))
    return ServerSentEvent(data=data, id=str(position)).encode()


class Subscription:
    def __init__(self, key_id: uuid.UUID) -> None:
        self.key_id = key_id  # the API key the stream was opened with
        self.cut = False  # ended at once: nothing more is sent, not even what it replays
        self.queue: asyncio.Queue[tuple[outbox.Position, bytes] | None] = asyncio.Queue(QUEUE_SIZE)

    def end(self, *, at_once: bool = False) -> None:
        """End the stream once what it was handed is sent (None after it in the queue), or
        `at_once`, sending nothing more. A full queue is emptied first: those events go
        unsent, and the client, whose `Last-Event-ID` is from before them, replays them
        when it reconnects."""
        self.cut = self.cut or at_once
        if at_once or self.queue.full():
            while not self.queue.empty():
                self.queue.get_nowait()
        self.queue.put_nowait(None)

    def put(self, position: outbox.Position, message: bytes) -> bool:
        try:
            self.queue.put_nowait((position, message))
        except asyncio.QueueFull:
            return False
        return True


class Broadcaster:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], database_url: str) -> None:
        self.sessionmaker = sessionmaker
        self.database_url = database_url
        self._subscribers: defaultdict[uuid.UUID, set[Subscription]] = defaultdict(set)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._position = outbox.START
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Start listening, once (the first stream of the process starts it)."""
        async with self._starting:
            if self._task is not None:
                return
            # What is readable now, the streams replay; the broadcaster hands out the rest.
            async with unit_of_work(self.sessionmaker) as session:
                self._position = outbox.Position(await outbox.horizon(session), 0)
            self._task = asyncio.create_task(self._run(), name="event broadcaster")

    async def stop(self) -> None:
        self._stopping.set()
        for subscriptions in self._subscribers.values():
            for subscription in subscriptions:
                subscription.end()
        if self._task is not None:
            await self._task

    @contextlib.contextmanager
    def subscribe(self, campaign_id: uuid.UUID, key_id: uuid.UUID) -> Any:
        subscription = Subscription(key_id)
        self._subscribers[campaign_id].add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers[campaign_id].discard(subscription)
            if not self._subscribers[campaign_id]:
                del self._subscribers[campaign_id]

    async def _run(self) -> None:
        while not self._stopping.is_set():
            listener: asyncpg.Connection | None = None
            try:
                listener = await asyncpg.connect(driver_url(self.database_url))
                await listener.add_listener(outbox.WRITTEN, lambda *_: self._wake.set())
                await listener.add_listener(KEY_REVOKED, self._on_revoked)
                await self._end_revoked()
                while not self._stopping.is_set() and not listener.is_closed():
                    await self._hand_out()
                    # Every commit that writes events notifies: at most one look per PACE.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), PACE_SECONDS)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), POLL_SECONDS - PACE_SECONDS)
                    self._wake.clear()
            except (OSError, TimeoutError, asyncpg.PostgresError, SQLAlchemyError) as error:
                log.warning("event broadcaster: %s; listening again shortly", error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), POLL_SECONDS)
            except Exception:  # whatever it was, the streams must not go silent for good
                log.exception("event broadcaster failed; listening again shortly")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), POLL_SECONDS)
            finally:
                if listener is not None:
                    with contextlib.suppress(Exception):
                        await listener.close()

    def _on_revoked(self, connection: Any, pid: int, channel: str, key: str) -> None:
        self._end_streams_of({uuid.UUID(key)})

    def _end_streams_of(self, key_ids: set[uuid.UUID]) -> None:
        for subscriptions in self._subscribers.values():
            for subscription in list(subscriptions):
                if subscription.key_id in key_ids:
                    subscriptions.discard(subscription)
                    subscription.end(at_once=True)

    async def _end_revoked(self) -> None:
        """End the streams whose key is revoked (those revoked while nobody listened)."""
        opened = {s.key_id for subs in self._subscribers.values() for s in subs}
        if opened:
            async with unit_of_work(self.sessionmaker) as session:
                self._end_streams_of(await keys.revoked_among(session, list(opened)))

    async def _hand_out(self) -> None:
        """Hand the events of the streams' campaigns that became readable since the last
        look to their streams."""
        while True:
            async with unit_of_work(self.sessionmaker) as session:
                horizon = await outbox.horizon(session)
                # After the horizon is read: a stream subscribed from now on replays every
                # event below it itself, its look being later. So no more than that is read
                # here (a look of this read's own could reach further than such a stream's
                # replay, and the events between would be neither replayed nor handed out).
                campaigns = list(self._subscribers)
                batch = await outbox.read(
                    session, self._position, campaign_ids=campaigns, limit=1000, below=horizon
                )
            for event in batch:
                self._position = outbox.Position.of(event)
                subscribers = self._subscribers.get(event.campaign_id or uuid.UUID(int=0))
                if not subscribers or event.type not in STREAMED:
                    continue
                message = frame(self._position, event)
                for subscription in list(subscribers):
                    if not subscription.put(self._position, message):
                        subscribers.discard(subscription)  # too slow: dropped
                        subscription.end()
            if len(batch) < 1000:
                # Every event of these campaigns' below `horizon` was read.
                self._position = max(self._position, outbox.Position(horizon, 0))
                return


async def campaign_events(
    broadcaster: Broadcaster,
    sessionmaker: async_sessionmaker[AsyncSession],
    campaign_id: uuid.UUID,
    after: outbox.Position,
    key_id: uuid.UUID,
) -> AsyncIterator[bytes]:
    """The stream of one campaign after `after`, opened with the API key `key_id`:
    the missed events, then live, until the key is revoked. What is waiting goes in one
    write (a batch replayed, or the events handed out since the last write): with many
    clients, a write per event per client is what costs."""
    with broadcaster.subscribe(campaign_id, key_id) as subscription:
        last = after
        while True:
            async with unit_of_work(sessionmaker) as session:
                batch = await outbox.read(session, last, campaign_ids=[campaign_id], limit=500)
            if subscription.cut:
                return
            messages = []
            for event in batch:
                last = outbox.Position.of(event)
                if event.type in STREAMED:
                    messages.append(frame(last, event))
            if messages:
                yield b"".join(messages)
            if len(batch) < 500:
                break
        while True:
            waiting = [await subscription.queue.get()]
            while waiting[-1] is not None and not subscription.queue.empty():
                waiting.append(subscription.queue.get_nowait())
            messages = []
            for item in waiting:
                if item is None:  # dropped, or the process is stopping
                    break
                position, message = item
                if position > last:
                    last = position
                    messages.append(message)
            if messages:
                yield b"".join(messages)
            if waiting[-1] is None:
                return
