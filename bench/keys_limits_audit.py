"""Benchmark: what key lookup, rate limits and the audit trail cost a request.

    python bench/keys_limits_audit.py [--pages 2000] [--launches 150] [--contacts 200]
                                      [--baseline /path/to/another/checkout]

Two requests are timed over the real ASGI app (httpx ASGITransport, each request in its own
committed transaction, as in production), each in a process of its own on a fresh database
(TEST_DATABASE_URL's server, or an embedded one):
- the recipients page, `GET /v1/campaigns/{id}/contacts?limit=50` (a launched campaign of
  --contacts contacts), --pages times;
- `POST /v1/campaigns/{id}/launch` of a draft of --contacts contacts, --launches times (the
  audit event is written in the launch's transaction).
Runs: this checkout with the limit on (`RATE_LIMIT_PER_MINUTE` high enough never to refuse:
the bucket is spent on every request) and off (`0`); with --baseline, also that checkout
(e.g. the branch point, without keys' checks, limits or audit), run from its own code.
Figures: p50 and p99 in ms, and each run against the "limits off" one. Target: limits on
within 10% of limits off, p50 and p99. Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "bench-admin-token"
WARMUP = 50
TARGET = 1.10
NEVER_REFUSES = 1_000_000_000


def quantiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": statistics.median(values), "p99": cuts[98]}


def measure(pages: int, launches: int, contacts: int) -> dict[str, Any]:
    """One run, in this process, with the code PYTHONPATH names and the environment's limit,
    on a fresh database migrated by the measured checkout's migrations (the run's cwd)."""
    import _db  # bench/_db.py

    _db.ROOT = Path.cwd()
    with _db.fresh_database() as database_url:
        return asyncio.run(_measure(database_url, pages, launches, contacts))


async def _measure(database_url: str, pages: int, launches: int, contacts: int) -> dict[str, Any]:
    import httpx

    from app.config import Settings
    from app.kit.crypto import new_secret_key
    from app.main import bind, create_app, unbind

    settings = Settings(
        database_url=database_url, secret_key=new_secret_key(), admin_token=ADMIN_TOKEN
    )
    app = create_app(settings)
    bind(app, settings)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            return await _run(client, pages, launches, contacts)
    finally:
        await unbind(app)


async def _run(client: Any, pages: int, launches: int, contacts: int) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    made = await client.post(
        "/v1/admin/schools", json={"name": "Bench High", "sending_window": None}, headers=admin
    )
    auth = {"Authorization": f"Bearer {made.json()['api_key']}"}
    created = await client.post("/v1/contact-lists", json={"name": "All"}, headers=auth)
    list_id = created.json()["id"]
    people = [
        {"phone": f"+1212{200 + n // 10_000}{n % 10_000:04d}", "first_name": f"Kid{n}"}
        for n in range(contacts)
    ]
    imported = await client.post(
        f"/v1/contact-lists/{list_id}/contacts", json={"contacts": people}, headers=auth
    )
    assert imported.status_code == 200, imported.text
    draft = {"name": "Bench", "body": "Hi {first_name}", "contact_list_id": list_id}

    async def new_draft() -> str:
        response = await client.post("/v1/campaigns", json=draft, headers=auth)
        assert response.status_code == 201, response.text
        campaign_id: str = response.json()["id"]
        return campaign_id

    launch_ms: list[float] = []
    for i in range(WARMUP // 5 + launches):
        campaign_id = await new_draft()
        started = time.perf_counter()
        response = await client.post(f"/v1/campaigns/{campaign_id}/launch", headers=auth)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, response.text
        if i >= WARMUP // 5:
            launch_ms.append(elapsed)

    page_ms: list[float] = []
    url = f"/v1/campaigns/{campaign_id}/contacts"
    for i in range(WARMUP + pages):
        started = time.perf_counter()
        response = await client.get(url, params={"limit": 50}, headers=auth)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, response.text
        if i >= WARMUP:
            page_ms.append(elapsed)
    return {"page": quantiles(page_ms), "launch": quantiles(launch_ms)}


def run(label: str, checkout: Path, limit: int, args: argparse.Namespace) -> dict[str, Any]:
    """One measured run in a process of its own, on `checkout`'s code."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(checkout), str(ROOT / "bench")]),
        "RATE_LIMIT_PER_MINUTE": str(limit),
        "LOG_LEVEL": "WARNING",
    }
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--measure",
        *("--pages", str(args.pages), "--launches", str(args.launches)),
        *("--contacts", str(args.contacts)),
    ]
    print(f"running {label} ...", file=sys.stderr, flush=True)
    output = subprocess.run(
        command, env=env, cwd=checkout, check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--launches", type=int, default=150)
    parser.add_argument("--contacts", type=int, default=200)
    parser.add_argument("--baseline", type=Path, help="another checkout to run for comparison")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, interleaved")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.pages, args.launches, args.contacts)))
        return

    runs: list[tuple[str, Path, int]] = [
        ("limits off", ROOT, 0),
        ("limits on", ROOT, NEVER_REFUSES),
    ]
    if args.baseline:
        runs.append((f"baseline {args.baseline}", args.baseline.resolve(), 0))
    # Interleaved rounds, each figure the best round's (the least disturbed by the machine).
    results: dict[str, dict[str, dict[str, float]]] = {}
    for _ in range(args.rounds):
        for label, checkout, limit in runs:
            got = run(label, checkout, limit, args)
            best = results.setdefault(label, got)
            for request, figures in got.items():
                for q, value in figures.items():
                    best[request][q] = min(best[request][q], value)

    off = results["limits off"]
    print(
        f"\n{args.contacts} contacts; {args.pages} recipients pages, {args.launches} launches; "
        f"best of {args.rounds} interleaved rounds"
    )
    print(
        f"{'run':<40} {'request':<16} {'p50 ms':>8} {'p99 ms':>8} {'p50 vs off':>11} "
        f"{'p99 vs off':>11}"
    )
    verdicts = []
    for label, _, _ in runs:
        for request, figures in results[label].items():
            ratios = [figures[q] / off[request][q] for q in ("p50", "p99")]
            print(
                f"{label:<40} {request:<16} {figures['p50']:>8.2f} {figures['p99']:>8.2f} "
                f"{ratios[0]:>10.1%} {ratios[1]:>10.1%}"
            )
            if label == "limits on":
                verdicts += [ratio <= TARGET for ratio in ratios]
    print(
        f"\nlimits on within {TARGET - 1:.0%} of limits off (p50 and p99): "
        f"{'yes' if all(verdicts) else 'NO'}"
    )


if __name__ == "__main__":
    main()
