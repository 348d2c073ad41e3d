"""Probes of THE LOCK ORDER (`app.sending.locks`) on a real PostgreSQL, for
test_lock_order.py. Nothing of the service is patched: a writer runs as it does in
production and only meets, somewhere on its way, a lock that a probe holds.

A probe is a connection of its own that holds one resource of the order in an open
transaction: a campaign's send lock (exclusive), a row (`FOR NO KEY UPDATE`), or an opt-out
row it inserted and has not committed. Once a writer waits for it (the probe's pid is among
the writer's `pg_blocking_pids`), a third connection finds which of the other resources the
writer holds meanwhile: the send lock in `pg_locks` (granted to the writer's pid), a row by
trying to lock it `NOWAIT` in a transaction rolled back at once (`LockNotAvailableError`:
someone holds it, and no one but the writer runs), an opt-out by inserting the same one
(it waits for an uncommitted insert of it: `lock_timeout` ends that wait, and without such
an insert there is no wait at all). Then the probe lets go, and the writer goes on.

Rows are held and tried `FOR NO KEY UPDATE`: what every writer's UPDATE takes, and weaker
than `FOR UPDATE` (close, archive, resend, the claim's accounts, the recipients' locks), so
every lock of the order conflicts with it. A foreign key's check (`FOR KEY SHARE`, e.g. an
opt-out inserted naming its campaign) does not: it is not a lock of the order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg

from app.sending.locks import lock_key

# How long a probe waits for a writer to do what it must (a bounded wait, polled).
WAIT_SECONDS = 10.0
POLL_SECONDS = 0.005

T = TypeVar("T")


class OrderBroken(AssertionError):
    """A writer held a resource of a later step (or a later one of its step) while it
    waited for an earlier one, or had not taken an earlier one yet."""


@dataclass(frozen=True)
class Resource:
    """One lock of the order. `step` is the order's step (1 to 4)."""

    step: int
    name: str

    def __str__(self) -> str:
        return f"{self.name} (step {self.step})"

    async def hold(self, connection: asyncpg.Connection) -> None:
        """Take it, inside the connection's open transaction."""
        raise NotImplementedError

    async def taken(self, connection: asyncpg.Connection, pid: int) -> bool:
        """Whether the writer (`pid`) holds it, asked on a connection outside any
        transaction."""
        raise NotImplementedError


@dataclass(frozen=True)
class SendLock(Resource):
    """Step 1: a campaign's send lock, an advisory lock on `lock_key` (a stop's is
    exclusive). `pg_locks` shows a bigint key as two 32-bit halves."""

    key: int

    async def hold(self, connection: asyncpg.Connection) -> None:
        await connection.execute("SELECT pg_advisory_xact_lock($1)", self.key)

    async def taken(self, connection: asyncpg.Connection, pid: int) -> bool:
        held: bool = await connection.fetchval(
            """
            SELECT EXISTS (
                SELECT FROM pg_locks
                WHERE locktype = 'advisory' AND granted AND pid = $1
                  AND mode = 'ExclusiveLock'
                  AND database = (SELECT oid FROM pg_database
                                  WHERE datname = current_database())
                  AND classid::bigint = ($2::bigint >> 32) & 4294967295
                  AND objid::bigint = $2::bigint & 4294967295 AND objsubid = 1)
            """,
            pid,
            self.key,
        )
        return held


@dataclass(frozen=True)
class Row(Resource):
    """A row: a recipient's (step 2), a provider account's (3), a campaign's (4)."""

    table: str
    column: str
    value: Any

    def _select(self, nowait: bool = False) -> str:
        lock = "FOR NO KEY UPDATE" + (" NOWAIT" if nowait else "")
        return f"SELECT 1 FROM {self.table} WHERE {self.column} = $1 {lock}"

    async def hold(self, connection: asyncpg.Connection) -> None:
        assert await connection.fetchval(self._select(), self.value) == 1, f"no {self}"

    async def taken(self, connection: asyncpg.Connection, pid: int) -> bool:
        transaction = connection.transaction()
        await transaction.start()
        try:
            assert await connection.fetchval(self._select(nowait=True), self.value) == 1
        except asyncpg.LockNotAvailableError:
            return True
        finally:
            await transaction.rollback()
        return False


@dataclass(frozen=True)
class OptOutRow(Resource):
    """Step 3: a number's opt-out, inserted by the writer (its key is (school, phone))."""

    school_id: uuid.UUID
    phone: str

    _INSERT = """
        INSERT INTO opt_outs (school_id, phone, source) VALUES ($1, $2, 'staff')
        ON CONFLICT DO NOTHING
    """

    async def hold(self, connection: asyncpg.Connection) -> None:
        assert await connection.execute(self._INSERT, self.school_id, self.phone) == "INSERT 0 1"

    async def taken(self, connection: asyncpg.Connection, pid: int) -> bool:
        transaction = connection.transaction()
        await transaction.start()
        try:
            await connection.execute("SET LOCAL lock_timeout = '20ms'")
            await connection.execute(self._INSERT, self.school_id, self.phone)
        except asyncpg.LockNotAvailableError:
            return True
        finally:
            await transaction.rollback()
        return False


def send_lock(campaign_id: uuid.UUID | str) -> SendLock:
    campaign = uuid.UUID(str(campaign_id))
    return SendLock(1, f"send lock of campaign {campaign}", lock_key(campaign))


def recipient(recipient_id: int | str) -> Row:
    return Row(2, f"recipient {recipient_id}", "recipients", "id", int(recipient_id))


def account(school_id: uuid.UUID | str) -> Row:
    school = uuid.UUID(str(school_id))
    return Row(3, f"provider account of school {school}", "provider_accounts", "school_id", school)


def opt_out(school_id: uuid.UUID | str, phone: str) -> OptOutRow:
    return OptOutRow(3, f"opt-out of {phone}", uuid.UUID(str(school_id)), phone)


def campaign(campaign_id: uuid.UUID | str) -> Row:
    campaign = uuid.UUID(str(campaign_id))
    return Row(4, f"campaign {campaign}", "campaigns", "id", campaign)


def send_locks(*campaign_ids: uuid.UUID | str) -> list[SendLock]:
    """Several campaigns' send locks, in the order they are taken: by key."""
    return sorted((send_lock(c) for c in campaign_ids), key=lambda lock: lock.key)


def campaigns(*campaign_ids: uuid.UUID | str) -> list[Row]:
    """Several campaigns' rows, in the order they are taken: by id."""
    return [campaign(c) for c in sorted(uuid.UUID(str(c)) for c in campaign_ids)]


@dataclass
class Probe:
    """A connection holding one resource in an open transaction, until `release`."""

    resource: Resource
    connection: asyncpg.Connection
    transaction: Any
    pid: int

    async def release(self) -> None:
        if not self.connection.is_closed():
            await self.transaction.rollback()
            await self.connection.close()


@dataclass
class Probes:
    """Probes on one database, and the connection that looks at what writers hold. Every
    connection is closed by `aclose` (its transaction, and so its locks, with it)."""

    dsn: str
    looker: asyncpg.Connection | None = None
    opened: list[asyncpg.Connection] = field(default_factory=list)

    async def connect(self) -> asyncpg.Connection:
        connection = await asyncpg.connect(self.dsn)
        self.opened.append(connection)
        return connection

    async def look(self) -> asyncpg.Connection:
        """The connection that looks (and sets data up), outside any transaction."""
        if self.looker is None:
            self.looker = await self.connect()
        return self.looker

    async def execute(self, query: str, *args: Any) -> str:
        status: str = await (await self.look()).execute(query, *args)
        return status

    async def aclose(self) -> None:
        for connection in self.opened:
            await connection.close()

    async def hold(self, resource: Resource) -> Probe:
        connection = await self.connect()
        transaction = connection.transaction()
        await transaction.start()
        await resource.hold(connection)
        pid = await connection.fetchval("SELECT pg_backend_pid()")
        return Probe(resource, connection, transaction, pid)

    async def waiting_for(self, probe: Probe, writer: asyncio.Future[Any]) -> int:
        """The pid of the writer once it waits for the probe's resource. Fails if the
        writer ends first, or does not wait for it within WAIT_SECONDS."""
        looker = await self.look()
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            waiting = await looker.fetch(
                """
                SELECT pid FROM pg_stat_activity
                WHERE datname = current_database() AND $1 = ANY(pg_blocking_pids(pid))
                """,
                probe.pid,
            )
            assert len(waiting) <= 1, f"several backends wait for {probe.resource}"
            if waiting:
                return int(waiting[0]["pid"])
            if writer.done():
                writer.result()  # its error, if any
                raise AssertionError(f"the writer finished without waiting for {probe.resource}")
            assert time.monotonic() < deadline, f"the writer did not wait for {probe.resource}"
            await asyncio.sleep(POLL_SECONDS)

    async def waiting(self, *, besides: Sequence[int]) -> int:
        """The pid of a backend that waits for a lock, other than `besides`: a second
        writer once it waits (for a probe or for another writer)."""
        looker = await self.look()
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            waiting = await looker.fetch(
                """
                SELECT pid FROM pg_stat_activity
                WHERE datname = current_database() AND pid <> ALL($1::int[])
                  AND cardinality(pg_blocking_pids(pid)) > 0
                """,
                list(besides),
            )
            assert len(waiting) <= 1, "several other backends wait for locks"
            if waiting:
                return int(waiting[0]["pid"])
            assert time.monotonic() < deadline, "no second writer waited for a lock"
            await asyncio.sleep(POLL_SECONDS)

    async def taken(self, pid: int, resources: Sequence[Resource]) -> list[Resource]:
        """Which of `resources` the writer `pid` holds (none of them a probe's)."""
        looker = await self.look()
        return [r for r in resources if await r.taken(looker, pid)]

    async def check(
        self, order: Sequence[Resource], at: Resource, writer: Callable[[], Awaitable[T]]
    ) -> T:
        """Run `writer` while a probe holds `at`, one of the resources it takes, in the
        order it must take them (`order`). Once it waits for `at`, it must hold every
        resource before `at` in `order`, and none after it. Then the probe lets go; the
        writer's result."""
        assert at in order
        probe = await self.hold(at)
        task = asyncio.ensure_future(writer())
        try:
            pid = await self.waiting_for(probe, task)
            others = [r for r in order if r != at]
            taken = await self.taken(pid, others)
            before = list(order[: order.index(at)])
            if taken != before:
                raise OrderBroken(
                    f"waiting for {at}, the writer holds [{', '.join(map(str, taken))}];"
                    f" it must hold [{', '.join(map(str, before))}]"
                )
        except BaseException:
            await probe.release()
            await settle(task)
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: the check's failure is the one to see
            raise
        await probe.release()
        await settle(task)
        assert not task.cancelled(), f"the writer did not finish once {at} was free"
        return task.result()


async def settle(*tasks: asyncio.Future[Any]) -> None:
    """Wait (at most WAIT_SECONDS) for tasks to end; one that does not is cancelled, so
    that nothing of the test runs on after it."""
    pending = [t for t in tasks if not t.done()]
    if pending:
        _, late = await asyncio.wait(pending, timeout=WAIT_SECONDS)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
