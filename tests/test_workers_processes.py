"""Real `campanile worker` processes, real commits, a fake Twilio answering from a thread.

Each test gets a database of its own on the test server (created, migrated to head, dropped
after), never the shared per-session one: the workers are other processes, so they only see
committed rows. The school (sending window off: tests run at any hour), its Twilio account
(`api_base` pointing at the fake), the contact list and the campaigns are made over the API,
by an in-process app bound to that database (`app.main.bind`, real commits), and launched;
from there only the worker processes touch the data.

The fake Twilio server (tests/fakes/twilio.py, wrapped here, not edited) runs its own event
loop in a thread, so it answers while a test sleeps, polls the database or waits for a
process. Each worker gets its own PUBLIC_BASE_URL, so the StatusCallback of every create the
fake receives names the worker process that sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import asyncpg
import httpx
import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from app.config import Settings
from app.events import render
from app.kit.crypto import new_secret_key
from app.main import bind, create_app, unbind
from tests.fakes.twilio import Answer, FakeTwilio, Life, Step
from tests.support.api import ADMIN, ADMIN_TOKEN
from tests.support.database import plain_url
from tests.support.receiver import Receiver

CAMPANILE = Path(sys.executable).with_name("campanile")
T = TypeVar("T")

BATCH = 100
# Settings of every worker process here (a test may add or override some).
WORKER_ENV = {
    "WORKER_POLL_SECONDS": "0.2",
    "WORKER_BATCH_SIZE": str(BATCH),
    "WORKER_CONCURRENCY": "50",
    # Sends the fake holds stay in their places (these tests count them against the
    # concurrency), never stepping aside as stragglers (`app.delivery.gate`).
    "WORKER_STRAGGLING_SECONDS": "3600",
    "LOG_LEVEL": "WARNING",
}
# Variables of the test run that must not reach a worker's settings.
NOT_INHERITED = {"DATABASE_URL", "TEST_DATABASE_URL", "SECRET_KEY", "ADMIN_TOKEN", "DATA_DIR"}
# Any hour (tests run at any time); retries after a second, so a recipient that is retried
# when it should not be shows up as a second attempt, not as a test waiting for a minute.
SCHOOL = {
    "name": "Worker High",
    "sending_window": None,
    "retry_policy": {"base_delay_seconds": 1, "max_delay_seconds": 1},
}
# What the worker loop logs (at ERROR) when a claim-send-record cycle raised.
STEP_FAILED = "step failed"


# -- the fake Twilio: paced, observable, in a thread of its own ----------------------------


def attempt_of(status_callback: str | None) -> int | None:
    """The attempt a StatusCallback names (`?attempt=<id>.<tag>`, README, Delivery)."""
    query = dict(parse_qsl((status_callback or "").partition("?")[2]))
    number = query.get("attempt", "").partition(".")[0]
    return int(number) if number.isdigit() else None


def sender_of(status_callback: str | None) -> str:
    """The worker that sent a message, as its StatusCallback names it (its PUBLIC_BASE_URL
    and the path, without the query that names the message's attempt)."""
    return (status_callback or "").partition("?")[0]


@dataclass
class PacedTwilio(FakeTwilio):
    """FakeTwilio with a delay on every create, a count of creates in progress, a start
    barrier: creates are held until `barrier` distinct senders (StatusCallback URLs) have
    called, or for `barrier_seconds` at most, so several workers all get going; and a hold:
    the creates that come after the first `hold_after` are held, their bodies in, until
    `release`, so a test acts on a worker with those creates in flight, however slow the
    machine."""

    delay: float = 0.0
    barrier: int = 0
    barrier_seconds: float = 8.0
    in_flight: int = 0
    senders: set[str] = field(default_factory=set)
    hold_after: int | None = None
    arrived: int = 0  # create calls received, held or not
    held: int = 0  # create calls held now
    # Creates in flight by the sender's TCP port: which process has sends in flight.
    in_flight_ports: Counter[int] = field(default_factory=Counter)
    # Each create as it ended: To, the attempt its StatusCallback names, when it arrived and
    # when it was answered (wall clock): a failure message shows them.
    timings: list[tuple[str, int | None, float, float]] = field(default_factory=list)
    _open: asyncio.Event | None = None
    _released: asyncio.Event | None = None

    def _next_answer(self, to: str) -> Answer:
        answer = super()._next_answer(to)
        return replace(answer, delay=self.delay) if answer == Answer() else answer

    async def _create(self, request: Request) -> Response:
        self.in_flight += 1
        self.arrived += 1
        port = request.client.port if request.client else 0
        self.in_flight_ports[port] += 1
        arrived = time.time()
        try:
            if self.hold_after is not None and self.arrived > self.hold_after:
                await self._hold(request)
            if self.barrier:
                await self._pass_barrier(request)
            return await super()._create(request)
        except ClientDisconnect:
            # A killed worker's request whose body never fully arrived: no message, as at
            # Twilio (and not recorded as a create).
            return Response(status_code=499)
        finally:
            self.in_flight -= 1
            self.in_flight_ports[port] -= 1
            if not self.in_flight_ports[port]:
                del self.in_flight_ports[port]
            with contextlib.suppress(ClientDisconnect):
                form = dict(parse_qsl((await request.body()).decode("utf-8")))
                attempt = attempt_of(form.get("StatusCallback"))
                self.timings.append((form.get("To", ""), attempt, arrived, time.time()))

    async def _pass_barrier(self, request: Request) -> None:
        if self._open is None:
            self._open = asyncio.Event()
        form = dict(parse_qsl((await request.body()).decode("utf-8")))  # cached for _create
        self.senders.add(sender_of(form.get("StatusCallback")))
        if len(self.senders) >= self.barrier:
            self._open.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._open.wait(), self.barrier_seconds)
        self._open.set()  # after a timeout too: the barrier only holds the start

    async def _hold(self, request: Request) -> None:
        if self._released is None:
            self._released = asyncio.Event()
        await request.body()  # in whole (cached for _create), whatever becomes of its sender
        self.held += 1
        try:
            await self._released.wait()
        finally:
            self.held -= 1

    def release(self) -> None:
        """Let the held creates go on (to their delay, then their answer), and hold no more."""
        self.hold_after = None
        if self._released is not None:
            self._released.set()

    async def stop(self) -> None:
        self.release()  # nothing held past the test
        await super().stop()


@dataclass(frozen=True)
class Seen:
    """What the fake has received so far: a consistent copy, taken in its own thread."""

    creates: list[tuple[str, str]]  # (To, sender) of each authenticated create, in order
    unauthenticated: int
    sids: dict[str, list[str]]  # To -> sids of the messages the fake holds
    listed: set[str]  # To of every list request (find_sent)
    in_flight: int
    held: int
    in_flight_ports: dict[int, int] = field(default_factory=dict)

    def per_number(self) -> Counter[str]:
        return Counter(to for to, _ in self.creates)

    def per_sender(self) -> Counter[str]:
        return Counter(sender for _, sender in self.creates)


class TwilioThread:
    """A PacedTwilio serving from its own event loop in a background thread."""

    def __init__(self, fake: PacedTwilio) -> None:
        self.fake = fake
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-twilio")

    def start(self) -> None:
        self._thread.start()
        self._run(self.fake.start())

    def stop(self) -> None:
        try:
            self._run(self.fake.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(30)

    def call(self, action: Callable[[PacedTwilio], T]) -> T:
        """`action(fake)`, run in the fake's thread (no torn reads of its lists)."""

        async def run() -> T:
            return action(self.fake)

        return self._run(run())

    def seen(self) -> Seen:
        def copy(fake: PacedTwilio) -> Seen:
            sids: dict[str, list[str]] = {}
            for message in fake.messages:
                sids.setdefault(message["to"], []).append(message["sid"])
            return Seen(
                creates=[
                    (r.to or "", sender_of(r.status_callback))
                    for r in fake.requests
                    if r.authenticated
                ],
                unauthenticated=sum(1 for r in fake.requests if not r.authenticated),
                sids=sids,
                listed={query.get("To", "") for query in fake.list_requests},
                in_flight=fake.in_flight,
                held=fake.held,
                in_flight_ports=dict(fake.in_flight_ports),
            )

        return self.call(copy)

    def pace(self, delay: float, barrier: int = 0) -> None:
        def change(fake: PacedTwilio) -> None:
            fake.delay = delay
            fake.barrier = barrier

        self.call(change)

    def hold(self, after: int) -> None:
        """Hold the creates that come after the first `after` ones, until `release`."""

        def change(fake: PacedTwilio) -> None:
            fake.hold_after = after

        self.call(change)

    def release(self) -> None:
        self.call(PacedTwilio.release)

    def settled(self, within: float) -> None:
        """Wait until every message's life has run its course (`FakeTwilio.settled`)."""
        self._run(self.fake.settled(within))


@pytest.fixture
def twilio() -> Iterator[TwilioThread]:
    server = TwilioThread(PacedTwilio())
    server.start()
    yield server
    server.stop()


# -- a database of the test's own, and the campaigns in it ---------------------------------


@pytest.fixture
async def db(own_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """The test's own connection to the workers' database, for looking at the outcome."""
    connection = await asyncpg.connect(plain_url(own_database_url))
    yield connection
    await connection.close()


@pytest.fixture
def secret_key() -> str:
    return new_secret_key()


@dataclass(frozen=True)
class Launched:
    api_key: str
    campaign_ids: list[str]


def phones(count: int) -> list[str]:
    return [f"+1312555{i:04d}" for i in range(count)]


async def launch(
    url: str,
    secret_key: str,
    twilio: TwilioThread,
    count: int,
    *,
    body: str = "Hi {first_name}, school is closed tomorrow.",
    campaigns: int = 1,
    endpoint: str | None = None,
) -> Launched:
    """Over the API, committed: a school on the fake Twilio (its webhook endpoint at
    `endpoint`, if given, taking every event), a list of `count` contacts, and `campaigns`
    campaigns to that list with this body, launched in turn. Raises RuntimeError (set-up,
    not the behaviour under test) when the API refuses."""
    settings = Settings(
        database_url=url,
        secret_key=secret_key,
        admin_token=ADMIN_TOKEN,
        events_allow_private_urls=endpoint is not None,
    )
    app = create_app(settings)
    bind(app, settings)
    fake = twilio.fake
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            async def call(path: str, json: Any, headers: dict[str, str], put: bool = False) -> Any:
                response = await client.request(
                    "PUT" if put else "POST", path, json=json, headers=headers
                )
                if response.status_code not in (200, 201):
                    raise RuntimeError(f"{path}: {response.status_code} {response.text}")
                return response.json()

            school = await call("/v1/admin/schools", SCHOOL, ADMIN)
            auth = {"Authorization": f"Bearer {school['api_key']}"}
            account = {
                "provider": "twilio",
                "account_sid": fake.account_sid,
                "auth_token": fake.auth_token,
                "from_number": fake.from_number,
                "api_base": fake.url,
            }
            await call("/v1/school/provider", account, auth, put=True)
            if endpoint is not None:
                await call("/v1/webhook-endpoints", {"url": endpoint, "events": None}, auth)
            contact_list = await call("/v1/contact-lists", {"name": "Families"}, auth)
            contacts = [
                {"phone": phone, "first_name": f"Kid{i}"} for i, phone in enumerate(phones(count))
            ]
            path = f"/v1/contact-lists/{contact_list['id']}/contacts"
            imported = await call(path, {"contacts": contacts}, auth)
            if imported["rejected"]:
                raise RuntimeError(f"contacts rejected: {imported['rejected'][:3]}")
            launched_ids: list[str] = []
            for n in range(campaigns):
                campaign = await call(
                    "/v1/campaigns",
                    {"name": f"Notice {n}", "body": body, "contact_list_id": contact_list["id"]},
                    auth,
                )
                launched = await call(f"/v1/campaigns/{campaign['id']}/launch", None, auth)
                if launched["status"] != "active":
                    raise RuntimeError(f"launched, yet {launched['status']}")
                launched_ids.append(campaign["id"])
            return Launched(school["api_key"], launched_ids)
    finally:
        await unbind(app)


@dataclass(frozen=True)
class Row:
    """One recipient as the workers left it, with its attempts (oldest first)."""

    phone: str
    status: str
    attempts: int
    due: datetime | None
    leased: bool  # due in the future: claimed by a worker
    tries: tuple[tuple[str, str | None], ...]  # (attempt status, provider message id)


async def recipient_rows(db: asyncpg.Connection) -> list[Row]:
    records = await db.fetch(
        """SELECT r.phone, r.status, r.attempts, r.next_attempt_at,
                  coalesce(r.next_attempt_at > now(), false) AS leased,
                  array_agg(a.status ORDER BY a.id) FILTER (WHERE a.id IS NOT NULL) AS statuses,
                  array_agg(a.provider_message_id ORDER BY a.id)
                      FILTER (WHERE a.id IS NOT NULL) AS sids
           FROM recipients r LEFT JOIN attempts a ON a.recipient_id = r.id
           GROUP BY r.id ORDER BY r.id"""
    )
    return [
        Row(
            phone=record["phone"],
            status=record["status"],
            attempts=record["attempts"],
            due=record["next_attempt_at"],
            leased=record["leased"],
            tries=tuple(zip(record["statuses"] or [], record["sids"] or [], strict=True)),
        )
        for record in records
    ]


async def handed_over(db: asyncpg.Connection) -> int:
    """Recipients done with: nothing due, and an attempt with a provider message id."""
    count: int = await db.fetchval(
        """SELECT count(*) FROM recipients r
           WHERE r.next_attempt_at IS NULL AND EXISTS (
               SELECT 1 FROM attempts a
               WHERE a.recipient_id = r.id AND a.provider_message_id IS NOT NULL)"""
    )
    return count


def sent_once(row: Row, sid: str) -> bool:
    """Still in Queue, nothing due, and one attempt, recorded with this message id."""
    return (row.status, row.attempts, row.due, row.tries) == ("queued", 1, None, (("queued", sid),))


def assert_each_sent_once(seen: Seen, numbers: list[str], rows: list[Row]) -> None:
    """Each number got exactly one create, the fake holds one message for it, and its
    recipient is Still in Queue with one attempt recorded with that message's sid."""
    assert seen.unauthenticated == 0
    per_number = seen.per_number()
    assert {to: n for to, n in per_number.items() if n != 1} == {}, "numbers sent twice"
    assert sorted(per_number) == sorted(numbers), "numbers never sent"
    assert all(len(seen.sids.get(number, [])) == 1 for number in numbers)
    assert sorted(row.phone for row in rows) == sorted(numbers)
    wrong = [row for row in rows if not sent_once(row, seen.sids[row.phone][0])]
    assert wrong == [], f"{len(wrong)} recipients not as expected, e.g. {wrong[:3]}"


# -- worker processes ----------------------------------------------------------------------


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    ending: bool = False  # signalled by the test: its exit is expected

    def signal(self, signum: int) -> None:
        self.ending = True
        self.process.send_signal(signum)

    @property
    def sender(self) -> str:
        """The StatusCallback of this worker's creates (from its PUBLIC_BASE_URL)."""
        return f"http://{self.name}.workers.test/v1/webhooks/twilio/status"

    def alive(self) -> bool:
        return self.process.poll() is None

    async def exited(self, within: float) -> int | None:
        """The exit status if the process ends within `within` s; None if it still runs."""
        try:
            return await asyncio.to_thread(self.process.wait, within)
        except subprocess.TimeoutExpired:
            return None


class Workers:
    """`campanile worker` processes on the test's database, killed at the end if alive."""

    def __init__(self, tmp_path: Path, url: str, secret_key: str) -> None:
        self._tmp_path = tmp_path
        self._url = url
        self._secret_key = secret_key
        self.started: list[Worker] = []

    def start(self, name: str, **settings: str) -> Worker:
        env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        env.pop("PUBLIC_BASE_URL", None)  # each worker's own, unless the test gives one
        env.update(WORKER_ENV)
        env.update(settings)
        env["DATABASE_URL"] = self._url
        env["SECRET_KEY"] = self._secret_key
        env.setdefault("PUBLIC_BASE_URL", f"http://{name}.workers.test")
        log = self._tmp_path / f"{name}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [str(CAMPANILE), "worker"],
                env=env,
                cwd=self._tmp_path,  # no stray .env
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(name, process, log)
        self.started.append(worker)
        return worker

    def logs(self) -> str:
        return "\n".join(
            f"--- {w.name} (exit {w.process.poll()}):\n{w.log.read_text(errors='replace')}"
            for w in self.started
        )

    def stop_all(self) -> None:
        for worker in self.started:
            if worker.alive():
                worker.process.kill()
            worker.process.wait(10)

    async def wait_until(
        self,
        check: Callable[[], Awaitable[bool]],
        within: float,
        what: str,
        every: float = 0.02,
        error: type[Exception] = AssertionError,
    ) -> None:
        """Poll `check` every `every` s; raise `error` with the workers' logs after `within`
        s, or at once when a worker died unasked or logged a failed step."""
        deadline = time.monotonic() + within
        while not await check():
            dead = [w.name for w in self.started if not w.ending and not w.alive()]
            failed = STEP_FAILED in self.logs()
            if dead or failed or time.monotonic() > deadline:
                problem = f"exited: {dead}" if dead else STEP_FAILED if failed else "timed out"
                raise error(f"not {what} ({problem})\n{self.logs()}")
            await asyncio.sleep(every)


@pytest.fixture
def workers(tmp_path: Path, own_database_url: str, secret_key: str) -> Iterator[Workers]:
    group = Workers(tmp_path, own_database_url, secret_key)
    yield group
    group.stop_all()


async def stop(workers: Workers, *started: Worker) -> None:
    """SIGTERM, then a clean exit (status 0) within a few seconds."""
    for worker in started:
        worker.signal(signal.SIGTERM)
    for worker in started:
        assert await worker.exited(10) == 0, workers.logs()


# -- the tests -----------------------------------------------------------------------------


async def test_two_workers_share_the_queue_and_send_each_recipient_once(
    own_database_url: str,
    db: asyncpg.Connection,
    secret_key: str,
    twilio: TwilioThread,
    workers: Workers,
) -> None:
    count = 2000
    # The barrier: neither worker's first batch gets answers before the other has sent.
    twilio.pace(delay=0.0, barrier=2)
    await launch(own_database_url, secret_key, twilio, count)
    pair = workers.start("worker-a"), workers.start("worker-b")

    async def all_handed_over() -> bool:
        return await handed_over(db) == count

    await workers.wait_until(all_handed_over, 240, "all handed over", every=0.25)
    await stop(workers, *pair)

    seen = twilio.seen()
    assert_each_sent_once(seen, phones(count), await recipient_rows(db))
    per_sender = seen.per_sender()
    assert sorted(per_sender) == sorted(w.sender for w in pair), per_sender
    for worker in pair:
        # At least the first batch each: the barrier held it until both had sent.
        assert per_sender[worker.sender] >= BATCH, per_sender
    print(f"creates per worker: {sorted(per_sender.values())}")


async def test_two_workers_post_each_event_to_an_endpoint_once(
    own_database_url: str,
    db: asyncpg.Connection,
    secret_key: str,
    twilio: TwilioThread,
    workers: Workers,
) -> None:
    """Two `campanile worker` processes, each with its webhook deliverer: every event of the
    campaign (its launch, each recipient's outcome) reaches the school's endpoint, each
    once (SPEC 9.1: at least once, exactly once in the normal case), and every delivery is
    recorded delivered."""
    count = 300
    receiver = Receiver()
    await receiver.start()
    try:
        await launch(own_database_url, secret_key, twilio, count, endpoint=receiver.url)
        private = {"EVENTS_ALLOW_PRIVATE_URLS": "true", "EVENTS_POLL_SECONDS": "0.1"}
        pair = workers.start("worker-a", **private), workers.start("worker-b", **private)

        async def all_handed_over() -> bool:
            return await handed_over(db) == count

        await workers.wait_until(all_handed_over, 240, "all handed over", every=0.25)
        # Each recipient's outcome, as receipts would leave it, in statements of 100 (the
        # outbox writes an event for each, whoever makes the change).
        for first in range(0, count, 100):
            await db.execute(
                """UPDATE recipients SET status = 'delivered', delivery_confirmed = true
                   WHERE id IN (SELECT id FROM recipients ORDER BY id OFFSET $1 LIMIT 100)""",
                first,
            )
        written = {
            render.public_id(row["id"], row["public_id"])
            for row in await db.fetch("SELECT id, public_id FROM events")
        }

        async def all_delivered() -> bool:
            return len(receiver.posts) >= len(written) and not await db.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE status <> 'delivered'"
            )

        await workers.wait_until(all_delivered, 120, "every event delivered", every=0.25)
        await asyncio.sleep(1.0)  # time for a post too many, if one was made
        await stop(workers, *pair)
    finally:
        await receiver.stop()
    posted = [headers["webhook-id"] for headers, _ in receiver.posts]
    assert sorted(posted) == sorted(written)  # each event once, none twice
    assert len(written) == count + 1  # the launch's, and each recipient's outcome
    assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") == len(written)


async def test_a_killed_worker_s_batch_is_recovered_without_resending(
    own_database_url: str,
    db: asyncpg.Connection,
    secret_key: str,
    twilio: TwilioThread,
    workers: Workers,
) -> None:
    count = 300
    # The claiming worker writes the lease: short here, yet longer than a batch (2 x 0.8 s).
    lease = {"WORKER_LEASE_SECONDS": "3"}
    twilio.pace(delay=0.8)
    twilio.hold(after=BATCH)  # batch 2's creates wait at the fake until the worker is dead
    await launch(own_database_url, secret_key, twilio, count)

    doomed = workers.start("worker-doomed", **lease)
    concurrency = int(WORKER_ENV["WORKER_CONCURRENCY"])

    async def second_batch_under_way() -> bool:
        # Batch 1 recorded (the worker records it while batch 2 is sent); of batch 2, the
        # first 50 creates held at the fake, the other 50 claimed and waiting for a turn.
        return twilio.seen().held == concurrency and await handed_over(db) == BATCH

    await workers.wait_until(second_batch_under_way, 60, "in its second batch")
    doomed.signal(signal.SIGKILL)
    assert await doomed.exited(5) == -signal.SIGKILL
    assert twilio.seen().in_flight > 0, "no create was in flight when the worker died"
    twilio.release()

    async def fake_idle() -> bool:
        return twilio.seen().in_flight == 0

    # The dead worker's creates still complete at the fake, as they would at Twilio: those
    # messages exist; only their sids never reached the database.
    await workers.wait_until(fake_idle, 5, "done with the dead worker's creates")
    at_kill = twilio.seen()
    recorded = {row.phone for row in await recipient_rows(db) if any(s for _, s in row.tries)}
    orphans = set(at_kill.per_number()) - recorded
    assert orphans, "every create that reached the fake was recorded: the kill came too late"
    assert len(recorded) == BATCH

    twilio.pace(delay=0.0)
    heir = workers.start("worker-heir", **lease)

    async def all_handed_over() -> bool:
        return await handed_over(db) == count

    await workers.wait_until(all_handed_over, 60, "all handed over", every=0.1)
    await stop(workers, heir)

    seen = twilio.seen()
    # One create each: the orphans' messages were found (and recorded with their sids),
    # the claimed-but-unsent of the dead batch were sent by the heir, none was lost.
    assert_each_sent_once(seen, phones(count), await recipient_rows(db))
    assert orphans <= seen.listed, "an orphan was not looked up with find_sent"
    heir_sent = {to for to, sender in seen.creates if sender == heir.sender}
    assert not orphans & heir_sent
    assert len(heir_sent) == count - BATCH - len(orphans)
    print(f"orphans found by find_sent: {len(orphans)}; sent by the heir: {len(heir_sent)}")


async def test_sigterm_mid_batch_exits_cleanly_and_releases_unsent_recipients(
    own_database_url: str,
    db: asyncpg.Connection,
    secret_key: str,
    twilio: TwilioThread,
    workers: Workers,
) -> None:
    count = 200
    twilio.pace(delay=0.6)
    twilio.hold(after=10)  # the second round waits at the fake until the SIGTERM is sent
    await launch(own_database_url, secret_key, twilio, count)

    # Ten sends at a time: a batch of 100 takes ten rounds of 0.6 s. The default lease
    # (300 s): a recipient left leased would not be due again during this test.
    worker = workers.start("worker-stopping", WORKER_CONCURRENCY="10")

    async def second_round_under_way() -> bool:
        return twilio.seen().held == 10

    await workers.wait_until(second_round_under_way, 60, "in its second round of sends")
    worker.signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert twilio.seen().in_flight > 0, "no create was in flight at the SIGTERM"
    twilio.release()  # answered 0.6 s on, as the worker stops
    # Generous for a loaded machine: what shows that it did not finish its batch first is
    # below (fewer than a batch went out), not the time.
    assert await worker.exited(10) == 0, workers.logs()
    stopped_after = time.monotonic() - signalled

    seen = twilio.seen()
    sent = seen.per_number()
    assert set(sent.values()) == {1}
    # The first claim took a whole batch and fewer than that went out: the rest of the
    # batch was released, as was everything else.
    assert len(sent) < BATCH, sent
    for row in await recipient_rows(db):
        if row.phone in sent:  # handed over before the stop: recorded
            assert sent_once(row, seen.sids[row.phone][0]), row
        else:  # never handed over: no attempt left behind, not leased, due now
            assert (row.status, row.attempts, row.tries, row.leased) == ("queued", 0, (), False)
            assert row.due is not None, row
    print(f"stopped {stopped_after:.2f} s after SIGTERM; sent {len(sent)} of {count}")

    # Released recipients are due again at once: another worker sends each, once.
    twilio.pace(delay=0.0)
    finisher = workers.start("worker-finisher")

    async def all_handed_over() -> bool:
        return await handed_over(db) == count

    await workers.wait_until(all_handed_over, 60, "all handed over", every=0.1)
    await stop(workers, finisher)
    assert_each_sent_once(twilio.seen(), phones(count), await recipient_rows(db))


async def test_recovery_never_gives_one_message_to_two_recipients(
    own_database_url: str,
    db: asyncpg.Connection,
    secret_key: str,
    twilio: TwilioThread,
    workers: Workers,
) -> None:
    # A school-wide notice to one list in two campaigns (say, two grades that share
    # parents): each number has two recipients with the same body.
    numbers = 50
    count = 2 * numbers
    lease = {"WORKER_LEASE_SECONDS": "2", "WORKER_CONCURRENCY": str(count)}
    twilio.hold(after=0)  # the whole batch waits at the fake until the worker is dead
    await launch(
        own_database_url, secret_key, twilio, numbers, body="No school tomorrow.", campaigns=2
    )

    doomed = workers.start("worker-doomed", **lease)

    async def all_at_the_fake() -> bool:
        return twilio.seen().held == count  # the whole batch

    # Set-up failures are not the expected failure: RuntimeError, not AssertionError.
    await workers.wait_until(all_at_the_fake, 60, "all at the fake", error=RuntimeError)
    doomed.signal(signal.SIGKILL)
    if await doomed.exited(5) != -signal.SIGKILL or await handed_over(db) != 0:
        raise RuntimeError(f"the kill did not leave the whole batch unrecorded\n{workers.logs()}")
    # The dead worker's creates complete at the fake, as they would at Twilio: the messages
    # exist before the heir looks for them.
    twilio.release()

    async def fake_idle() -> bool:
        return twilio.seen().in_flight == 0

    await workers.wait_until(fake_idle, 5, "done with the dead worker's creates")
    heir = workers.start("worker-heir", **lease)

    async def all_handed_over() -> bool:
        return await handed_over(db) == count

    # At 5450f8b this fails at the heir's first record (`step failed`: UniqueViolation),
    # and would at every lease after: nothing of the batch is ever recorded.
    await workers.wait_until(all_handed_over, 60, "all handed over", every=0.1)
    heir.signal(signal.SIGTERM)
    if await heir.exited(10) != 0:
        raise RuntimeError(f"the heir did not stop cleanly\n{workers.logs()}")

    seen = twilio.seen()
    per_number = seen.per_number()
    assert {to: n for to, n in per_number.items() if n != 2} == {}, "numbers sent again"
    rows = await recipient_rows(db)
    # Each recipient holds one of its number's two messages, with one attempt.
    assert all(row.attempts == 1 and len(row.tries) == 1 for row in rows), rows
    assert sorted(sid or "" for row in rows for _, sid in row.tries) == sorted(
        sid for found in seen.sids.values() for sid in found
    )


# -- kill -9 mid-send, again and again, with the receipts coming through an API process ----

# The Twilio code table the service ships: a receipt's code means what it says here.
TWILIO_CODES: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent.parent / "app/providers/twilio/codes.json").read_text()
)
# Workers that keep a few sends in flight (2 places; a send unanswered after 0.3 s steps
# aside among the 8 stragglers beside them: `app.delivery.gate`), so a campaign of a few
# hundred takes long enough to be killed in several times. The lease must outlast what a
# live worker holds unrecorded, from its claim to the last answer (a batch, the gate's
# bound and a batch claimed ahead, `Engine.run_pipelined`, at 0.4-2.5 s a send: a few
# seconds): it runs out on a dead worker's recipients, never under a live one still
# sending. Nothing renews a lease: one that runs out while its send is in flight lets
# another worker look for a message Twilio has not answered for yet, and send it again.
KILL_ENV = {
    "WORKER_CONCURRENCY": "8",
    "WORKER_BATCH_SIZE": "10",
    "WORKER_STRAGGLING_SECONDS": "0.3",
    # Longer than a live worker holds a claimed recipient before its send starts (a batch
    # waiting behind the one in its places): a lease that runs out under a send about to
    # start is a second send by design (README, Delivery), not what this test is about.
    "WORKER_LEASE_SECONDS": "15",
    "RECEIPTS_POLL_SECONDS": "0.1",
    # A callback the overloaded API process failed to take is looked up by its message id
    # (README, Receipts that never come), as in production, only sooner.
    "RECONCILE_AFTER_SECONDS": "10",
    "LOG_LEVEL": "INFO",  # the recoveries' lines (`app.delivery.recover`) are counted
}
BODY = "Hi {first_name}, school is closed tomorrow."
NAMED_RECOVERY = "(a receipt named it): not sent again"
FOUND_RECOVERY = ": not sent again"
CANT_TELL = "cannot tell whether it went out"


def tcp_ports(pid: int) -> set[int]:
    """The local ports of a process's TCP sockets (Linux /proc): the creates in flight at
    the fake from these ports are that process's."""
    inodes: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return set()
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                columns = line.split()
                if len(columns) > 9 and columns[9] in inodes:
                    ports.add(int(columns[1].rpartition(":")[2], 16))
    return ports


@dataclass(frozen=True)
class Parent:
    """One parent of the crash test: how slowly Twilio answers their create, whether it
    takes the message before answering, the lives of the messages sent to them in turn
    (a soft failure is retried: one more message, legitimately), and their older messages
    from the school's number."""

    phone: str
    text: str
    delay: float
    accepted_first: bool
    lives: tuple[Life, ...]
    older: int
    older_same_text: int
    older_queued: bool


def parent(i: int, phone: str) -> Parent:
    """Deterministic per number: answers 0.4-2.5 s late (a third of the messages taken
    before the answer, the others when it comes); mostly delivered, with late, repeated
    and lost callbacks, a third held in Twilio's queue for 18 s (no receipt names their
    attempt when the lease runs out: a recovery must look them up, and find them queued,
    with no `date_sent`); some undelivered or failed with a hard code, some with a soft one
    and then delivered or hard-failed on the retry; half the parents with 30 older
    messages, a quarter with 10 of those of this very text."""
    quick = Life.delivered(every=0.2)
    # Held in Twilio's queue for 18 s (no `date_sent`): past the lease, so no receipt
    # names a killed worker's attempt when its recovery comes.
    held = Life((Step("sent", after=18), Step("delivered", after=1)))
    # Sent after 10 s without a word, delivered 12 s later: the recovery of a killed
    # worker's attempt, however late it comes, finds no receipt naming it, and must find
    # its message in the list.
    unheard = Life((Step("sent", after=10, copies=0), Step("delivered", after=12)))
    lives: dict[int, tuple[Life, ...]] = {
        1: (quick.late("sent", 1.5),),  # `delivered` overtakes `sent`
        2: (quick.repeat("delivered"),),
        3: (quick.lose("sent"),),
        4: (held,),
        5: (unheard,),
        6: (held.repeat("sent"),),
        7: (held.late("sent", 0.5),),
        8: (held,),
        13: (Life.undelivered(30003, every=0.2),),
        14: (Life.undelivered(30005, every=0.2).late("sent", 1.0),),
        15: (Life.failed(30008, every=0.3),),
        16: (Life((Step("sent", after=18), Step("undelivered", 30003, after=1))),),
        17: (Life.undelivered(30017, every=0.2), quick),  # soft, then delivered
        18: (Life.failed(30500, every=0.2), Life.undelivered(30003, every=0.2)),
        19: (unheard,),
    }
    text = BODY.format(first_name=f"Kid{i}")
    return Parent(
        phone=phone,
        text=text,
        delay=0.4 + 2.1 * ((i * 37) % 100) / 99,
        accepted_first=i % 3 == 0,
        lives=lives.get(i % 20, (quick,)),
        older=30 if i % 2 == 0 else 0,
        older_same_text=10 if i % 4 == 0 else 0,
        older_queued=i % 8 == 0,
    )


def prepare(fake: PacedTwilio, parents: list[Parent], now: datetime) -> set[str]:
    """The fake's answers, lives and older messages for these parents; the older
    messages' sids. An older message was sent between 2 minutes and 30 days ago (one,
    with the same text, still in Twilio's queue from an hour ago: no `date_sent`)."""
    older: set[str] = set()
    for p in parents:
        fake.always(p.phone, Answer(delay=p.delay, created=True, accepted_first=p.accepted_first))
        fake.script_life(p.phone, *p.lives)
        for k in range(p.older):
            same = k < p.older_same_text
            queued = same and k == 0 and p.older_queued
            ago = timedelta(hours=1) if queued else timedelta(minutes=2 + (k * 1447) % 43_000)
            sid = fake.add_message(
                p.phone,
                p.text if same else f"Reminder {k}: bring your form back.",
                created_at=now - ago,
                status="queued" if queued else "delivered",
            )
            older.add(sid)
    return older


@dataclass
class ApiProcess:
    """`campanile serve --no-worker` on the test's database: it takes the fake's status
    callbacks, checks their signatures over PUBLIC_BASE_URL + path + query, stores them;
    the workers apply them."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def logs(self) -> str:
        return f"--- api (exit {self.process.poll()}):\n{self.log.read_text(errors='replace')}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_api(tmp_path: Path, url: str, secret_key: str) -> ApiProcess:
    """`campanile serve --no-worker` on a free port, its PUBLIC_BASE_URL its own address."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update(
        DATABASE_URL=url,
        SECRET_KEY=secret_key,
        ADMIN_TOKEN=ADMIN_TOKEN,
        PUBLIC_BASE_URL=base_url,
        LOG_LEVEL="WARNING",
    )
    log = tmp_path / "api.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(CAMPANILE), "serve", "--no-worker", "--port", str(port)],
            env=env,
            cwd=tmp_path,  # no stray .env
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return ApiProcess(base_url, process, log)


@pytest.fixture
async def api(tmp_path: Path, own_database_url: str, secret_key: str) -> AsyncIterator[ApiProcess]:
    server = start_api(tmp_path, own_database_url, secret_key)
    url, process = server.url, server.process
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"serve exited at start-up\n{server.logs()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{url}/readyz")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"serve not ready in 60 s\n{server.logs()}")
                await asyncio.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@dataclass(frozen=True)
class Kill:
    worker: str
    at: float  # seconds since the workers started
    in_flight: int  # the worker's creates in flight at the fake when it was killed


@pytest.mark.parametrize(
    ("placement", "count", "kills_wanted"),
    [("last", 160, 4), ("first", 100, 3)],
    ids=["queued-last-160", "queued-first-100"],
)
async def test_workers_killed_mid_send_again_and_again_send_each_parent_one_message(
    placement: str,
    count: int,
    kills_wanted: int,
    own_database_url: str,
    db: asyncpg.Connection,
    secret_key: str,
    twilio: TwilioThread,
    workers: Workers,
    api: ApiProcess,
) -> None:
    """Issue 11's crash, as the issue tried it: a campaign through a fake that keeps
    Twilio's list order (queued messages, with no `date_sent`, `first` or `last`; pages of
    20), half the parents with 30 older messages from the school's number (some of this
    very text, one still queued), creates answered 0.4-2.5 s late, signed status callbacks
    to an API process (`serve --no-worker`) with late, repeated and lost ones; two workers,
    one of them SIGKILLed while it has creates in flight at the fake, and started again,
    several times. README, Delivery: a crash does not send twice; a receipt naming the
    attempt settles a recovery, else Twilio's list is read whole (What each provider can
    promise about duplicates).

    The rules: each parent's number got exactly one message per attempt their receipts
    allow (one, or two where the first failed soft and was retried, README, Delivery:
    Retries), each message is one of the recipient's attempts, in order, with the status
    the fake holds it in; the recipient ends as the last message's receipts say (delivered;
    or failed with the code table's reason and the code), through the API too; the
    campaign completes."""
    started = time.monotonic()
    numbers = phones(count)
    parents = [parent(i, phone) for i, phone in enumerate(numbers)]
    by_phone = {p.phone: p for p in parents}

    def set_up(fake: PacedTwilio) -> set[str]:
        fake.queued_placement = placement
        fake.max_page_size = 20
        fake.callbacks = True
        return prepare(fake, parents, datetime.now(UTC))

    older = twilio.call(set_up)
    launched = await launch(own_database_url, secret_key, twilio, count, body=BODY)
    [campaign_id] = launched.campaign_ids
    env = {**KILL_ENV, "PUBLIC_BASE_URL": api.url}

    def everything_logs() -> str:
        return f"{workers.logs()}\n{api.logs()}"

    current = {role: workers.start(f"worker-{role}1", **env) for role in "ab"}
    began = time.monotonic()

    async def unsent() -> int:
        waiting: int = await db.fetchval(
            "SELECT count(*) FROM recipients WHERE status IN ('queued', 'scheduled')"
        )
        return waiting

    rng = random.Random(11)
    kills: list[Kill] = []
    for k in range(kills_wanted):
        role = "ab"[k % 2]
        victim = current[role]
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        caught = 0

        async def victim_sending(pid: int = victim.process.pid) -> bool:
            nonlocal caught
            ports = tcp_ports(pid)
            in_flight = twilio.seen().in_flight_ports
            caught = sum(in_flight.get(port, 0) for port in ports)
            return caught > 0 or await unsent() == 0

        # A worker just started may take long to import on a busy machine: set-up, not the
        # behaviour under test (RuntimeError).
        await workers.wait_until(
            victim_sending, 90, f"sending in {victim.name}", every=0.01, error=RuntimeError
        )
        if not caught:
            break  # nothing left to send: no kill catches a send in flight any more
        victim.signal(signal.SIGKILL)
        if await victim.exited(5) != -signal.SIGKILL:
            raise RuntimeError(f"{victim.name} did not die of SIGKILL\n{everything_logs()}")
        kills.append(Kill(victim.name, time.monotonic() - began, caught))
        current[role] = workers.start(f"worker-{role}{k + 2}", **env)
    if len(kills) < min(3, kills_wanted):
        raise RuntimeError(f"the campaign ended after {len(kills)} kills\n{everything_logs()}")
    last_kill = time.monotonic()

    async def all_final() -> bool:
        open_: int = await db.fetchval(
            "SELECT count(*) FROM recipients WHERE status NOT IN ('delivered', 'failed')"
        )
        unapplied: int = await db.fetchval("SELECT count(*) FROM receipts WHERE applied_at IS NULL")
        return open_ == 0 and unapplied == 0

    try:
        await workers.wait_until(all_final, 120, "every recipient final", every=0.25)
        # Every life has run its course (a late or repeated callback may still be coming):
        # then every receipt the API stored is applied.
        twilio.settled(25)
        await workers.wait_until(all_final, 30, "every receipt applied", every=0.25)
    except AssertionError as failure:
        rows = await recipient_rows(db)
        stuck = [row for row in rows if row.status not in ("delivered", "failed")]
        stuck_sids = {sid for row in stuck[:5] for _, sid in row.tries}
        # The callbacks of their messages, with the answer each got (a lost or refused
        # callback leaves a recipient waiting for reconciliation: not within this test).
        posted = twilio.call(lambda fake: [c for c in fake.posted if c.sid in stuck_sids])
        calls = "\n".join(f"{c.sid} {c.status}: {c.answer} {c.error or ''}" for c in posted)
        raise AssertionError(
            f"{len(stuck)} not final, e.g. {stuck[:5]}\ncallbacks:\n{calls}\n{failure}"
        ) from None
    settled_after = time.monotonic() - last_kill

    # -- what the fake holds: the campaign's messages, per number, oldest first ------------
    seen = twilio.seen()
    assert seen.unauthenticated == 0

    def messages(fake: PacedTwilio) -> dict[str, list[tuple[str, str, str | None]]]:
        found: dict[str, list[tuple[str, str, str | None]]] = {}
        for m in fake.messages:
            if m["sid"] not in older:
                code = None if m["error_code"] is None else str(m["error_code"])
                found.setdefault(m["to"], []).append((m["sid"], m["status"], code))
        return found

    at_fake = twilio.call(messages)
    per_number = seen.per_number()
    wrong_count = {
        phone: (per_number[phone], len(by_phone[phone].lives))
        for phone in numbers
        if per_number[phone] != len(by_phone[phone].lives)
    }
    assert wrong_count == {}, (
        f"{len(wrong_count)} numbers got another number of messages than their receipts "
        f"allow ((got, allowed) by number): {dict(list(wrong_count.items())[:10])}\n"
        f"{await diagnose(db, twilio, list(wrong_count)[:3])}"
    )
    assert {phone: len(found) for phone, found in at_fake.items()} == {
        phone: len(by_phone[phone].lives) for phone in numbers
    }

    # -- each message is one attempt of its recipient, as the fake holds it ---------------
    attempts = await db.fetch(
        """SELECT r.phone, r.status, r.failed_reason, r.provider_error_code,
                  r.delivery_confirmed, r.attempts,
                  array_agg(a.provider_message_id ORDER BY a.id) AS sids,
                  array_agg(a.status ORDER BY a.id) AS statuses,
                  array_agg(a.error_code ORDER BY a.id) AS codes
           FROM recipients r JOIN attempts a ON a.recipient_id = r.id
           GROUP BY r.id"""
    )
    assert sorted(row["phone"] for row in attempts) == sorted(numbers)
    expected: dict[str, tuple[str, str | None, str | None]] = {}
    wrong: list[str] = []
    for row in attempts:
        phone = row["phone"]
        found = at_fake[phone]
        fake_tries = [(sid, status, code) for sid, status, code in found]
        db_tries = list(zip(row["sids"], row["statuses"], row["codes"], strict=True))
        if db_tries != fake_tries or row["attempts"] != len(found):
            wrong.append(f"{phone}: attempts {db_tries} ({row['attempts']}), fake {fake_tries}")
        # Every message but the last failed soft (so it was retried); the last decides.
        for _, status, code in found[:-1]:
            if not (status in ("failed", "undelivered") and TWILIO_CODES[code or ""]["soft"]):
                wrong.append(f"{phone}: retried after {status} {code}")
        _, status, code = found[-1]
        if status == "delivered":
            expected[phone] = ("delivered", None, None)
        elif status in ("failed", "undelivered") and not TWILIO_CODES[code or ""]["soft"]:
            expected[phone] = ("failed", TWILIO_CODES[code or ""]["reason"], code)
        else:
            wrong.append(f"{phone}: the fake left its last message {status} {code}")
            continue
        state = (row["status"], row["failed_reason"], row["provider_error_code"])
        if state != expected[phone] or (status == "delivered") != bool(row["delivery_confirmed"]):
            wrong.append(f"{phone}: ends {state}, confirmed {row['delivery_confirmed']}")
    assert wrong == [], f"{len(wrong)} wrong, e.g.:\n" + "\n".join(wrong[:10])
    # The fake played the lives as scripted (else the rules above prove less than they say).
    outcomes = Counter(expected.values())
    assert {state for state, _, _ in outcomes} == {"delivered", "failed"}, outcomes

    # -- through the API process, as staff see it ----------------------------------------
    key = {"Authorization": f"Bearer {launched.api_key}"}
    async with httpx.AsyncClient(base_url=api.url, headers=key, trust_env=False) as client:
        page = await client.get(f"/v1/campaigns/{campaign_id}/contacts", params={"limit": 500})
        assert page.status_code == 200, page.text
        shown = {
            item["phone"]: (
                item["status"],
                (item["failed_reason"] or {}).get("code"),
                (item["failed_reason"] or {}).get("provider_error_code"),
            )
            for item in page.json()["items"]
        }
        assert shown == expected
        campaign = (await client.get(f"/v1/campaigns/{campaign_id}")).json()
        assert campaign["status"] == "complete", campaign

    # -- figures (printed, not asserted) --------------------------------------------------
    logs = workers.logs()
    named = logs.count(NAMED_RECOVERY)
    found_by_lookup = logs.count(FOUND_RECOVERY) - named
    lookups = twilio.call(
        lambda fake: sum(1 for query in fake.list_requests if "Page" not in query)
    )
    print(
        f"\nqueued {placement}, {count} parents: {len(kills)} kills "
        f"(creates in flight: {[kill.in_flight for kill in kills]}, "
        f"at {[round(kill.at, 1) for kill in kills]} s); "
        f"creates {len(seen.creates)}; recoveries: {named} settled by a receipt naming "
        f"the attempt, {lookups} looked up in the list ({found_by_lookup} found there, "
        f"{lookups - found_by_lookup} not: sent), {logs.count(CANT_TELL)} can't tell; "
        f"outcomes {dict(outcomes)}; "
        f"settled {settled_after:.1f} s after the last kill; "
        f"{time.monotonic() - started:.1f} s in all"
    )


async def diagnose(db: asyncpg.Connection, twilio: TwilioThread, numbers: list[str]) -> str:
    """For a failure message: the creates the fake received for these numbers (the attempt
    each named, when it arrived and was answered), the campaign's messages it holds for
    them, and the recipients' rows."""

    def at_fake(fake: PacedTwilio) -> list[str]:
        return [
            f"create {to} attempt {attempt}: arrived {arrived:.2f}, answered {answered:.2f}"
            for to, attempt, arrived, answered in fake.timings
            if to in numbers
        ] + [
            f"message {m['to']} {m['sid']} {m['status']} created {m['_created'].timestamp():.2f}"
            for m in fake.messages
            if m["to"] in numbers and m["direction"] == "outbound-api"
        ]

    attempts = await db.fetch(
        """SELECT r.phone, a.id, a.provider_message_id, a.status, a.created_at
           FROM attempts a JOIN recipients r ON r.id = a.recipient_id
           WHERE r.phone = any($1::text[]) ORDER BY a.id""",
        numbers,
    )
    rows = [
        f"attempt {a['id']} of {a['phone']}: {a['provider_message_id']} {a['status']}, "
        f"hand-over began {a['created_at'].timestamp():.2f}"
        for a in attempts
    ]
    return "\n".join([*twilio.call(at_fake), *rows])
