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
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import asyncpg
import httpx
import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from app.config import Settings
from app.kit.crypto import new_secret_key
from app.main import bind, create_app, unbind
from tests.fakes.twilio import Answer, FakeTwilio
from tests.support.api import ADMIN, ADMIN_TOKEN
from tests.support.database import plain_url

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
    _open: asyncio.Event | None = None
    _released: asyncio.Event | None = None

    def _next_answer(self, to: str) -> Answer:
        answer = super()._next_answer(to)
        return replace(answer, delay=self.delay) if answer == Answer() else answer

    async def _create(self, request: Request) -> Response:
        self.in_flight += 1
        self.arrived += 1
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
) -> None:
    """Over the API, committed: a school on the fake Twilio, a list of `count` contacts, and
    `campaigns` campaigns to that list with this body, launched in turn. Raises
    RuntimeError (set-up, not the behaviour under test) when the API refuses."""
    settings = Settings(database_url=url, secret_key=secret_key, admin_token=ADMIN_TOKEN)
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
            contact_list = await call("/v1/contact-lists", {"name": "Families"}, auth)
            contacts = [
                {"phone": phone, "first_name": f"Kid{i}"} for i, phone in enumerate(phones(count))
            ]
            path = f"/v1/contact-lists/{contact_list['id']}/contacts"
            imported = await call(path, {"contacts": contacts}, auth)
            if imported["rejected"]:
                raise RuntimeError(f"contacts rejected: {imported['rejected'][:3]}")
            for n in range(campaigns):
                campaign = await call(
                    "/v1/campaigns",
                    {"name": f"Notice {n}", "body": body, "contact_list_id": contact_list["id"]},
                    auth,
                )
                launched = await call(f"/v1/campaigns/{campaign['id']}/launch", None, auth)
                if launched["status"] != "active":
                    raise RuntimeError(f"launched, yet {launched['status']}")
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
        env.update(WORKER_ENV)
        env.update(settings)
        env["DATABASE_URL"] = self._url
        env["SECRET_KEY"] = self._secret_key
        env["PUBLIC_BASE_URL"] = f"http://{name}.workers.test"
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
