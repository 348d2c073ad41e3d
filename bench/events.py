"""Benchmark: events for integrators (README, Events): webhook fan-out, and the live stream.

    python bench/events.py [--changes 100000] [--endpoints 3] [--clients 200]
                           [--stream-changes 2000] [--skip-fanout] [--skip-stream]

The database is found the way the tests find it (TEST_DATABASE_URL, or an embedded server);
a fresh one is made, migrated, and dropped at the end. Set-up over the real ASGI app: a
school, a campaign (made active in SQL), its recipients inserted in SQL (nothing due: the
worker sends nothing).

1. Fan-out: --endpoints receivers (bench/events_receiver.py, each a process of its own on
   loopback, answering 204 at once) subscribed to `recipient.updated`; one `campanile
   worker` process (python -m app.cli worker, EVENTS_ALLOW_PRIVATE_URLS=true) runs the
   webhook deliverer. This process changes --changes recipients' status in
   statements of 1,000 (as the worker's record does), as fast as the database takes them,
   then waits until every receiver has every event. Printed: deliveries per second (from
   the first change committed to the last delivery) and the lag of each delivery from its
   event's commit (the event's `timestamp`), p50 and p99, and the worker process's CPU
   time per delivery (its claims and posts; less skewed by the rest of the machine).
2. Stream: `campanile serve` (API and worker) as a process; --clients SSE clients in this
   process on one campaign's stream; --stream-changes changes, 50 a statement, 20
   statements a second. Printed: each event's lag at each client from its commit, p50 and
   p99. Target: p99 under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from _db import fresh_database, plain_url  # bench/_db.py
from webhooks import process_cpu  # bench/webhooks.py

from app.config import Settings
from app.kit.crypto import new_secret_key
from app.main import bind, create_app, unbind

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "bench-admin-token"
STREAM_TARGET_P99 = 1.0

SEED = """
    INSERT INTO recipients (campaign_id, school_id, phone, first_name, fields, status,
                            failed_definition, attempts)
    SELECT $1, $2, '+1212' || (200 + n / 10000)::text || lpad((n % 10000)::text, 4, '0'),
           'Kid' || n::text, '{}'::jsonb, 'queued', 0, 0
    FROM generate_series(0, $3 - 1) AS n
"""
CHANGE = """
    UPDATE recipients SET status = 'failed', failed_reason = 'unknown', updated_at = now()
    WHERE campaign_id = $1 AND id >= $2 AND id < $3
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def spawn(args: list[str], env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def environment(url: str, secret_key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_URL",)}
    env.update(
        DATABASE_URL=url,
        SECRET_KEY=secret_key,
        ADMIN_TOKEN=ADMIN_TOKEN,
        EVENTS_ALLOW_PRIVATE_URLS="true",
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    return env


async def set_up(url: str, secret_key: str, size: int, endpoints: list[str]) -> tuple[str, str]:
    """A school with `endpoints` subscribed, and an active campaign of `size` recipients;
    (its API key, the campaign's id)."""
    settings = Settings(
        database_url=url,
        secret_key=secret_key,
        admin_token=ADMIN_TOKEN,
        events_allow_private_urls=True,
    )
    app = create_app(settings)
    bind(app, settings)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            school = (
                await client.post(
                    "/v1/admin/schools",
                    json={"name": "Bench High", "sending_window": None},
                    headers=admin,
                )
            ).json()
            auth = {"Authorization": f"Bearer {school['api_key']}"}
            made = (
                await client.post("/v1/contact-lists", json={"name": "All"}, headers=auth)
            ).json()
            campaign = (
                await client.post(
                    "/v1/campaigns",
                    json={"name": "Bench", "body": "Hi", "contact_list_id": made["id"]},
                    headers=auth,
                )
            ).json()
            for endpoint in endpoints:
                response = await client.post(
                    "/v1/webhook-endpoints",
                    json={"url": endpoint, "events": ["recipient.updated"]},
                    headers=auth,
                )
                assert response.status_code == 201, response.text
    finally:
        await unbind(app)
    connection = await asyncpg.connect(plain_url(url))
    try:
        await connection.execute(
            "UPDATE campaigns SET status = 'active', launched_at = now() WHERE id = $1",
            uuid.UUID(campaign["id"]),
        )
        await connection.execute(SEED, uuid.UUID(campaign["id"]), uuid.UUID(school["id"]), size)
        await connection.execute("ANALYZE recipients")
    finally:
        await connection.close()
    return school["api_key"], campaign["id"]


async def change(url: str, campaign_id: str, total: int, per_statement: int, pause: float) -> float:
    """Change `total` recipients, `per_statement` a committed statement; when the first
    committed (time.time())."""
    connection = await asyncpg.connect(plain_url(url))
    try:
        first_id = await connection.fetchval(
            "SELECT min(id) FROM recipients WHERE campaign_id = $1", uuid.UUID(campaign_id)
        )
        first = 0.0
        for start in range(first_id, first_id + total, per_statement):
            await connection.execute(
                CHANGE, uuid.UUID(campaign_id), start, min(start + per_statement, first_id + total)
            )
            first = first or time.time()
            if pause:
                await asyncio.sleep(pause)
        return first
    finally:
        await connection.close()


async def fanout(url: str, args: argparse.Namespace) -> None:
    secret_key = new_secret_key()
    log = tempfile.NamedTemporaryFile("w+", prefix="campanile-events-", suffix=".log")  # noqa: SIM115
    ports = [free_port() for _ in range(args.endpoints)]
    receivers = [
        spawn(
            [sys.executable, "bench/events_receiver.py", "--port", str(p)], os.environ.copy(), log
        )
        for p in ports
    ]
    worker = None
    try:
        endpoints = [f"http://127.0.0.1:{p}/events" for p in ports]
        _, campaign_id = await set_up(url, secret_key, args.changes, endpoints)
        await wait_up(ports)
        worker = spawn(
            [sys.executable, "-m", "app.cli", "worker"], environment(url, secret_key), log
        )
        worker_cpu = process_cpu(worker.pid)
        first = await change(url, campaign_id, args.changes, 1000, 0.0)
        changed = time.time()
        print(
            f"fan-out: {args.changes:,} changes committed in {changed - first:.1f} s "
            f"({args.changes / max(changed - first, 1e-9):,.0f}/s)",
            flush=True,
        )
        want = args.changes * args.endpoints
        stats = await wait_for(ports, want, deadline=time.time() + args.patience)
        last = time.time()  # every delivery arrived (within wait_for's look), or time ran out
        worker_cpu = process_cpu(worker.pid) - worker_cpu
        lags = [lag for s in stats for lag in s["lags"]]
        got = sum(s["events"] for s in stats)
        print(
            f"fan-out: {got:,} of {want:,} deliveries ({sum(s['posts'] for s in stats):,} posts) "
            f"to {args.endpoints} endpoints; {got / max(last - first, 1e-9):,.0f} deliveries/s; "
            f"lag from commit p50 {percentile(lags, 0.5):.2f} s, "
            f"p99 {percentile(lags, 0.99):.2f} s; the worker's CPU "
            f"{worker_cpu / max(got, 1) * 1e6:,.0f} us a delivery",
            flush=True,
        )
    finally:
        for process in [*receivers, *([worker] if worker else [])]:
            process.terminate()
            process.wait(10)
        log.seek(0)
        tail = log.read()[-3000:]
        if tail.strip():
            print(f"-- logs --\n{tail}")


async def wait_up(ports: list[int]) -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        for port in ports:
            for _ in range(200):
                try:
                    await http.get(f"http://127.0.0.1:{port}/stats")
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)


async def wait_for(ports: list[int], want: int, deadline: float) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(trust_env=False, timeout=60) as http:
        while True:
            stats = [(await http.get(f"http://127.0.0.1:{p}/stats")).json() for p in ports]
            if sum(s["events"] for s in stats) >= want or time.time() > deadline:
                return stats
            await asyncio.sleep(1.0)


async def stream(url: str, args: argparse.Namespace) -> bool:
    secret_key = new_secret_key()
    log = tempfile.NamedTemporaryFile("w+", prefix="campanile-stream-", suffix=".log")  # noqa: SIM115
    port = free_port()
    key, campaign_id = await set_up(url, secret_key, args.stream_changes, [])
    server = spawn(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        environment(url, secret_key),
        log,
    )
    lags: list[float] = []
    received = 0
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(trust_env=False) as http:
            for _ in range(600):
                try:
                    if (await http.get(f"{base}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        opened = asyncio.Event()
        ready = 0
        done = asyncio.Event()
        everything = asyncio.Event()

        async def client() -> None:
            nonlocal ready, received
            headers = {"Authorization": f"Bearer {key}"}
            limits = httpx.Limits(max_connections=1)
            async with (
                httpx.AsyncClient(base_url=base, timeout=None, limits=limits, trust_env=False) as h,
                h.stream("GET", f"/v1/campaigns/{campaign_id}/events", headers=headers) as r,
            ):
                ready += 1
                if ready == args.clients:
                    opened.set()
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        event = json.loads(line[5:])
                        if event["type"] != "recipient.updated":
                            continue
                        stamp = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
                        lags.append(time.time() - stamp.timestamp())
                        received += 1
                        if received >= args.clients * args.stream_changes:
                            everything.set()
                    if done.is_set():
                        return

        tasks = [asyncio.create_task(client()) for _ in range(args.clients)]
        await asyncio.wait_for(opened.wait(), 120)
        await change(url, campaign_id, args.stream_changes, 50, 0.05)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everything.wait(), 60)
        done.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        server.terminate()
        server.wait(20)
    p99 = percentile(lags, 0.99) if lags else float("inf")
    ok = received == args.clients * args.stream_changes and p99 < STREAM_TARGET_P99
    print(
        f"stream: {args.clients} clients, {args.stream_changes:,} changes: {received:,} of "
        f"{args.clients * args.stream_changes:,} events received; lag from commit p50 "
        f"{statistics.median(lags) if lags else float('nan'):.3f} s, p99 {p99:.3f} s "
        f"({'PASS' if ok else 'FAIL'}: p99 < {STREAM_TARGET_P99:.0f} s, every event)",
        flush=True,
    )
    if not ok:
        log.seek(0)
        print(log.read()[-3000:])
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--endpoints", type=int, default=3)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--stream-changes", type=int, default=2000)
    parser.add_argument("--patience", type=float, default=1800)
    parser.add_argument("--skip-fanout", action="store_true")
    parser.add_argument("--skip-stream", action="store_true")
    args = parser.parse_args()
    ok = True
    if not args.skip_fanout:
        with fresh_database() as url:
            asyncio.run(fanout(url, args))
    if not args.skip_stream:
        with fresh_database() as url:
            ok = asyncio.run(stream(url, args))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
