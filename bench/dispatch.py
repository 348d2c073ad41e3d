"""Benchmark: dispatch throughput of ONE `campanile worker` process to a fake Twilio.

    python bench/dispatch.py [--recipients 100000] [--latency-ms 20] [--concurrency 50]
                             [--batch 200] [--bare-requests N] [--py-spy FILE]
                             [--cprofile FILE] [--extra-path DIR] [--worker-log FILE]
                             [--hang-share 0.05 [--clean-rate MSG_PER_S]]
                             [--events {on,off,none}]

The database is found the way the tests find it: TEST_DATABASE_URL, or else an embedded
PostgreSQL started here (deleted on exit). A fresh database is created on it, migrated
with alembic, and dropped at the end.

1. The fake Twilio Messages API (bench/fake_twilio.py) runs in its own process on
   loopback and answers every create with Twilio's 201 JSON after --latency-ms.
2. Over the real ASGI app (in this process): a school with no sending window (so the
   figures do not depend on the hour), its Twilio account whose api_base is the fake, a
   contact list; the contacts are written with one INSERT ... SELECT generate_series
   (valid US E.164 numbers, first names), then a campaign is created and launched with
   POST /v1/campaigns/{id}/launch. ANALYZE, as autovacuum would do within a minute.
3. The bare loop: --concurrency tasks in this process posting the same form (To, Body,
   From, StatusCallback) with the same Basic auth to the same fake, through a plain
   httpx.AsyncClient (default limits, one connection pool, Timeout(10, connect=5)),
   reading each JSON answer; --bare-requests of them. For reference, the same loop also
   runs (on a sample) with a keep-alive pool as large as the concurrency, and through the
   worker's own client (app.kit.http.outbound_client: several pools taken in turn).
4. The worker: `campanile worker` as a subprocess (python -m app.cli worker) with
   DATABASE_URL, SECRET_KEY, WORKER_BATCH_SIZE=--batch, WORKER_CONCURRENCY=--concurrency,
   started in this tree, first checked to import `app` from it (an editable install of
   the package may point at another checkout); --worker-log FILE keeps its log.
   This process only polls the fake's counter twice a second until every recipient is
   handed over and recorded, then stops the worker with SIGTERM. The rate is computed
   from the database: recipients / (last record time - first claim time), where an
   attempt's created_at is its claim transaction's start and its updated_at the time its
   record step ran; the attempts of one claim share a created_at, which gives the
   per-cycle breakdown (claim+send, record). The worker records a batch while it claims
   and sends the next, so "record (to next claim)" is only what the record adds (~0).

CPU per message (client, fake, database backends, from /proc) is printed beside each rate:
on a shared machine it moves far less than the rates do.

Target: >= 500 msg/s and >= 0.5x the reference: the faster of the plain bare loop and the
loop through the worker's client (a "reference:" line names it).

A brownout: --hang-share S makes the fake leave creates to a share S of the numbers (the
same numbers every run: bench/fake_twilio.py, `hangs`) unanswered past the worker's client
timeout (app.kit.http.TIMEOUT, 10 s); the worker records each of those as outcome unknown,
due again after the school's retry delay, set to an hour here so that no retry falls within
the run. The bare loops skip those numbers. The run ends once every recipient's first
hand-over is recorded, and the rate counts every hand-over recorded (sent or unknown).
Target: >= 0.5x a clean run's rate (--clean-rate, from a run without --hang-share). At
most WORKER_CONCURRENCY sends hold a place, a hanging one for WORKER_STRAGGLING_SECONDS
before it steps aside among at most STRAGGLERS_PER_PLACE x WORKER_CONCURRENCY stragglers
(app.delivery.gate) for the rest of the timeout: the "ceiling:" line gives the rate no
worker so bounded can exceed, the lower of what the places and the stragglers allow.

--events measures the outbox's cost (README, Events): `on` subscribes one webhook endpoint
of the school (bench/events_receiver.py, a process on loopback answering 204) to every
event, so the worker's webhook deliverer (in the worker process, as deployed) posts each
change of each recipient to it; `off` disables the outbox's triggers, so no
event is written; `none` (the default) keeps the triggers with no endpoint subscribed.
The receiver's count of posts is printed after the run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from _db import EVENTS_OFF, fresh_database, plain_url  # bench/_db.py
from events_receiver import Receiver  # bench/events_receiver.py
from fake_twilio import hangs  # bench/fake_twilio.py

from app.config import Settings
from app.delivery.gate import STRAGGLERS_PER_PLACE
from app.kit.crypto import new_secret_key
from app.kit.http import TIMEOUT, outbound_client
from app.main import bind, create_app, unbind

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "bench-admin-token"
PUBLIC_BASE_URL = "https://campanile.bench"
ACCOUNT_SID = "AC" + "b" * 32
AUTH_TOKEN = "bench-auth-token"
FROM_NUMBER = "+12125550100"
BODY = "Hi {first_name}, school is closed today because of snow. Reply STOP to opt out."
TARGET_RATE = 500.0
TARGET_RATIO = 0.5
WORKER_CLIENT = "the worker's client (outbound_client)"

FIRST_NAMES = [
    *("Olivia", "Liam", "Emma", "Noah", "Amelia", "Oliver", "Ava", "Elijah", "Sophia"),
    *("Mateo", "Isabella", "Lucas", "Mia", "Levi", "Charlotte", "Asher", "Luna", "James"),
]

SEED_CONTACTS = """
    INSERT INTO contacts (contact_list_id, phone, country_code, first_name, last_name, fields)
    SELECT $1, '+1212' || (200 + n / 10000)::text || lpad((n % 10000)::text, 4, '0'), 1,
           ($2::text[])[1 + n % cardinality($2::text[])], 'Last' || n::text,
           jsonb_build_object('grade', (9 + n % 4)::text)
    FROM generate_series(0, $3 - 1) AS n
    ORDER BY n
"""


def plain_http_client() -> httpx.AsyncClient:
    """The bare loop's client: httpx's defaults (one pool), the worker's timeouts."""
    return httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0))


# -- CPU accounting (robust to other load on the machine) ------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_of_backends(database: str) -> float:
    """CPU seconds of the PostgreSQL backends serving `database` (process titles)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"postgres:") and f" {database} ".encode() in title:
            total += cpu_of(int(entry.name))
    return total


def load() -> str:
    return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


@dataclass
class Cpu:
    """CPU seconds of the client, the fake and the database backends over a window."""

    client: float = 0.0
    fake: float = 0.0
    database: float = 0.0

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(
            self.client - other.client, self.fake - other.fake, self.database - other.database
        )

    def per_message(self, messages: int) -> str:
        us = [1e6 * value / messages for value in (self.client, self.fake, self.database)]
        return (
            f"CPU per message: client {us[0]:.0f} us, fake {us[1]:.0f} us, database {us[2]:.0f} us"
        )


# -- the fake --------------------------------------------------------------------------


class FakeProcess:
    def __init__(self, latency_ms: float, hang_share: float = 0.0) -> None:
        script = str(ROOT / "bench" / "fake_twilio.py")
        self.hang_share = hang_share
        command_line = [sys.executable, script, "--latency-ms", str(latency_ms)]
        self.process = subprocess.Popen(
            [*command_line, "--hang-share", str(hang_share)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError(f"the fake Twilio did not start: {self.url!r}")

    async def stats(self, http: httpx.AsyncClient) -> dict[str, int]:
        response = await http.get(f"{self.url}/__stats")
        response.raise_for_status()
        stats: dict[str, int] = response.json()
        return stats

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


# -- setup -----------------------------------------------------------------------------


async def setup(
    settings: Settings, fake_url: str, recipients: int, events: str, endpoint: str | None
) -> uuid.UUID:
    """School, Twilio account on the fake, list, contacts, campaign, launch: its id; the
    outbox as --events says (`endpoint` subscribed, or the triggers off)."""
    assert settings.database_url is not None
    app = create_app(settings)
    bind(app, settings)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=600
        ) as client:

            async def call(method: str, url: str, **kwargs: Any) -> Any:
                response = await client.request(method, url, **kwargs)
                if response.status_code >= 400:
                    raise RuntimeError(f"{method} {url}: {response.status_code} {response.text}")
                return response.json()

            school = await call(
                "POST",
                "/v1/admin/schools",
                json={"name": "Bench High", "sending_window": None},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            auth = {"Authorization": f"Bearer {school['api_key']}"}
            await call(
                "PUT",
                "/v1/school/provider",
                headers=auth,
                json={
                    "provider": "twilio",
                    "account_sid": ACCOUNT_SID,
                    "auth_token": AUTH_TOKEN,
                    "from_number": FROM_NUMBER,
                    "api_base": fake_url,
                },
            )
            if endpoint is not None:
                await call("POST", "/v1/webhook-endpoints", headers=auth, json={"url": endpoint})
            made = await call("POST", "/v1/contact-lists", headers=auth, json={"name": "All"})
            started = time.perf_counter()
            connection = await asyncpg.connect(plain_url(settings.database_url))
            try:
                await connection.execute(
                    SEED_CONTACTS, uuid.UUID(made["id"]), FIRST_NAMES, recipients
                )
                await connection.execute("ANALYZE contacts")
            finally:
                await connection.close()
            seeded = time.perf_counter() - started
            campaign = await call(
                "POST",
                "/v1/campaigns",
                headers=auth,
                json={"name": "Snow day", "body": BODY, "contact_list_id": made["id"]},
            )
            started = time.perf_counter()
            launched = await call("POST", f"/v1/campaigns/{campaign['id']}/launch", headers=auth)
            launch = time.perf_counter() - started
            assert launched["counts"]["queued"] == recipients, launched["counts"]
    finally:
        await unbind(app)
    connection = await asyncpg.connect(plain_url(settings.database_url))
    try:
        await connection.execute("ANALYZE recipients")
        for statement in EVENTS_OFF if events == "off" else []:
            await connection.execute(statement)
    finally:
        await connection.close()
    print(
        f"setup: {recipients:,} contacts by INSERT ... SELECT generate_series in {seeded:.2f} s; "
        f"POST /launch {launch:.2f} s ({recipients:,} queued); ANALYZE recipients"
    )
    return uuid.UUID(campaign["id"])


# -- the bare loop ---------------------------------------------------------------------


@dataclass
class Rate:
    messages: int
    seconds: float
    connections: int = 0
    cpu: Cpu | None = None
    cpu_messages: int = 0  # the messages the CPU window covers
    load: str = ""

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds


async def bare_loop(
    fake: FakeProcess, requests: int, concurrency: int, http: httpx.AsyncClient
) -> Rate:
    """`concurrency` tasks posting what TwilioProvider.send posts, `requests` in all."""
    url = f"{fake.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    auth = httpx.BasicAuth(ACCOUNT_SID, AUTH_TOKEN)
    callback = PUBLIC_BASE_URL + "/v1/webhooks/twilio/status"
    numbers = (f"+1212{200 + n // 10_000}{n % 10_000:04d}" for n in itertools.count())
    answered = (to for to in numbers if not hangs(to, fake.hang_share))
    counter = enumerate(itertools.islice(answered, requests))

    async def task() -> None:
        for n, to in counter:
            form = {
                "To": to,
                "Body": BODY.format(first_name=FIRST_NAMES[n % len(FIRST_NAMES)]),
                "From": FROM_NUMBER,
                "StatusCallback": callback,
            }
            response = await http.post(
                url, data=form, auth=auth, headers={"Accept": "application/json"}
            )
            if response.status_code != 201 or not response.json().get("sid"):
                raise RuntimeError(f"fake answered {response.status_code}: {response.text}")

    async with httpx.AsyncClient() as probe:
        before = await fake.stats(probe)
        cpu_before = Cpu(time.process_time(), cpu_of(fake.process.pid))
        started = time.perf_counter()
        await asyncio.gather(*(task() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = Cpu(time.process_time(), cpu_of(fake.process.pid)) - cpu_before
        after = await fake.stats(probe)
    assert after["creates"] - before["creates"] == requests
    connections = after["connections"] - before["connections"]
    return Rate(requests, elapsed, connections, cpu, requests, load())


# -- the worker ------------------------------------------------------------------------


@dataclass
class WorkerRun:
    rate: Rate
    wall: float  # from spawn to the last record seen, start-up included
    cycles: list[tuple[float, float, int]]  # (claim+send s, record+rest s, size) per claim
    attempts: int
    accepted: int


async def run_worker(
    args: argparse.Namespace, settings: Settings, fake: FakeProcess, campaign_id: uuid.UUID
) -> WorkerRun:
    assert settings.database_url is not None and settings.secret_key is not None
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "SECRET_KEY": settings.secret_key,
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "WORKER_BATCH_SIZE": str(args.batch),
        "WORKER_CONCURRENCY": str(args.concurrency),
        "LOG_LEVEL": args.worker_log_level,
        "EVENTS_ALLOW_PRIVATE_URLS": "true",  # --events on: the receiver is on loopback
    }
    if args.extra_path:
        env["PYTHONPATH"] = os.pathsep.join([args.extra_path, env.get("PYTHONPATH", "")])
    command_line = [sys.executable, "-m", "app.cli", "worker"]
    if args.cprofile:
        command_line[1:1] = ["-m", "cProfile", "-o", args.cprofile]
    log = tempfile.NamedTemporaryFile("w+", prefix="campanile-worker-", suffix=".log")  # noqa: SIM115
    database = settings.database_url.partition("?")[0].rpartition("/")[2]

    def cpu_now() -> Cpu:
        return Cpu(cpu_of(worker.pid), cpu_of(fake.process.pid), cpu_of_backends(database))

    async with httpx.AsyncClient() as probe:
        before = await fake.stats(probe)
        started = time.perf_counter()
        worker = spawn(command_line, env=env, stderr=log)
        first: tuple[int, Cpu] | None = None  # CPU from the first hand-over seen (start-up out)
        spy = None
        if args.py_spy:
            spy_args = ["--rate", "200", "--format", "raw", "--output", args.py_spy]
            spy = spawn(
                [args.py_spy_bin, "record", "--pid", str(worker.pid), *spy_args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        deadline = started + 120 + args.recipients / 20
        reported = started
        try:
            while True:
                await asyncio.sleep(0.5)
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited with {worker.returncode}")
                stats = await fake.stats(probe)
                sent = stats["creates"] + stats["hung"] - before["creates"] - before["hung"]
                if first is None and sent > 0:
                    first = (sent, cpu_now())
                now = time.perf_counter()
                if now - reported >= 10:
                    print(f"  ... {sent:,} handed over after {now - started:.0f} s", flush=True)
                    reported = now
                if sent >= args.recipients and not await left(settings, campaign_id, args):
                    wall = time.perf_counter() - started
                    assert first is not None
                    cpu = cpu_now() - first[1]
                    cpu_messages = sent - first[0]
                    break
                if now > deadline:
                    raise RuntimeError(f"only {sent:,} handed over in {now - started:.0f} s")
        except BaseException:
            log.seek(0)
            print("worker log (tail):\n" + "".join(log.readlines()[-30:]), file=sys.stderr)
            raise
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        after = await fake.stats(probe)
    log.seek(0)
    if args.worker_log:
        shutil.copyfile(log.name, args.worker_log)
    log.close()
    result = await measured(settings, campaign_id, wall, hung=after["hung"] - before["hung"])
    result.rate.connections = after["connections"] - before["connections"]
    result.rate.cpu, result.rate.cpu_messages, result.rate.load = cpu, cpu_messages, load()
    return result


def spawn(command_line: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a process (Popen only forks and execs: it does not wait)."""
    return subprocess.Popen(command_line, cwd=ROOT, **kwargs)


async def left(settings: Settings, campaign_id: uuid.UUID, args: argparse.Namespace) -> bool:
    """Whether a recipient is still due (clean run) or its first hand-over not recorded yet
    (--hang-share: those that hung are due again, an hour later)."""
    assert settings.database_url is not None
    where = "next_attempt_at IS NOT NULL"
    if args.hang_share:
        where = "(attempts = 0 OR claimed_at IS NOT NULL)"
    connection = await asyncpg.connect(plain_url(settings.database_url))
    try:
        return bool(
            await connection.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM recipients WHERE campaign_id = $1 AND {where})",
                campaign_id,
            )
        )
    finally:
        await connection.close()


async def measured(
    settings: Settings, campaign_id: uuid.UUID, wall: float, hung: int = 0
) -> WorkerRun:
    assert settings.database_url is not None
    connection = await asyncpg.connect(plain_url(settings.database_url))
    try:
        totals = await connection.fetchrow(
            "SELECT count(*) AS attempts, count(provider_message_id) AS accepted, "
            "extract(epoch FROM max(updated_at) - min(created_at)) AS seconds FROM attempts"
        )
        recipients = await connection.fetchrow(
            "SELECT count(*) AS total, count(*) FILTER (WHERE attempts = 1) AS once, "
            "count(*) FILTER (WHERE next_attempt_at IS NOT NULL) AS due "
            "FROM recipients WHERE campaign_id = $1",
            campaign_id,
        )
        batches = await connection.fetch(
            "SELECT created_at AS claimed, max(updated_at) AS recorded, count(*) AS size "
            "FROM attempts GROUP BY created_at ORDER BY created_at"
        )
    finally:
        await connection.close()
    assert recipients["due"] == hung and recipients["once"] == recipients["total"], (
        dict(recipients),
        hung,
    )
    cycles = []
    for this, following in itertools.pairwise(batches):
        cycles.append(
            (
                (this["recorded"] - this["claimed"]).total_seconds(),
                (following["claimed"] - this["recorded"]).total_seconds(),
                this["size"],
            )
        )
    return WorkerRun(
        Rate(totals["attempts"], float(totals["seconds"])),
        wall,
        cycles,
        totals["attempts"],
        totals["accepted"],
    )


# -- main ------------------------------------------------------------------------------


async def run(args: argparse.Namespace, database_url: str) -> bool:
    settings = Settings(
        database_url=database_url,
        secret_key=new_secret_key(),
        admin_token=ADMIN_TOKEN,
        public_base_url=PUBLIC_BASE_URL,
        # (--hang-share) no retry of the sends that hung within the run.
        retry_base_delay_seconds=3600 if args.hang_share else 60,
        retry_max_delay_seconds=7200 if args.hang_share else 3600,
        events_allow_private_urls=True,
    )
    fake = FakeProcess(args.latency_ms, args.hang_share)
    receiver = Receiver() if args.events == "on" else None
    try:
        print(f"fake Twilio: {fake.url} (own process, {args.latency_ms:g} ms per create)")
        print(f"events: {args.events}" + (f" (one endpoint, {receiver.url})" if receiver else ""))
        endpoint = receiver.url if receiver else None
        campaign_id = await setup(settings, fake.url, args.recipients, args.events, endpoint)

        async with plain_http_client() as http:
            await bare_loop(fake, min(2_000, args.bare_requests), args.concurrency, http)
            bare = await bare_loop(fake, args.bare_requests, args.concurrency, http)
        print(
            f"bare httpx loop:  {bare.messages:,} creates in {bare.seconds:6.2f} s = "
            f"{bare.per_second:7,.0f} msg/s  (concurrency {args.concurrency}, "
            f"{bare.connections:,} TCP connections opened; {bare.load})"
        )
        assert bare.cpu is not None
        print(f"  {bare.cpu.per_message(bare.messages)}")
        # The worker is judged against the faster of these: the plain loop, or the same
        # loop through the worker's own client (outbound_client).
        references = {"plain bare httpx loop": bare}
        sample = min(20_000, args.bare_requests)
        for label, client in (
            (
                "keep-alive pool = concurrency",
                httpx.AsyncClient(
                    timeout=httpx.Timeout(10.0, connect=5.0),
                    limits=httpx.Limits(max_keepalive_connections=args.concurrency),
                ),
            ),
            (WORKER_CLIENT, outbound_client()),
        ):
            async with client as http:
                same = await bare_loop(fake, sample, args.concurrency, http)
            if label == WORKER_CLIENT:
                references[label] = same
            print(
                f"  (same loop, {label}: {same.per_second:7,.0f} msg/s, "
                f"{same.connections:,} TCP connections opened, {sample:,} creates)"
            )
            assert same.cpu is not None
            print(f"  {same.cpu.per_message(same.messages)}")

        reference, fastest = max(references.items(), key=lambda item: item[1].per_second)
        print(
            f"reference: {reference} ({fastest.per_second:,.0f} msg/s), the faster of "
            + " and ".join(f"{name} ({r.per_second:,.0f})" for name, r in references.items())
        )
        how = "cProfile" if args.cprofile else ("py-spy attached" if args.py_spy else "plain")
        print(
            f"worker: `python -m app.cli worker` subprocess ({how}), "
            f"WORKER_BATCH_SIZE={args.batch} WORKER_CONCURRENCY={args.concurrency}; "
            f"{engine_version()}"
        )
        if receiver is not None:
            await receiver.posts()  # up
        result = await run_worker(args, settings, fake, campaign_id)
        if receiver is not None:
            print(f"events receiver: {await receiver.posts():,} posts during the run")
    finally:
        fake.stop()
        if receiver is not None:
            receiver.stop()
    rate = result.rate
    print(
        f"worker:           {rate.messages:,} creates in {rate.seconds:6.2f} s = "
        f"{rate.per_second:7,.0f} msg/s  (first claim to last record; "
        f"{result.wall:.2f} s from spawn, start-up included; "
        f"{rate.connections:,} TCP connections opened; {rate.load})"
    )
    assert rate.cpu is not None
    print(
        f"  {rate.cpu.per_message(rate.cpu_messages)} (from the first hand-over seen, "
        f"{rate.cpu_messages:,} messages; database = its backends)"
    )
    if result.cycles:
        busy = [c[0] * 1000 for c in result.cycles]
        rest = [c[1] * 1000 for c in result.cycles]
        sizes = [c[2] for c in result.cycles]
        print(
            f"  {len(result.cycles) + 1} claim cycles of {statistics.median(sizes):.0f}: median "
            f"claim+send {statistics.median(busy):.0f} ms, record (to next claim) "
            f"{statistics.median(rest):.0f} ms; p95 {percentile(busy, 95):.0f} / "
            f"{percentile(rest, 95):.0f} ms"
        )
    if args.hang_share:
        return brownout_verdict(args, result)
    ratio = rate.per_second / fastest.per_second
    ok = rate.per_second >= TARGET_RATE and ratio >= TARGET_RATIO
    print(
        f"{'PASS' if ok else 'FAIL'}: worker {rate.per_second:,.0f} msg/s "
        f"(target >= {TARGET_RATE:.0f}), {ratio:.2f}x the reference, {reference} "
        f"{fastest.per_second:,.0f} msg/s (target >= {TARGET_RATIO})"
    )
    return ok


def brownout_verdict(args: argparse.Namespace, result: WorkerRun) -> bool:
    """--hang-share: the rate against a clean run's (--clean-rate), and the ceiling."""
    timeout = TIMEOUT.read or 10.0
    share, latency = args.hang_share, args.latency_ms / 1000
    straggling = min(Settings.model_fields["worker_straggling_seconds"].default, timeout)
    places = args.concurrency / (share * straggling + (1 - share) * latency)
    stragglers = STRAGGLERS_PER_PLACE * args.concurrency
    aside = stragglers / (share * (timeout - straggling)) if share else float("inf")
    ceiling = min(places, aside)
    rate = result.rate.per_second
    print(
        f"  {result.attempts - result.accepted:,} hand-overs hung until the client timeout "
        f"({timeout:g} s), {result.accepted:,} answered"
    )
    print(
        f"ceiling: {ceiling:,.0f} msg/s, the lower of the places' {places:,.0f} (concurrency "
        f"{args.concurrency} / ({share:g} x {straggling:g} s + {1 - share:g} x {latency:g} s)) "
        f"and the stragglers' {aside:,.0f} ({stragglers} / ({share:g} x "
        f"{timeout - straggling:g} s)): no worker so bounded can do better"
    )
    if args.clean_rate is None:
        print(f"worker {rate:,.0f} msg/s with {share:.0%} of sends hanging (no --clean-rate)")
        return True
    ratio = rate / float(args.clean_rate)
    ok = ratio >= TARGET_RATIO
    print(
        f"{'PASS' if ok else 'FAIL'}: worker {rate:,.0f} msg/s with {share:.0%} of sends "
        f"hanging, {ratio:.2f}x the clean run's {args.clean_rate:,.0f} msg/s "
        f"(target >= {TARGET_RATIO})"
    )
    return ok


def check_worker_code(args: argparse.Namespace) -> None:
    """The worker subprocess must run this tree's code (not, say, another checkout that an
    editable install of the package points at): `app` as it would import it."""
    env = dict(os.environ)
    if args.extra_path:
        env["PYTHONPATH"] = os.pathsep.join([args.extra_path, env.get("PYTHONPATH", "")])
    found = subprocess.run(
        [sys.executable, "-c", "import app; print(app.__file__)"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(ROOT / "app"):
        raise SystemExit(f"the worker would import app from {found}, not from {ROOT / 'app'}")


def engine_version() -> str:
    """Which delivery code ran (app/delivery/): a hash of its modules, and whether they
    differ from HEAD."""
    folder = ROOT / "app" / "delivery"
    digest = hashlib.sha1()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    head = subprocess.run(
        ["git", "diff", "--quiet", "HEAD", "--", str(folder)], cwd=ROOT, check=False
    )
    state = "as in HEAD" if head.returncode == 0 else "modified in the work tree"
    return f"app/delivery sha1 {digest.hexdigest()[:12]} ({state})"


def percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=Settings().worker_concurrency)
    parser.add_argument("--batch", type=int, default=Settings().worker_batch_size)
    parser.add_argument(
        "--bare-requests", type=int, default=None, help="default: as many as recipients"
    )
    parser.add_argument("--py-spy", metavar="FILE", help="record the worker (raw stacks)")
    parser.add_argument("--py-spy-bin", default="py-spy")
    parser.add_argument("--cprofile", metavar="FILE", help="run the worker under cProfile")
    parser.add_argument(
        "--extra-path",
        metavar="DIR",
        help="a directory put first on sys.path of the bare loop and the worker (e.g. one "
        "holding sniffio, installed with pip install --target DIR sniffio)",
    )
    parser.add_argument("--worker-log", metavar="FILE", help="keep the worker's log (stderr) there")
    parser.add_argument("--worker-log-level", default="WARNING")
    parser.add_argument(
        "--hang-share",
        type=float,
        default=0.0,
        help="share of the numbers whose creates hang past the client timeout (e.g. 0.05)",
    )
    parser.add_argument(
        "--clean-rate",
        type=float,
        default=None,
        help="(with --hang-share) a clean run's worker rate, msg/s: the target is half of it",
    )
    parser.add_argument("--events", choices=("on", "off", "none"), default="none")
    args = parser.parse_args()
    if args.extra_path:
        sys.path.insert(0, args.extra_path)
    if args.bare_requests is None:
        args.bare_requests = args.recipients

    check_worker_code(args)
    with fresh_database() as database_url:
        ok = asyncio.run(run(args, database_url))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
