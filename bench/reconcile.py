"""Benchmark: the cost of one reconciliation pass (Reconciler.sweep_once) as the tables grow.

    python bench/reconcile.py [--sizes 10000,100000,1000000] [--due 20] [--waiting 1000]
                              [--runs 20]

The database is found as bench/claim.py finds it (TEST_DATABASE_URL, or an embedded
server), fresh, migrated, dropped at the end. Setup as bench/claim.py's: a school and 10
active campaigns over the real ASGI app; then the school's provider account is removed, so
its messages go through the built-in simulator (no network: a lookup costs nothing of its
own, and the simulator, not having sent these messages, cannot tell, so a pass changes
nothing and every run sees the same tables). For each size, SQL only: recipients grown with
bench/claim.py's statements (all final, each with its final attempt: outside the partial
index ix_attempts_unconfirmed), then --waiting of them made Pending with a `sent` attempt
checked just now (in the index, not due) and --due of them Pending with a `sent` attempt
last checked two days ago (due), all spread over the ids. VACUUM ANALYZE.

Each run times one `sweep_once()` (its claim's committed transaction, the lookups, the
receipts kept: none), then re-arms the due attempts outside the timing. Last: an idle pass
(nothing due), and EXPLAIN (ANALYZE, BUFFERS) of the claim statement at the largest size,
in a transaction rolled back; the "index use:" line says whether the attempts are read
through ix_attempts_unconfirmed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from _db import fresh_database, plain_url  # bench/_db.py
from claim import ADMIN_TOKEN, CAMPAIGNS, GROW, GROW_ATTEMPTS, PER_CAMPAIGN_BLOCK

from app.config import Settings
from app.delivery import sql
from app.delivery.reconcile import Passed, Reconciler
from app.kit.crypto import SecretBox, new_secret_key
from app.kit.db import Inbox, create_engine, create_sessionmaker
from app.main import bind, create_app, unbind
from app.providers import codes
from app.providers.registry import Registry
from app.workers.loop import freeze_start_up

EVERY = 43_200
WARMUP = 3

# The previous due and waiting recipients become final again.
RESET = """
    WITH back AS (
        UPDATE recipients SET status = 'delivered' WHERE status = 'pending' RETURNING id
    )
    UPDATE attempts SET status = 'delivered', provider = 'twilio', checked_at = now()
    WHERE recipient_id IN (SELECT id FROM back)
"""
# Recipients `$1` become Pending, their attempt `sent` through the simulator, last checked
# `$2` ago.
MAKE_PENDING = """
    WITH made AS (
        UPDATE recipients SET status = 'pending', failed_reason = NULL,
               provider_error_code = NULL
        WHERE id = ANY($1::bigint[]) RETURNING id
    )
    UPDATE attempts SET status = 'sent', provider = 'simulator', error_code = NULL,
           checked_at = now() - $2::interval, created_at = now() - $2::interval
    WHERE recipient_id IN (SELECT id FROM made)
"""
REARM = "UPDATE attempts SET checked_at = now() - interval '2 days' WHERE id = ANY($1::bigint[])"


def spread(size: int, count: int, offset: int) -> list[int]:
    """`count` ids spread evenly over 1..size (shifted by `offset` within each stride)."""
    stride = size // count
    return [stride * k - offset for k in range(1, count + 1)]


class Bench:
    def __init__(self, settings: Settings, args: argparse.Namespace) -> None:
        assert settings.database_url is not None and settings.secret_key is not None
        self.settings = settings
        self.args = args
        self.url = plain_url(settings.database_url)
        self.engine = create_engine(settings.database_url)
        self.http = httpx.AsyncClient()
        self.inbox = Inbox.pool(settings.database_url, size=2)

        async def no_receipts(receipt: Any) -> None:
            raise AssertionError("nothing is sent")

        self.registry = Registry(
            self.http, SecretBox(settings.secret_key), settings.public_base_url, no_receipts
        )
        self.reconciler = Reconciler(
            create_sessionmaker(self.engine), settings, self.registry, self.inbox
        )
        self.school_id = uuid.UUID(int=0)
        self.campaign_ids: list[uuid.UUID] = []
        self.size = 0

    async def aclose(self) -> None:
        await self.registry.aclose()
        await self.inbox.aclose()
        await self.http.aclose()
        await self.engine.dispose()

    async def setup(self) -> None:
        app = create_app(self.settings)
        bind(app, self.settings)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                response = await client.post(
                    "/v1/admin/schools",
                    json={"name": "Bench District", "sending_window": None},
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                )
                school = response.json()
                self.school_id = uuid.UUID(school["id"])
                auth = {"Authorization": f"Bearer {school['api_key']}"}
                made = (
                    await client.post("/v1/contact-lists", headers=auth, json={"name": "All"})
                ).json()
                for n in range(CAMPAIGNS):
                    campaign = await client.post(
                        "/v1/campaigns",
                        headers=auth,
                        json={"name": f"Notice {n}", "body": "Hi", "contact_list_id": made["id"]},
                    )
                    self.campaign_ids.append(uuid.UUID(campaign.json()["id"]))
        finally:
            await unbind(app)
        connection = await asyncpg.connect(self.url)
        try:
            await connection.execute(
                "UPDATE campaigns SET status = 'active', launched_at = now() - interval '1 day'"
            )
            await connection.execute("DELETE FROM provider_accounts")  # the simulator sends
        finally:
            await connection.close()

    async def grow(self, size: int) -> list[int]:
        """Grow to `size` recipients; the due attempts' ids."""
        started = time.perf_counter()
        connection = await asyncpg.connect(self.url)
        try:
            last = await connection.fetchval("SELECT coalesce(max(id), 0) FROM recipients")
            await connection.execute(
                GROW, self.school_id, self.campaign_ids, self.size, size, PER_CAMPAIGN_BLOCK
            )
            await connection.execute(GROW_ATTEMPTS, last)
            self.size = size
            await connection.execute(RESET)
            waiting = spread(size, self.args.waiting, 1)
            due = spread(size, self.args.due, 0)
            await connection.execute(MAKE_PENDING, waiting, timedelta(0))
            await connection.execute(MAKE_PENDING, due, timedelta(days=2))
            await connection.execute("VACUUM ANALYZE recipients, attempts")
            counts = await connection.fetchrow(
                "SELECT count(*) AS attempts,"
                " count(*) FILTER (WHERE checked_at IS NOT NULL AND status = 'sent') AS indexed"
                " FROM attempts"
            )
            ids = await connection.fetch(
                "SELECT id FROM attempts WHERE recipient_id = ANY($1::bigint[])", due
            )
        finally:
            await connection.close()
        print(
            f"grow to {size:,} recipients ({counts['attempts']:,} attempts, "
            f"{counts['indexed']:,} in ix_attempts_unconfirmed, {self.args.due} due); "
            f"seeded in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        return [int(row["id"]) for row in ids]

    async def rearm(self, ids: list[int]) -> None:
        connection = await asyncpg.connect(self.url)
        try:
            await connection.execute(REARM, ids)
        finally:
            await connection.close()

    async def timed(self) -> tuple[float, float, Passed]:
        cpu = time.process_time()
        started = time.perf_counter()
        passed = await self.reconciler.sweep_once()
        return (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000, passed

    async def series(self, due_ids: list[int]) -> None:
        total: list[float] = []
        cpu: list[float] = []
        for n in range(WARMUP + self.args.runs):
            elapsed, spent, passed = await self.timed()
            assert passed.claimed == self.args.due, passed
            if n >= WARMUP:
                total.append(elapsed)
                cpu.append(spent)
            await self.rearm(due_ids)
        connection = await asyncpg.connect(self.url)
        try:
            await connection.execute(
                "UPDATE attempts SET checked_at = now() WHERE id = ANY($1::bigint[])", due_ids
            )
        finally:
            await connection.close()
        idle = []
        for _ in range(self.args.runs):
            elapsed, _, passed = await self.timed()
            assert passed.claimed == 0, passed
            idle.append(elapsed)
        await self.rearm(due_ids)
        print(
            f"  {self.size:>9,} recipients: pass over {self.args.due} due avg "
            f"{statistics.mean(total):6.1f} ms  p95 "
            f"{statistics.quantiles(total, n=20)[-1]:6.1f} ms  max {max(total):6.1f} ms"
            f"  | CPU avg {statistics.mean(cpu):5.1f} ms"
            f"  | idle pass avg {statistics.mean(idle):5.2f} ms  max {max(idle):5.2f} ms",
            flush=True,
        )

    async def explain(self) -> list[str]:
        statement = sql.CLAIM_DUE.text
        now = datetime.now(UTC)
        params = {
            "before": f"'{(now - timedelta(seconds=EVERY)).isoformat()}'",
            "limit": "200",
            "now": f"'{now.isoformat()}'",
        }
        for name, value in params.items():
            statement = statement.replace(f":{name}", value)
        connection = await asyncpg.connect(self.url)
        try:
            transaction = connection.transaction()
            await transaction.start()
            try:
                plan = await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {statement}")
            finally:
                await transaction.rollback()
        finally:
            await connection.close()
        lines = [str(row[0]) for row in plan]
        print(f"\n-- the reconciliation's claim at {self.size:,} recipients:")
        for line in lines:
            print("   " + line)
        return lines


async def run(database_url: str, args: argparse.Namespace) -> bool:
    settings = Settings(
        database_url=database_url,
        secret_key=new_secret_key(),
        admin_token=ADMIN_TOKEN,
        public_base_url="https://campanile.bench",
        reconcile_after_seconds=EVERY,
    )
    codes.configure(settings)
    bench = Bench(settings, args)
    try:
        await bench.setup()
        freeze_start_up()
        print(
            f"Reconciler.sweep_once(): {args.due} due, {args.waiting} waiting (in the index, "
            f"not due); {args.runs} timed runs after {WARMUP} warm-up; load average "
            f"{'{:.1f} {:.1f} {:.1f}'.format(*os.getloadavg())}"
        )
        for size in args.sizes:
            due_ids = await bench.grow(size)
            await bench.series(due_ids)
        plan = await bench.explain()
    finally:
        await bench.aclose()
    scans = [line.strip() for line in plan if " on attempts" in line and "Scan" in line]
    indexed = any("ix_attempts_unconfirmed" in line for line in scans)
    seq = any(line.startswith("Seq Scan") or "-> Seq Scan" in line for line in scans)
    print("index use: " + "; ".join(scans))
    ok = indexed and not seq
    print(
        f"{'PASS' if ok else 'FAIL'}: the claim reads the due attempts "
        f"{'through ix_attempts_unconfirmed' if indexed else 'NOT through the index'} "
        f"(load average now {'{:.1f} {:.1f} {:.1f}'.format(*os.getloadavg())})"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=lambda text: sorted(int(x) for x in text.split(",")),
        default=[10_000, 100_000, 1_000_000],
    )
    parser.add_argument("--due", type=int, default=20)
    parser.add_argument("--waiting", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with fresh_database() as database_url:
        ok = asyncio.run(run(database_url, args))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
