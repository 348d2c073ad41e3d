"""Benchmark: the receipt applier's CPU per receipt (`app.delivery.applier.apply_stored`).

    python bench/receipt_applier.py [--messages 10000] [--batch 500] [--repeat 3]
                                    [--events {on,off,both}]

The database is found the way the tests find it: TEST_DATABASE_URL, or else an embedded
PostgreSQL started here (deleted on exit); a fresh database is created on it, migrated,
and dropped at the end, once per repeat.

Seed, SQL only: a school (no sending window, retries allowed) with two active campaigns.
The first has --messages recipients, each with an attempt `queued` under a Twilio message
id (every tenth recipient has a second, later attempt: a receipt for the first one is not
its latest). The second has 20 recipients waiting, on the numbers of the first campaign's
first 20. Receipts, stored as the webhooks store them, in blocks of 256 messages as
bench/webhooks.py posts them (`sent` for the block, then the outcome): `delivered` for 85%,
a soft failure (30001, a retry) for 7%, a hard one (30003) for 5%, an unknown code for
1%, `delivered` then a late `sent` (stale) for 2%; five 21610 opt-outs (each failing the
number's waiting recipient in the second campaign too); five receipts for messages never
recorded (they stay stored).

Then the receipts are applied as the worker's loop applies them: `apply_stored` in its own
transaction (`unit_of_work`), --batch at a time with one SchoolCache, until none is left,
in a process whose start-up objects are frozen out of the garbage collector. CPU is this
process's CPU time (time.process_time) over those transactions: the applier's Python,
SQLAlchemy and asyncpg, not PostgreSQL's, and far less skewed by other load on the machine
than wall time (printed beside it). The median over --repeat runs is the figure.

--events picks what the outbox does (README, Events), to measure its cost: `off` disables
its triggers (no event is written), `on` (the default, as deployed) keeps them and
subscribes one webhook endpoint of the school to every event type; then the events the
receipts wrote are fanned out to it after each batch (a delivery row each), as the
webhook deliverer's claim does (`app.events.deliveries.fan_out`), inside the figures
(nothing is posted: the deliverer's posting is bench/events.py's). Wall time, which
includes PostgreSQL's work (the triggers run there), is the figure to compare; `both`
runs `off` and `on` in turn, --repeat times each (so a slow spell of the machine hits
both alike), and prints the outbox's cost: on the receipts' own transactions (applying:
the write path, which the target is about) and with the fan-out (the deliverer's work,
done apart from the changes).

Last, a fingerprint of the state the receipts left (recipients' status columns, whether
a retry is due, attempts, receipts applied and their attempt, opt-outs, campaigns; no
times): the same for two checkouts of the applier that behave alike (run this file with
PYTHONPATH pointing at either).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import random
import statistics
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from _db import EVENTS_OFF, fresh_database, plain_url  # bench/_db.py
from sqlalchemy import event
from webhooks import process_cpu  # bench/webhooks.py

from app.delivery import applier
from app.delivery.school_cache import SchoolCache
from app.events import deliveries
from app.kit.clock import utcnow
from app.kit.db import create_engine, create_sessionmaker, unit_of_work
from app.providers import codes

SCHOOL = uuid.UUID(int=1)
CONTACT_LIST = uuid.UUID(int=2)
CAMPAIGNS = (uuid.UUID(int=10), uuid.UUID(int=11))
BLOCK = 256

# (statement, its parameters' names in `seed`)
SEED = [
    (
        """INSERT INTO schools (id, name, timezone, default_region, allowed_country_codes,
               retry_base_delay_seconds, retry_max_delay_seconds, created_at, updated_at)
           VALUES ($1, 'Bench High', 'America/New_York', 'US', '{1}', 60, 3600, now(), now())""",
        ("school",),
    ),
    (
        """INSERT INTO contact_lists (id, school_id, name, created_at, updated_at)
           VALUES ($1, $2, 'Whole school', now(), now())""",
        ("contact_list", "school"),
    ),
    (
        """INSERT INTO campaigns (id, school_id, name, body, contact_list_id, status,
               launched_at, created_at, updated_at)
           SELECT id, $1, 'Snow day', 'No school today', $2, 'active', now(), now(), now()
           FROM unnest($3::uuid[]) AS id""",
        ("school", "contact_list", "campaigns"),
    ),
    (
        """INSERT INTO recipients (campaign_id, school_id, phone, status, attempts,
               first_attempt_at, created_at, updated_at)
           SELECT $1, $2, '+1212' || lpad(n::text, 7, '0'), 'queued', 1, now(), now(), now()
           FROM generate_series(0, $3 - 1) AS n ORDER BY n""",
        ("first", "school", "messages"),
    ),
    (
        """INSERT INTO recipients (campaign_id, school_id, phone, status, next_attempt_at,
               created_at, updated_at)
           SELECT $1, $2, '+1212' || lpad(n::text, 7, '0'), 'queued',
                  now() + interval '1 day', now(), now()
           FROM generate_series(0, 19) AS n ORDER BY n""",
        ("second", "school"),
    ),
    (
        """INSERT INTO attempts (recipient_id, provider, provider_message_id, status,
               created_at, updated_at)
           SELECT id, 'twilio',
                  'SM' || lpad(to_hex(row_number() OVER (ORDER BY id) - 1), 32, '0'),
                  'queued', now(), now()
           FROM recipients WHERE campaign_id = $1""",
        ("first",),
    ),
    (
        """INSERT INTO attempts (recipient_id, provider, provider_message_id, status,
               created_at, updated_at)
           SELECT id, 'twilio', 'SN' || id, 'queued', now(), now()
           FROM recipients WHERE campaign_id = $1 AND id % 10 = 0""",
        ("first",),
    ),
]
RECEIPT_COLUMNS = [
    "provider",
    "event_id",
    "provider_message_id",
    "provider_status",
    "error_code",
    "reason",
    "soft",
    "definition",
]
# The state the receipts leave, without times (those of a retry are random anyway).
FINGERPRINT = [
    """SELECT id, status, failed_reason, failed_definition, provider_error_code, attempts,
              next_attempt_at IS NULL, claimed_at IS NULL FROM recipients ORDER BY id""",
    "SELECT id, status, error_code FROM attempts ORDER BY id",
    "SELECT id, applied_at IS NULL, attempt_id FROM receipts ORDER BY id",
    "SELECT school_id, phone, source, campaign_id FROM opt_outs ORDER BY school_id, phone",
    "SELECT id, status, completed_at IS NULL FROM campaigns ORDER BY id",
]


def receipts(messages: int, rng: random.Random) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []

    def add(n: int, status: str, code: str | None = None) -> None:
        meaning = codes.classify("twilio", code, "receipt") if code else None
        rows.append(
            (
                "twilio",
                f"event-{len(rows)}",
                f"SM{n:032x}",
                status,
                code,
                meaning.reason if meaning else None,
                meaning.soft if meaning else None,
                meaning.definition_index if meaning else None,
            )
        )

    for start in range(0, messages, BLOCK):
        block = range(start, min(start + BLOCK, messages))
        for n in block:
            add(n, "sent")
        for n in block:
            draw = rng.random()
            if n < 20 and n % 4 == 0:
                add(n, "undelivered", "21610")
            elif draw < 0.85:
                add(n, "delivered")
            elif draw < 0.92:
                add(n, "undelivered", "30001")
            elif draw < 0.97:
                add(n, "failed", "30003")
            elif draw < 0.98:
                add(n, "undelivered", "99999")
            else:
                add(n, "delivered")
                add(n, "sent")
    for n in range(5):
        add(10**9 + n, "delivered")
    return rows


SUBSCRIBE = """
    INSERT INTO webhook_endpoints (id, school_id, url, events, secret, created_at, updated_at)
    VALUES (gen_random_uuid(), $1, 'https://sis.example.org/events', NULL, 'sealed', now(), now())
"""


async def seed(url: str, messages: int, events: bool) -> int:
    connection = await asyncpg.connect(plain_url(url))
    try:
        values = {
            "school": SCHOOL,
            "contact_list": CONTACT_LIST,
            "campaigns": list(CAMPAIGNS),
            "first": CAMPAIGNS[0],
            "second": CAMPAIGNS[1],
            "messages": messages,
        }
        for statement, names in SEED:
            await connection.execute(statement, *(values[name] for name in names))
        for statement in [SUBSCRIBE] if events else EVENTS_OFF:
            await connection.execute(statement, *([SCHOOL] if events else []))
        rows = receipts(messages, random.Random(7))
        await connection.copy_records_to_table("receipts", records=rows, columns=RECEIPT_COLUMNS)
        for table in ("recipients", "attempts", "receipts"):
            await connection.execute(f"VACUUM ANALYZE {table}")
        return len(rows)
    finally:
        await connection.close()


def backend_cpu(pids: set[int]) -> float:
    """CPU seconds used so far by these PostgreSQL backends (0 for one gone or on another
    machine: /proc is read here)."""
    return sum(process_cpu(pid) for pid in pids)


@dataclass
class Spent:
    """Where a step's time went: this process's CPU, wall, and its PostgreSQL backends' CPU."""

    cpu: float = 0.0
    wall: float = 0.0
    backend: float = 0.0


@dataclass
class Applied:
    results: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    applying: Spent = field(default_factory=Spent)
    fanning: Spent = field(default_factory=Spent)


async def apply_all(url: str, batch: int) -> Applied:
    """Every receipt applied, batch after batch, and their events fanned out after each."""
    engine = create_engine(url)
    pids: set[int] = set()

    @event.listens_for(engine.sync_engine, "connect")
    def remember(dbapi_connection: Any, record: Any) -> None:
        pids.add(dbapi_connection.run_async(lambda c: c.fetchval("SELECT pg_backend_pid()")))

    sessionmaker = create_sessionmaker(engine)
    schools = SchoolCache()
    applied = Applied()

    def clock() -> tuple[float, float, float]:
        return time.process_time(), time.perf_counter(), backend_cpu(pids)

    def add(spent: Spent, start: tuple[float, float, float]) -> None:
        end = clock()
        spent.cpu += end[0] - start[0]
        spent.wall += end[1] - start[1]
        spent.backend += end[2] - start[2]

    try:
        while True:
            start = clock()
            async with unit_of_work(sessionmaker) as session:
                done = await applier.apply_stored(session, batch, schools)
            add(applied.applying, start)
            start = clock()
            while True:  # nothing to do with --events off
                async with unit_of_work(sessionmaker) as session:
                    if await deliveries.fan_out(session, utcnow()) < deliveries.FAN_OUT:
                        break
            add(applied.fanning, start)
            if not done:
                return applied
            applied.batches += 1
            applied.results.update(result.value for result in done)
    finally:
        await engine.dispose()


async def fingerprint(url: str) -> str:
    connection = await asyncpg.connect(plain_url(url))
    try:
        digest = hashlib.sha256()
        for query in FINGERPRINT:
            digest.update(repr([tuple(row) for row in await connection.fetch(query)]).encode())
        return digest.hexdigest()[:16]
    finally:
        await connection.close()


def run_once(args: argparse.Namespace, events: str, prints: set[str]) -> dict[str, float]:
    """One run on a fresh database: its figures, per receipt, in µs."""
    with fresh_database() as url:
        stored = asyncio.run(seed(url, args.messages, events == "on"))
        gc.collect()
        gc.freeze()
        done = asyncio.run(apply_all(url, args.batch))
        gc.unfreeze()
        count = sum(done.results.values())
        steps = (done.applying, done.fanning)
        figures = {
            "cpu": sum(step.cpu for step in steps) / count * 1e6,
            "wall": sum(step.wall for step in steps) / count * 1e6,
            "backend": sum(step.backend for step in steps) / count * 1e6,
            "applying": done.applying.wall / count * 1e6,
            "fan-out": done.fanning.wall / count * 1e6,
        }
        prints.add(asyncio.run(fingerprint(url)))
    print(
        f"events {events}: {stored:,} receipts stored, {count:,} applied "
        f"({dict(done.results)}) in {done.batches} batches of up to {args.batch}: "
        f"CPU {figures['cpu']:.1f} us a receipt, wall {figures['wall']:.1f} us "
        f"(applying {figures['applying']:.1f}, fan-out {figures['fan-out']:.1f}), "
        f"PostgreSQL backends' CPU {figures['backend']:.1f} us (applying "
        f"{done.applying.backend / count * 1e6:.1f}, fan-out "
        f"{done.fanning.backend / count * 1e6:.1f})"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=applier.BATCH)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--events", choices=("on", "off", "both"), default="on")
    args = parser.parse_args()
    random.seed(1)  # the retries' jitter: not in the fingerprint anyway
    modes = ("off", "on") if args.events == "both" else (args.events,)
    figures: dict[str, dict[str, list[float]]] = {mode: defaultdict(list) for mode in modes}
    prints: set[str] = set()
    for _ in range(args.repeat):
        for mode in modes:  # interleaved: a slow spell of the machine hits both alike
            for name, value in run_once(args, mode, prints).items():
                figures[mode][name].append(value)
    median = {
        mode: {name: statistics.median(values) for name, values in found.items()}
        for mode, found in figures.items()
    }
    for mode, m in median.items():
        print(
            f"events {mode}: per receipt (median of {args.repeat}): CPU {m['cpu']:.1f} us; "
            f"wall {m['wall']:.1f} us (applying {m['applying']:.1f} us, fan-out "
            f"{m['fan-out']:.1f} us); PostgreSQL backends' CPU {m['backend']:.1f} us"
        )
    if args.events == "both":
        off, on = median["off"], median["on"]
        print(
            f"outbox cost: the receipts' own transactions (applying) "
            f"{on['applying'] / off['applying'] - 1:+.1%}; with the fan-out "
            f"{on['wall'] / off['wall'] - 1:+.1%}; target for the write path: at most +15%"
        )
    print(f"fingerprint: {', '.join(sorted(prints))}")


if __name__ == "__main__":
    main()
