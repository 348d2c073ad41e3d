"""Benchmark: the console's Contacts page of a 100,000-recipient campaign, in Chromium.

    python bench/console.py [--contacts 100000] [--loads 15] [--filters 20]

A database of its own (bench/_db.py: TEST_DATABASE_URL's server or an embedded one), a
live `campanile serve --no-worker` on it, and Debian's Chromium (/usr/bin/chromium) driven
by Playwright. The contacts are written with SQL and the campaign is launched over the API,
then given bench/campaign_pages.py's status mix (60% delivered, 10% failed with various
reasons, 10% pending, 10% scheduled, 10% queued).

Measured in the browser with the Performance API: the console marks `contacts-rendered`
each time the Contacts table has been drawn from an answer of the API.
1. First screen: from the navigation's start to the first mark (the campaign, its counts and
   the first 50 contacts on screen), over --loads fresh loads. Target: < 1 s.
2. Filter answers: from the click on a status filter (or the change of the failed-reason
   filter) to the table drawn again, over --filters rounds of every filter. Target: p95
   < 300 ms. The search box waits for a 250 ms pause in typing before it asks; its figure
   is from the pause's end (the request) to the table drawn.
The campaign has one event per recipient in its outbox, readable at once. A new page
starts its stream where the stream is (its first token's `last_event_id`, README,
Console), so it replays none of them: a page that replayed the campaign's history would
show it in these figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from _db import fresh_database, plain_url  # bench/_db.py
from campaign_pages import FIRST_NAMES, LAST_NAMES, SEED_CONTACTS, status_mix_sql
from playwright.sync_api import Page, sync_playwright

from app.kit.crypto import new_secret_key

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ADMIN_TOKEN = "bench-admin-token"
FIRST_SCREEN_TARGET_MS = 1000.0
FILTER_TARGET_MS = 300.0
FILTERS = ["Delivered", "Pending", "Scheduled", "Still in Queue", "Failed", "All"]
REASONS = ["blocked", "unreachable_number", ""]

# In the page: act, then wait for the table's next mark; ms from the act to the mark.
TIMED = """
async ([kind, value]) => {
  const marks = () => performance.getEntriesByName("contacts-rendered");
  const before = marks().length;
  let started;
  if (kind === "status") {
    const button = [...document.querySelectorAll("button.filter")]
      .find((b) => b.textContent === value);
    started = performance.now();
    button.click();
  } else if (kind === "reason") {
    const select = document.getElementById("failed-reason");
    select.value = value;
    started = performance.now();
    select.dispatchEvent(new Event("change"));
  } else {
    const search = document.getElementById("contacts-search");
    search.value = value;
    search.dispatchEvent(new Event("input"));
    started = performance.now() + 250;  // the pause the box waits for
  }
  while (marks().length === before) await new Promise((r) => setTimeout(r, 5));
  return marks()[before].startTime - started;
}
"""

# A load's parts: each request's start and end (ms from the navigation's start).
TIMELINE = """
() => [
  ["page", 0, performance.getEntriesByType("navigation")[0].responseEnd],
  ...performance.getEntriesByType("resource").map((e) => [
    e.name.replace(location.origin, "").split("?")[0], e.startTime, e.responseEnd,
  ]),
  ["drawn", 0, performance.getEntriesByName("contacts-rendered")[0].startTime],
]
"""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summary(name: str, values: list[float], target: float) -> bool:
    p50, p95 = statistics.median(values), percentile(values, 0.95)
    ok = p95 < target
    print(
        f"  {name:<28} n={len(values):<4} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  "
        f"max {max(values):7.1f} ms  {'ok' if ok else 'OVER'} (target p95 < {target:.0f} ms)"
    )
    return ok


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serve(database_url: str, port: int, log: Any) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY=new_secret_key(),
        ADMIN_TOKEN=ADMIN_TOKEN,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        RATE_LIMIT_PER_MINUTE="0",  # the bench's own pace is not a school's script
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    command = [sys.executable, "-m", "app.cli", "serve", "--no-worker", "--port", str(port)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(base: str) -> None:
    for _ in range(300):
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not start")


def set_up(base: str, database_url: str, contacts: int) -> tuple[str, str]:
    """A school, its list of `contacts`, a campaign launched on it and mixed: (key, id)."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    school = httpx.post(f"{base}/v1/admin/schools", json={"name": "Bench High"}, headers=admin)
    school.raise_for_status()
    key = school.json()["api_key"]
    http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    made = http.post("/v1/contact-lists", json={"name": "Whole school"}).json()

    async def sql(statement: str, *args: Any) -> str:
        connection = await asyncpg.connect(plain_url(database_url))
        try:
            await connection.execute("SELECT setseed(0.42)")
            return str(await connection.execute(statement, *args))
        finally:
            await connection.close()

    started = time.perf_counter()
    list_id = uuid.UUID(made["id"])
    asyncio.run(sql(SEED_CONTACTS, list_id, FIRST_NAMES, LAST_NAMES, contacts))
    body = {"name": "Snow day", "body": "Hi {first_name}", "contact_list_id": made["id"]}
    campaign = http.post("/v1/campaigns", json=body).json()
    http.post(f"/v1/campaigns/{campaign['id']}/launch").raise_for_status()
    mixed = asyncio.run(sql(status_mix_sql(), uuid.UUID(campaign["id"])))
    asyncio.run(sql("VACUUM ANALYZE recipients"))
    print(
        f"setup: {contacts:,} contacts (SQL), launched over the API, status mix ({mixed}) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return key, campaign["id"]


def measure(page_for: Any, campaign_id: str, loads: int, rounds: int, search: str) -> bool:
    first: list[float] = []
    for _ in range(loads):
        page: Page = page_for()
        page.goto(f"/console#/campaigns/{campaign_id}")
        page.wait_for_function("() => performance.getEntriesByName('contacts-rendered').length > 0")
        first.append(
            page.evaluate("performance.getEntriesByName('contacts-rendered')[0].startTime")
        )
        timeline = page.evaluate(TIMELINE)
        page.context.close()
    ok = summary("first screen", first, FIRST_SCREEN_TARGET_MS)
    print("    the last load (ms): " + ", ".join(f"{n} {a:.0f}-{b:.0f}" for n, a, b in timeline))

    page = page_for()
    page.goto(f"/console#/campaigns/{campaign_id}")
    page.wait_for_function("() => performance.getEntriesByName('contacts-rendered').length > 0")
    statuses: list[float] = []
    reasons: list[float] = []
    searches: list[float] = []
    for _ in range(rounds):
        statuses += [page.evaluate(TIMED, ["status", label]) for label in FILTERS]
        reasons += [page.evaluate(TIMED, ["reason", code]) for code in REASONS]
        searches += [page.evaluate(TIMED, ["search", word]) for word in (search, "")]
    ok &= summary("status filter", statuses, FILTER_TARGET_MS)
    ok &= summary("failed-reason filter", reasons, FILTER_TARGET_MS)
    ok &= summary("search (after the pause)", searches, FILTER_TARGET_MS)
    page.context.close()
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--loads", type=int, default=15)
    parser.add_argument("--filters", type=int, default=20)
    args = parser.parse_args()
    ok = True
    with fresh_database() as database_url:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-console-{port}.log"
        with log_path.open("wb") as log:
            server = serve(database_url, port, log)
        try:
            wait_ready(base)
            key, campaign_id = set_up(base, database_url, args.contacts)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox"]
                )

                def page_for() -> Page:
                    context = browser.new_context(
                        base_url=base, viewport={"width": 1280, "height": 800}
                    )
                    context.add_init_script(f"sessionStorage.setItem('campanile.apiKey', {key!r})")
                    return context.new_page()

                ok &= measure(page_for, campaign_id, args.loads, args.filters, FIRST_NAMES[3])
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print("all targets met" if ok else "some targets missed")


if __name__ == "__main__":
    main()
