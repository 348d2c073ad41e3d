"""Benchmark: what key lookup, rate limits and the audit trail cost a request.

    python bench/keys_limits_audit.py [--pages 2000] [--launches 300] [--contacts 200]
                                      [--rounds 3] [--baseline /path/to/another/checkout]

Two requests are timed over the real ASGI app (httpx ASGITransport, each request in its own
committed transaction, as in production), on a fresh database (TEST_DATABASE_URL's server,
or an embedded one):
- the recipients page, `GET /v1/campaigns/{id}/contacts?limit=50` (a launched campaign of
  --contacts contacts), --pages times;
- `POST /v1/campaigns/{id}/launch` of a draft of --contacts contacts, --launches times (the
  audit event is written in the launch's transaction).
Each of them on two apps of this checkout, in one process, on the same database and school,
taking turns in blocks (so that what the machine does meanwhile falls on both alike):
- "on": as deployed, every request counted among the key's requests in flight, its rate
  limit spent (`RATE_LIMIT_PER_MINUTE` high enough never to refuse), the key looked up with
  its revocation check and its last use noted, the request id, the audit event;
- "off": all of that taken out (bench/_keys_limits_audit_off.py): no limits, the key looked
  up as before keys were managed (the school by its token's hash, nothing else), no
  request-id middleware, no audit event. What is left is what an authenticated request did
  before, so on against off is what the feature costs. (`RATE_LIMIT_PER_MINUTE=0` alone, as
  this bench once compared, left the lookup, the last use and the audit in both.)
--rounds such processes, each on a fresh database. With --baseline, also that checkout
(e.g. the feature's branch point) as it is, in processes of its own from its own code and
migrations: the rest of the service differs too, so it is a cross-check only.
Figures: p50 and p99 in ms, and on against off, each the median of the rounds with their
spread [min-max] (on against off taken within each round). Target: on within 10% of off,
p50 and p99. Prints figures; not a test.
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "bench-admin-token"
WARMUP = 50
BLOCK = 50  # requests of one app before the other's turn
TARGET = 1.10
NEVER_REFUSES = 1_000_000_000
ON, OFF, AS_IS = "on", "off", "as is"
REQUESTS = ("page", "launch")


def quantiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": statistics.median(values), "p99": cuts[98]}


def measure(pages: int, launches: int, contacts: int, modes: list[str]) -> dict[str, Any]:
    """One round, in this process, with the code PYTHONPATH names, on a fresh database
    migrated by the measured checkout's migrations (the run's cwd): {mode: {request: q}}."""
    import _db  # bench/_db.py

    _db.ROOT = Path.cwd()
    with _db.fresh_database() as database_url:
        return asyncio.run(_measure(database_url, pages, launches, contacts, modes))


async def _measure(
    database_url: str, pages: int, launches: int, contacts: int, modes: list[str]
) -> dict[str, Any]:
    import httpx

    from app.config import Settings
    from app.kit.crypto import new_secret_key
    from app.main import bind, create_app, unbind

    settings = Settings(
        database_url=database_url, secret_key=new_secret_key(), admin_token=ADMIN_TOKEN
    )
    apps = {}
    for mode in modes:
        app = create_app(settings)
        bind(app, settings)
        if mode == OFF:
            from _keys_limits_audit_off import feature_off  # bench/_keys_limits_audit_off.py

            feature_off(app)
        apps[mode] = app
    clients = {
        mode: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
        for mode, app in apps.items()
    }
    try:
        return await _run(clients, pages, launches, contacts)
    finally:
        for mode, client in clients.items():
            await client.aclose()
            await unbind(apps[mode])


async def _run(clients: dict[str, Any], pages: int, launches: int, contacts: int) -> dict[str, Any]:
    any_client = next(iter(clients.values()))
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    made = await any_client.post(
        "/v1/admin/schools", json={"name": "Bench High", "sending_window": None}, headers=admin
    )
    auth = {"Authorization": f"Bearer {made.json()['api_key']}"}
    created = await any_client.post("/v1/contact-lists", json={"name": "All"}, headers=auth)
    list_id = created.json()["id"]
    people = [
        {"phone": f"+1212{200 + n // 10_000}{n % 10_000:04d}", "first_name": f"Kid{n}"}
        for n in range(contacts)
    ]
    imported = await any_client.post(
        f"/v1/contact-lists/{list_id}/contacts", json={"contacts": people}, headers=auth
    )
    assert imported.status_code == 200, imported.text
    draft = {"name": "Bench", "body": "Hi {first_name}", "contact_list_id": list_id}

    async def new_draft(client: Any) -> str:
        response = await client.post("/v1/campaigns", json=draft, headers=auth)
        assert response.status_code == 201, response.text
        campaign_id: str = response.json()["id"]
        return campaign_id

    async def launch(client: Any) -> float:
        url = f"/v1/campaigns/{await new_draft(client)}/launch"
        started = time.perf_counter()
        response = await client.post(url, headers=auth)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, response.text
        return elapsed

    paged = await new_draft(any_client)
    response = await any_client.post(f"/v1/campaigns/{paged}/launch", headers=auth)
    assert response.status_code == 200, response.text

    async def page(client: Any) -> float:
        started = time.perf_counter()
        response = await client.get(
            f"/v1/campaigns/{paged}/contacts", params={"limit": 50}, headers=auth
        )
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, response.text
        return elapsed

    results: dict[str, dict[str, dict[str, float]]] = {mode: {} for mode in clients}
    timed: dict[str, Callable[[Any], Awaitable[float]]] = {"page": page, "launch": launch}
    # (request, how many, block, warm-up) for each app
    plan = (("launch", launches, BLOCK // 5, WARMUP // 5), ("page", pages, BLOCK, WARMUP))
    for request, count, block, warmup in plan:
        for client in clients.values():
            for _ in range(warmup):
                await timed[request](client)
        samples: dict[str, list[float]] = {mode: [] for mode in clients}
        turns = list(clients.items())
        for n in range(0, count, block):
            # Taking turns, each app first every other block.
            for mode, client in turns if n // block % 2 == 0 else turns[::-1]:
                for _ in range(min(block, count - n)):
                    samples[mode].append(await timed[request](client))
        for mode in clients:
            results[mode][request] = quantiles(samples[mode])
    return results


def run(checkout: Path, modes: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """One round in a process of its own, on `checkout`'s code."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(checkout), str(ROOT / "bench")]),
        "RATE_LIMIT_PER_MINUTE": str(NEVER_REFUSES),
        "LOG_LEVEL": "WARNING",
    }
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--measure",
        *("--pages", str(args.pages), "--launches", str(args.launches)),
        *("--contacts", str(args.contacts), "--modes", ",".join(modes)),
    ]
    print(f"running {' and '.join(modes)} on {checkout} ...", file=sys.stderr, flush=True)
    output = subprocess.run(
        command, env=env, cwd=checkout, check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def spread(values: list[float], unit: str = "") -> str:
    if unit == "%":
        return f"{statistics.median(values):.1%} [{min(values):.1%}-{max(values):.1%}]"
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--launches", type=int, default=300)
    parser.add_argument("--contacts", type=int, default=200)
    parser.add_argument("--baseline", type=Path, help="another checkout to run for comparison")
    parser.add_argument("--rounds", type=int, default=3, help="processes of each")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--modes", default=f"{ON},{OFF}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        modes = args.modes.split(",")
        print(json.dumps(measure(args.pages, args.launches, args.contacts, modes)))
        return

    rounds: list[dict[str, Any]] = []
    baseline: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        rounds.append(run(ROOT, [ON, OFF], args))
        if args.baseline:
            baseline.append(run(args.baseline.resolve(), [AS_IS], args)[AS_IS])

    print(
        f"\n{args.contacts} contacts; {args.pages} recipients pages and {args.launches} "
        f"launches per app, in blocks of {BLOCK} and {BLOCK // 5}; {args.rounds} rounds: "
        "median of the rounds [min-max]"
    )
    print(
        f"{'run':<10} {'request':<8} {'p50 ms':>20} {'p99 ms':>22} {'p50 vs off':>24} "
        f"{'p99 vs off':>24}"
    )
    verdicts = []
    labelled = [(ON, [r[ON] for r in rounds]), (OFF, [r[OFF] for r in rounds])]
    if baseline:
        labelled.append(("baseline", baseline))
    offs = [r[OFF] for r in rounds]
    for label, runs in labelled:
        for request in REQUESTS:
            shown = [spread([got[request][q] for got in runs]) for q in ("p50", "p99")]
            ratios = []
            for q in ("p50", "p99"):
                # Within each round (a baseline's round beside this checkout's same round).
                each = [
                    got[request][q] / off[request][q] for got, off in zip(runs, offs, strict=True)
                ]
                ratios.append(spread(each, "%"))
                if label == ON:
                    verdicts.append(statistics.median(each) <= TARGET)
            print(
                f"{label:<10} {request:<8} {shown[0]:>20} {shown[1]:>22} {ratios[0]:>24} "
                f"{ratios[1]:>24}"
            )
    if args.baseline:
        print(f"baseline: {args.baseline}")
    print(
        f"\non within {TARGET - 1:.0%} of off (p50 and p99, medians of the rounds): "
        f"{'yes' if all(verdicts) else 'NO'}"
    )


if __name__ == "__main__":
    main()
