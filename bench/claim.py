"""Benchmark: the cost of one delivery claim (Engine.claim) as the recipients table grows.

    python bench/claim.py [--sizes 10000,100000,1000000] [--due 1000] [--scheduled 0]
                          [--layout spread|launch] [--batch 200] [--runs 30] [--profile]
                          [--keep]

The database is found the way the tests find it: TEST_DATABASE_URL, or else an embedded
PostgreSQL started here (deleted on exit). A fresh database is created on it, migrated
with alembic, and dropped at the end (kept with --keep, on TEST_DATABASE_URL's server only,
to study the statements on the seeded table afterwards).

Setup: a school (no sending window, so the figures do not depend on the hour) with a
Twilio account (never called: a claim sends nothing) and 10 active campaigns, over the
real ASGI app. Then, for each size, SQL only: the table is grown with INSERT ... SELECT
generate_series to that many recipients, all final (90% delivered, 10% failed, each with
its attempt row, next_attempt_at NULL: outside the partial index ix_recipients_due), and
--due of them are made due now: with --layout spread (the default, and the target's
measure: the worst case), evenly spread over the ids, so over the campaigns and the heap,
one row per page, as retries scattered over many campaigns are; with --layout launch, the
last --due ids, as a campaign just launched is (its rows side by side at the table's end).
They are made `queued` with no attempt yet, or for a --scheduled share of them (evenly spread
among the others) `scheduled`, a soft bounce whose `undelivered` attempt is kept.
VACUUM ANALYZE, as autovacuum would.

Each run times one `Engine.claim()` (the engine's own code, its own committed transaction,
on a warm pool, in a process whose start-up objects are frozen out of the garbage
collector as `campanile worker` does) claiming --batch recipients, then re-arms what it
claimed (restores the claimed recipients; a claim writes no attempt row) outside the
timing. Two series per size:
`vacuumed` runs VACUUM recipients, attempts after each re-arm (every claim sees the same
table); `churn` does not (dead index entries pile up as between two autovacuum passes).
SQL time is the sum over the statements the engine sent (SQLAlchemy cursor events); CPU is
this process's CPU time during the claim (the engine's Python, SQLAlchemy and asyncpg),
which other load on the machine inflates far less than wall time.

Last, EXPLAIN (ANALYZE, BUFFERS) of the claim query: the exact statement the engine sent
in the last run (captured at the cursor, not reproduced), prepared and executed five times
first as the app's asyncpg prepared statements are, in a transaction rolled back.

Target: under 20 ms per claim at 1,000,000 recipients (the largest size), on average, in
both series; and the claim plan reads recipients through an index (a "index use:" line
names it; a Seq Scan on recipients fails).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import re
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from _db import fresh_database, plain_url  # bench/_db.py
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.delivery.engine import Engine
from app.kit.crypto import SecretBox, new_secret_key
from app.kit.db import create_engine, create_sessionmaker
from app.main import bind, create_app, unbind
from app.providers import codes
from app.providers.registry import Registry
from app.workers.loop import freeze_start_up

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "bench-admin-token"
CAMPAIGNS = 10
PER_CAMPAIGN_BLOCK = 100_000
TARGET_MS = 20.0
WARMUP = 3
CLAIM_MARK = "FOR UPDATE OF recipients SKIP LOCKED"
# A plan node that reads the recipients table (not recipients_*): its kind, its index.
RECIPIENTS_SCAN = re.compile(
    r"(?P<node>(?P<kind>Seq Scan|Index Scan|Index Only Scan|Bitmap Heap Scan)"
    r"(?: Backward)?(?: using (?P<index>\S+))? on recipients(?![\w])(?: \w+)?)"
)
BITMAP_INDEX = re.compile(r"Bitmap Index Scan on (?P<index>\S+)")

GROW = """
    INSERT INTO recipients (campaign_id, school_id, phone, first_name, last_name, fields,
                            status, failed_reason, provider_error_code, attempts,
                            next_attempt_at, first_attempt_at, created_at, updated_at)
    SELECT ($2::uuid[])[1 + (n / $5) % cardinality($2::uuid[])], $1,
           '+1212' || (200 + n / 10000)::text || lpad((n % 10000)::text, 4, '0'),
           'First' || (n % 500)::text, 'Last' || n::text,
           jsonb_build_object('grade', (9 + n % 4)::text),
           CASE WHEN n % 10 = 7 THEN 'failed' ELSE 'delivered' END,
           CASE WHEN n % 10 = 7 THEN 'blocked' END,
           CASE WHEN n % 10 = 7 THEN '30007' END,
           1, NULL, now() - interval '1 day', now() - interval '1 day', now() - interval '1 day'
    FROM generate_series($3::bigint, $4::bigint - 1) AS n
    ORDER BY n
"""
GROW_ATTEMPTS = """
    INSERT INTO attempts (recipient_id, provider, provider_message_id, status, error_code,
                          created_at, updated_at)
    SELECT id, 'twilio', 'SM' || md5(id::text),
           CASE WHEN status = 'failed' THEN 'undelivered' ELSE 'delivered' END,
           provider_error_code, first_attempt_at, first_attempt_at
    FROM recipients WHERE id > $1
    ORDER BY id
"""
# The previous due recipients become final again (as if sent and delivered).
UNDUE = """
    UPDATE recipients SET status = 'delivered', failed_reason = NULL,
           provider_error_code = NULL, attempts = 1, next_attempt_at = NULL,
           first_attempt_at = now() - interval '1 day'
    WHERE next_attempt_at IS NOT NULL
"""
# Due recipient k (1..due) is scheduled when k * share crosses an integer: the scheduled
# ones are evenly spread among the queued (share 0.5: every other one, in id order).
MAKE_DUE = """
    UPDATE recipients SET
        status = CASE WHEN retry THEN 'scheduled' ELSE 'queued' END,
        failed_reason = CASE WHEN retry THEN 'reattempting' END,
        provider_error_code = CASE WHEN retry THEN '30003' END,
        attempts = CASE WHEN retry THEN 1 ELSE 0 END,
        next_attempt_at = now() - make_interval(secs => k % 600),
        first_attempt_at = CASE WHEN retry THEN now() - interval '10 minutes' END
    FROM (
        SELECT due_id, k, floor(k * $2::float8) > floor((k - 1) * $2::float8) AS retry
        FROM unnest($1::bigint[]) WITH ORDINALITY AS u (due_id, k)
    ) AS d
    WHERE recipients.id = d.due_id
"""
DUE_ATTEMPTS = """
    WITH due AS (SELECT id, status FROM recipients WHERE next_attempt_at IS NOT NULL),
    gone AS (
        DELETE FROM attempts a USING due
        WHERE a.recipient_id = due.id AND due.status = 'queued'
    )
    UPDATE attempts a SET status = 'undelivered', error_code = '30003',
           provider_message_id = 'SM' || md5(a.recipient_id::text || 'soft'),
           created_at = now() - interval '10 minutes', updated_at = now() - interval '9 minutes'
    FROM due WHERE a.recipient_id = due.id AND due.status = 'scheduled'
"""
SNAPSHOT_DUE = """
    DROP TABLE IF EXISTS bench_due;
    CREATE TABLE bench_due AS
        SELECT id, status, failed_reason, provider_error_code, attempts, next_attempt_at,
               first_attempt_at, claimed_at, updated_at
        FROM recipients WHERE next_attempt_at IS NOT NULL;
"""
REARM = """
    UPDATE recipients r SET status = d.status, failed_reason = d.failed_reason,
           provider_error_code = d.provider_error_code, attempts = d.attempts,
           next_attempt_at = d.next_attempt_at, first_attempt_at = d.first_attempt_at,
           claimed_at = d.claimed_at, updated_at = d.updated_at
    FROM bench_due d
    WHERE r.id = d.id AND r.id = ANY($1::bigint[])
"""


def literal(value: Any) -> str:
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def quantile(values: Sequence[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


class SqlClock:
    """Sums the time of the statements the engine sends; keeps the claim statement."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.seconds = 0.0
        self.statements = 0
        self.kinds: dict[str, list[float]] = {}  # statement head: [count, seconds]
        self.claim: tuple[str, Sequence[Any]] | None = None
        event.listen(engine.sync_engine, "before_cursor_execute", self._before)
        event.listen(engine.sync_engine, "after_cursor_execute", self._after)

    def reset(self) -> None:
        self.seconds, self.statements = 0.0, 0
        self.kinds = {}

    def _before(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        elapsed = time.perf_counter() - conn.info.pop("bench_started")
        self.seconds += elapsed
        self.statements += 1
        kind = self.kinds.setdefault(" ".join(statement.split())[:72], [0, 0.0])
        kind[0] += 1
        kind[1] += elapsed
        if CLAIM_MARK in statement:
            self.claim = (statement, tuple(params))


@dataclass
class Series:
    name: str
    total: list[float] = field(default_factory=list)  # ms
    cpu: list[float] = field(default_factory=list)  # ms of this process's CPU
    sql: list[float] = field(default_factory=list)  # ms
    statements: list[int] = field(default_factory=list)
    claimed: list[int] = field(default_factory=list)

    def line(self, size: int) -> str:
        return (
            f"  {size:>9,} recipients, {self.name:<8}: "
            f"claim avg {statistics.mean(self.total):6.1f} ms"
            f"  p95 {quantile(self.total, 95):6.1f} ms  max {max(self.total):6.1f} ms"
            f"  | CPU avg {statistics.mean(self.cpu):5.1f} ms"
            f"  | SQL avg {statistics.mean(self.sql):5.1f} ms in "
            f"{statistics.mean(self.statements):.0f} statements, rest (Python, BEGIN/COMMIT) "
            f"{statistics.mean(self.total) - statistics.mean(self.sql):5.1f} ms"
            f"  | {min(self.claimed)}-{max(self.claimed)} claimed"
        )


class Bench:
    def __init__(self, settings: Settings, args: argparse.Namespace) -> None:
        assert settings.database_url is not None and settings.secret_key is not None
        self.settings = settings
        self.args = args
        self.url = plain_url(settings.database_url)
        self.engine = create_engine(settings.database_url)
        self.clock = SqlClock(self.engine)
        self.http = httpx.AsyncClient()

        async def no_receipts(receipt: Any) -> None:
            raise AssertionError("a claim sends nothing")

        registry = Registry(
            self.http, SecretBox(settings.secret_key), settings.public_base_url, no_receipts
        )
        self.delivery = Engine(create_sessionmaker(self.engine), settings, registry)
        self.school_id = uuid.UUID(int=0)
        self.campaign_ids: list[uuid.UUID] = []
        self.size = 0
        self.profile = cProfile.Profile() if args.profile else None

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.engine.dispose()

    async def sql(self, query: str, *args: Any) -> str:
        connection = await asyncpg.connect(self.url)
        try:
            return str(await connection.execute(query, *args))
        finally:
            await connection.close()

    async def setup(self) -> None:
        """School, Twilio account, an (empty) list and the campaigns, over the API."""
        app = create_app(self.settings)
        bind(app, self.settings)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

                async def call(method: str, url: str, **kwargs: Any) -> Any:
                    response = await client.request(method, url, **kwargs)
                    if response.status_code >= 400:
                        raise RuntimeError(f"{method} {url}: {response.status_code}")
                    return response.json()

                school = await call(
                    "POST",
                    "/v1/admin/schools",
                    json={"name": "Bench District", "sending_window": None},
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                )
                self.school_id = uuid.UUID(school["id"])
                auth = {"Authorization": f"Bearer {school['api_key']}"}
                await call(
                    "PUT",
                    "/v1/school/provider",
                    headers=auth,
                    json={
                        "provider": "twilio",
                        "account_sid": "AC" + "c" * 32,
                        "auth_token": "bench-auth-token",
                        "from_number": "+12125550100",
                        "api_base": "http://127.0.0.1:9",
                    },
                )
                made = await call("POST", "/v1/contact-lists", headers=auth, json={"name": "All"})
                for n in range(CAMPAIGNS):
                    campaign = await call(
                        "POST",
                        "/v1/campaigns",
                        headers=auth,
                        json={
                            "name": f"Notice {n}",
                            "body": "Hi {first_name}, grades for grade {grade} are online.",
                            "contact_list_id": made["id"],
                        },
                    )
                    self.campaign_ids.append(uuid.UUID(campaign["id"]))
        finally:
            await unbind(app)
        await self.sql(
            "UPDATE campaigns SET status = 'active', launched_at = now() - interval '1 day'"
        )

    async def grow(self, size: int) -> None:
        """Grow the table to `size` recipients (all final), then pick the due ones."""
        started = time.perf_counter()
        connection = await asyncpg.connect(self.url)
        try:
            last = await connection.fetchval("SELECT coalesce(max(id), 0) FROM recipients")
            await connection.execute(
                GROW, self.school_id, self.campaign_ids, self.size, size, PER_CAMPAIGN_BLOCK
            )
            await connection.execute(GROW_ATTEMPTS, last)
            self.size = size
            await connection.execute(UNDUE)
            if self.args.layout == "launch":
                ids = list(range(size - self.args.due + 1, size + 1))
            else:
                stride = size // self.args.due
                ids = [stride * k for k in range(1, self.args.due + 1)]
            await connection.execute(MAKE_DUE, ids, self.args.scheduled)
            await connection.execute(DUE_ATTEMPTS)
            await connection.execute(SNAPSHOT_DUE)
            await connection.execute("VACUUM ANALYZE recipients, attempts")
            counts = await connection.fetchrow(
                "SELECT count(*) AS total, count(next_attempt_at) AS due, "
                "count(*) FILTER (WHERE status = 'scheduled') AS scheduled FROM recipients"
            )
            attempts = await connection.fetchval("SELECT count(*) FROM attempts")
        finally:
            await connection.close()
        assert counts["total"] == size and counts["due"] == self.args.due, dict(counts)
        print(
            f"grow to {size:,}: {counts['due']:,} due ({counts['scheduled']:,} scheduled), "
            f"{attempts:,} attempts; seeded and VACUUM ANALYZE in "
            f"{time.perf_counter() - started:.1f} s"
        )

    async def rearm(self, claimed: list[int], vacuum: bool) -> None:
        connection = await asyncpg.connect(self.url)
        try:
            await connection.execute(REARM, claimed)
            await connection.execute("UPDATE provider_accounts SET next_send_at = NULL")
            if vacuum:
                await connection.execute("VACUUM recipients, attempts")
        finally:
            await connection.close()

    async def claim_once(self) -> tuple[float, float, list[int]]:
        self.clock.reset()
        if self.profile is not None:
            self.profile.enable()
        cpu = time.process_time()
        started = time.perf_counter()
        jobs = await self.delivery.claim()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        if self.profile is not None:
            self.profile.disable()
        return elapsed, cpu, [job.recipient_id for job in jobs]

    async def series(self, name: str, vacuum: bool) -> Series:
        result = Series(name)
        for n in range(WARMUP + self.args.runs):
            elapsed, cpu, claimed = await self.claim_once()
            if n >= WARMUP:
                result.total.append(elapsed * 1000)
                result.cpu.append(cpu * 1000)
                result.sql.append(self.clock.seconds * 1000)
                result.statements.append(self.clock.statements)
                result.claimed.append(len(claimed))
            await self.rearm(claimed, vacuum)
        if vacuum is False:  # leave the table clean for what follows
            await self.sql("VACUUM recipients, attempts")
        return result

    async def explain(self) -> list[str]:
        assert self.clock.claim is not None
        statement, params = self.clock.claim
        literals = ", ".join(literal(p) for p in params)
        connection = await asyncpg.connect(self.url)
        try:
            async with connection.transaction():
                await connection.execute(f"PREPARE bench_claim AS {statement}")
                for _ in range(5):
                    await connection.execute(f"EXECUTE bench_claim({literals})")
                plan = await connection.fetch(
                    f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_claim({literals})"
                )
                raise _Rollback
        except _Rollback:
            pass
        finally:
            await connection.close()
        print(f"\n-- the claim query at {self.size:,} recipients, as the engine sent it:")
        print(f"-- {' '.join(statement.split())}\n-- parameters: {literals}")
        for row in plan:
            print("   " + row[0])
        return [str(row[0]) for row in plan]

    def print_statements(self) -> None:
        print("    statements of the last claim (count, ms):")
        for head, (count, seconds) in self.clock.kinds.items():
            print(f"      {count:4.0f}x {seconds * 1000:6.1f} ms  {head}")

    def print_profile(self) -> None:
        if self.profile is None:
            return
        out = io.StringIO()
        stats = pstats.Stats(self.profile, stream=out)
        stats.sort_stats("cumulative").print_stats(35)
        print("\n-- cProfile of the timed claims (cumulative)\n" + out.getvalue())


class _Rollback(Exception):
    pass


def index_use(plan: list[str]) -> tuple[bool, str]:
    """Whether the claim plan reads recipients through an index (no Seq Scan on it), and
    the line that says how."""
    scans: list[str] = []
    seq = False
    for n, line in enumerate(plan):
        found = RECIPIENTS_SCAN.search(line)
        if found is None:
            continue
        seq = seq or found["kind"] == "Seq Scan"
        node = found["node"]
        if found["kind"] == "Bitmap Heap Scan":
            # Its index is on the Bitmap Index Scan nodes under it (more indented).
            depth = len(line) - len(line.lstrip())
            below = []
            for child in plan[n + 1 :]:
                if len(child) - len(child.lstrip()) <= depth:
                    break
                if bitmap := BITMAP_INDEX.search(child):
                    below.append(bitmap["index"])
            node += f" (bitmap of {', '.join(below) or '?'})"
        scans.append(node)
    if not scans:
        return False, "index use: no scan of recipients found in the claim plan"
    return not seq, "index use: " + "; ".join(scans)


async def run(database_url: str, args: argparse.Namespace) -> bool:
    settings = Settings(
        database_url=database_url,
        secret_key=new_secret_key(),
        admin_token=ADMIN_TOKEN,
        public_base_url="https://campanile.bench",
        worker_batch_size=args.batch,
    )
    codes.configure(settings)
    bench = Bench(settings, args)
    averages: dict[str, float] = {}
    try:
        await bench.setup()
        freeze_start_up()  # as `campanile worker` does once started
        print(
            f"Engine.claim(): batch {args.batch}, {args.due:,} due of which "
            f"{args.scheduled:.0%} scheduled retries, laid out as {args.layout}; "
            f"{args.runs} timed runs after {WARMUP} "
            f"warm-up, in this process, "
            f"load average {'{:.1f} {:.1f} {:.1f}'.format(*os.getloadavg())}"
        )
        for size in args.sizes:
            await bench.grow(size)
            for name, vacuum in (("vacuumed", True), ("churn", False)):
                result = await bench.series(name, vacuum)
                print(result.line(size), flush=True)
                if size == max(args.sizes) and name == "vacuumed":
                    bench.print_statements()
                if size == max(args.sizes):
                    averages[name] = statistics.mean(result.total)
        indexed, how = index_use(await bench.explain())
        bench.print_profile()
    finally:
        await bench.aclose()
    print(how)
    ok = indexed and all(average < TARGET_MS for average in averages.values())
    judged = ", ".join(f"{name} avg {average:.1f} ms" for name, average in averages.items())
    print(
        f"{'PASS' if ok else 'FAIL'}: claim at {max(args.sizes):,} recipients "
        f"({judged}) against the target < {TARGET_MS:.0f} ms for each series; claim plan "
        f"{'without a Seq Scan on recipients' if indexed else 'NOT through an index'} "
        f"(load average now {'{:.1f} {:.1f} {:.1f}'.format(*os.getloadavg())})"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=lambda text: sorted(int(x) for x in text.split(",")),
        default=[10_000, 100_000, 1_000_000],
        help="recipients table sizes, comma-separated (grown in turn)",
    )
    parser.add_argument("--due", type=int, default=1_000)
    parser.add_argument(
        "--scheduled",
        type=float,
        default=0.0,
        help="share of the due that are soft-bounce retries (default 0: all fresh, queued)",
    )
    parser.add_argument(
        "--layout",
        choices=("spread", "launch"),
        default="spread",
        help="where the due rows lie: spread over the heap, or a campaign just launched",
    )
    parser.add_argument("--batch", type=int, default=Settings().worker_batch_size)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--profile", action="store_true", help="cProfile the timed claims")
    parser.add_argument(
        "--keep", action="store_true", help="keep the database (TEST_DATABASE_URL only)"
    )
    args = parser.parse_args()

    with fresh_database(keep=args.keep) as database_url:
        ok = asyncio.run(run(database_url, args))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
