"""Benchmark: signed Twilio status callbacks against the real service and a raw baseline.

    python bench/webhooks.py [--shape {serve,split,both}] [--pairs 3] [--receipts 50000]
                             [--concurrency 32] [--seconds 15] [--warmup 3]
                             [--profile /tmp/webhooks.raw] [--events {none,off,on}]

Target: the service's throughput is at least 0.8x that of a minimal handler doing one
raw asyncpg UPDATE + INSERT per request (bench/webhook_baseline.py), and its p99 latency
is under 50 ms at half the service's own maximum rate, in each of the service's two
shapes (--shape, default both: each shape is measured in full, one after the other, and
the bench fails if either misses):

- serve: `campanile serve`, its default: one process, the delivery worker (and so the
  receipt applier) running inside the server;
- split: `campanile serve --no-worker` beside a `campanile worker`, whose receipt applier
  applies what the server stores.

Everything talks over loopback between separate processes. For each shape:

1. The database is found the way the tests find it (TEST_DATABASE_URL, or an embedded
   PostgreSQL started here and deleted on exit); a fresh database is created and migrated.
2. The real service runs as `campanile serve --no-worker --port P` (started as
   `python -m app.cli serve ...`, the same entry point, so that it is this checkout's app;
   one uvicorn process, default settings) with DATABASE_URL, SECRET_KEY, ADMIN_TOKEN,
   PUBLIC_BASE_URL=http://127.0.0.1:P and LOG_LEVEL=WARNING. The seed goes through its
   API: a school, its Twilio account (so the auth token is sealed with the server's
   SECRET_KEY), a contact list and a campaign, launched. The contacts are written with
   one INSERT ... SELECT, and so is one attempt per recipient with a provider message id,
   as the delivery worker leaves them after Twilio accepted each message (attempt
   `queued`, recipient Still in Queue, nothing due). The launch makes every recipient due
   until then, so no delivery worker runs during the seed. Then the shape's processes
   take over (same settings): serve, the server restarted without --no-worker on port P;
   split, `campanile worker` started beside it. Either way the service is what stores
   receipts and what applies them (the server's CPU includes its applier's in serve
   shape; the worker's is counted apart in split shape), and its delivery worker finds
   nothing to send: the bench checks at the end that no attempt was added.
3. The baseline runs as `python bench/webhook_baseline.py --port Q` (uvicorn defaults too).
4. The load generator is this file again, `--load`, in its own process: raw asyncio
   streams (uvloop), HTTP/1.1 keep-alive, requests built and signed before the clock
   starts. Each run gets its own slice of --receipts messages, two callbacks each (`sent`
   then `delivered`, `sent` always answered before its `delivered` is posted), so every
   request is a new event that moves its message forward. A run lasts --seconds after
   --warmup seconds, or until its slice is used up.
   - max rate, closed loop: --concurrency connections, each posting as fast as answers
     come, against the baseline then the service, --pairs times in turn (default 3):
     on a shared machine whose speed drifts from minute to minute, a baseline and a
     service run side by side in time see the same machine, and the median pair's
     ratio is the one judged (each pair's is printed);
   - latency, open loop: the service at half its max rate, requests started on schedule
     whatever the answers do, latency counted from the scheduled start (no coordinated
     omission), as many connections as needed.
5. After each run the database is checked: every answered callback stored once, and, for
   the service, applied (attempts and recipients moved forward). The service answers once
   a callback is stored and applies it in the background (its receipt applier), so the
   bench waits until the run's receipts are all applied, and counts the service's rate
   as answered *and applied*: requests / (warm-up + run + that wait), never more than the
   answered rate. That rate is the one compared with the baseline, and halved for the
   latency run.

--events measures the outbox's cost on receipts (README, Events), as bench/dispatch.py's
option does: `none` (the default) keeps the outbox's triggers with no endpoint subscribed
(every `sent` and `delivered` writes its event, which nobody takes);
`off` disables the triggers, so no event is written; `on` subscribes one webhook endpoint
of the school, after the seed, to every event type: bench/events_receiver.py in a process
of its own on loopback, answering 204, to which the service's worker (in the server's
process in serve shape, the worker's in split shape) posts each change of each recipient,
beside the receipts it applies. The receiver's count of posts is printed after the shape's
runs. Compare the ratios (or the service's rates) of `off` and `on` runs.

CPU seconds per 1,000 requests are printed for the server, PostgreSQL and the load
generator (all share the machine's cores), with the cores other processes kept busy
meanwhile: on a shared machine that skews every rate, so an idle-machine estimate from the
CPU costs is printed beside the measured ratio. --profile PATH adds one more max-rate run of
the service under `py-spy record --nonblocking` (collapsed stacks written to PATH, or with
both shapes to PATH with the shape before its suffix: webhooks.serve.raw, webhooks.split.raw)
and prints where the server's time goes; the measured runs are never profiled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _db import EVENTS_OFF, fresh_database, plain_url  # noqa: E402  (bench/_db.py)
from events_receiver import Receiver  # noqa: E402  (bench/events_receiver.py)

from app.providers.twilio.signature import HEADER, compute_signature  # noqa: E402

ADMIN_TOKEN = "bench-admin-token"
PATH = "/v1/webhooks/twilio/status"
ACCOUNT_SID = "AC" + "b3" * 16
FROM_NUMBER = "+15005550006"
RATIO_TARGET = 0.8
P99_TARGET_MS = 50.0
BLOCK = 256  # `sent` for a block of messages, then `delivered` for the same block
OPEN_LOOP_CONNECTIONS = 256
SHAPES = ("serve", "split")  # `campanile serve`; `serve --no-worker` + `campanile worker`


def sid_of(n: int) -> str:
    return f"SM{n:032x}"


# --------------------------------------------------------------------------- load generator


def callbacks(first: int, count: int) -> Iterator[tuple[int, str]]:
    """(message number, status) for `count` messages from `first`: two callbacks each."""
    for start in range(first, first + count, BLOCK):
        block = range(start, min(start + BLOCK, first + count))
        for status in ("sent", "delivered"):
            for n in block:
                yield n, status


def callback_form(n: int, status: str) -> list[tuple[str, str]]:
    """A status callback's parameters, as Twilio posts them for message n."""
    sid = sid_of(n)
    return [
        ("ApiVersion", "2010-04-01"),
        ("AccountSid", ACCOUNT_SID),
        ("From", FROM_NUMBER),
        ("To", f"+1212{200 + n // 10_000}{n % 10_000:04d}"),
        ("MessageSid", sid),
        ("MessageStatus", status),
        ("SmsSid", sid),
        ("SmsStatus", status),
    ]


def build_request(n: int, status: str, url: str, sign_url: str, token: str) -> bytes:
    """One status callback as a whole HTTP/1.1 request, signed for `sign_url`."""
    params = callback_form(n, status)
    body = urlencode(params).encode()
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\n"
        f"Host: {parts.netloc}\r\n"
        "User-Agent: TwilioProxy/1.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"{HEADER}: {compute_signature(sign_url, params, token)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection: a request, then its whole answer."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection") == "close":
            self.close()
        return status, body


@dataclass
class Tally:
    """What a load run saw inside its measured window."""

    latencies: list[float]  # seconds
    statuses: Counter[int]
    window: float  # seconds measured
    total: int  # requests answered, warm-up included
    exhausted: bool
    sample_error: str = ""
    connections: int = 0

    def record(self, status: int, latency: float, body: bytes) -> None:
        self.latencies.append(latency)
        self.statuses[status] += 1
        if status >= 300 and not self.sample_error:
            self.sample_error = f"{status} {body[:300]!r}"


async def closed_loop(
    host: str, port: int, requests: list[bytes], concurrency: int, warmup: float, seconds: float
) -> Tally:
    tally = Tally([], Counter(), seconds, 0, False, connections=concurrency)
    position = 0
    started = time.perf_counter()
    measure_from = started + warmup
    end = measure_from + seconds
    last_done = measure_from

    async def worker() -> None:
        nonlocal position, last_done
        connection = Connection(host, port)
        await connection.open()
        try:
            while time.perf_counter() < end:
                if position >= len(requests):
                    tally.exhausted = True
                    return
                request = requests[position]
                position += 1
                sent = time.perf_counter()
                status, body = await connection.exchange(request)
                done = time.perf_counter()
                tally.total += 1
                if sent >= measure_from and done <= end:
                    tally.record(status, done - sent, body)
                    last_done = max(last_done, done)
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if tally.exhausted:
        tally.window = max(last_done - measure_from, 1e-9)
    return tally


async def open_loop(
    host: str,
    port: int,
    requests: list[bytes],
    rate: float,
    connections: int,
    warmup: float,
    seconds: float,
) -> Tally:
    """Request i starts at t0 + i/rate; its latency runs from then to its whole answer."""
    tally = Tally([], Counter(), seconds, 0, False)
    wanted = int(rate * (warmup + seconds))
    if wanted > len(requests):
        tally.exhausted = True
        wanted = len(requests)
    # Up to OPEN_LOOP_CONNECTIONS in flight (opened as needed, like Twilio's senders);
    # past that a request waits for a free connection, its clock already running.
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    opened = 0
    for _ in range(connections):
        connection = Connection(host, port)
        await connection.open()
        idle.put_nowait(connection)
        opened += 1
    t0 = time.perf_counter() + 0.05
    measure_from = t0 + warmup
    last_done = measure_from

    async def one(request: bytes, scheduled: float) -> None:
        nonlocal opened, last_done
        if idle.empty() and opened < OPEN_LOOP_CONNECTIONS:
            opened += 1
            connection = Connection(host, port)
        else:
            connection = await idle.get()
        status, body = await connection.exchange(request)
        done = time.perf_counter()
        idle.put_nowait(connection)
        tally.total += 1
        if scheduled >= measure_from:
            tally.record(status, done - scheduled, body)
            last_done = max(last_done, done)

    tasks = []
    for i in range(wanted):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(requests[i], scheduled)))
    await asyncio.gather(*tasks)
    # From the first measured start to the last answer: longer than --seconds when the
    # server fell behind, so the rate printed is the one it achieved, not the one asked.
    tally.window = max(last_done - measure_from, 1e-9)
    tally.connections = opened
    while not idle.empty():
        idle.get_nowait().close()
    return tally


def quantile_ms(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50": cuts[49] * 1000,
        "p95": cuts[94] * 1000,
        "p99": cuts[98] * 1000,
        "max": max(values) * 1000,
    }


def run_load(args: argparse.Namespace) -> None:
    """`--load`: the load generator process. Prints one JSON line."""
    token = os.environ["BENCH_TWILIO_AUTH_TOKEN"]
    parts = urlsplit(args.load)
    assert parts.hostname is not None and parts.port is not None
    requests = [
        build_request(n, status, args.load, args.sign_url, token)
        for n, status in callbacks(args.first, args.count)
    ]

    async def go() -> Tally:
        assert parts.hostname is not None and parts.port is not None
        if args.rate:
            return await open_loop(
                parts.hostname,
                parts.port,
                requests,
                args.rate,
                args.concurrency,
                args.warmup,
                args.seconds,
            )
        return await closed_loop(
            parts.hostname, parts.port, requests, args.concurrency, args.warmup, args.seconds
        )

    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    built = time.process_time()  # the load's own CPU from here, not building the requests
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        tally = runner.run(go())
    cpu = time.process_time() - built
    ok = sum(n for status, n in tally.statuses.items() if 200 <= status < 300)
    print(
        json.dumps(
            {
                "answered": len(tally.latencies),
                "ok": ok,
                "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
                "window": tally.window,
                "rps": len(tally.latencies) / tally.window,
                "total": tally.total,
                "cpu": cpu,
                "build_cpu": built,
                "exhausted": tally.exhausted,
                "connections": tally.connections,
                "latency_ms": quantile_ms(tally.latencies),
                "sample_error": tally.sample_error,
            }
        )
    )


# --------------------------------------------------------------------------- CPU accounting

TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by one process; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def postgres_cpu(postmaster: int) -> float:
    """CPU seconds of one PostgreSQL server: its postmaster, the children it has reaped
    (autovacuum workers come and go) and every child alive now (backends, WAL writer...)."""
    if not postmaster:
        return 0.0
    try:
        fields = Path(f"/proc/{postmaster}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    total = sum(int(v) for v in fields[11:15]) / TICK  # utime stime cutime cstime
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def machine_busy() -> float:
    """CPU seconds the machine spent busy (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / TICK


# --------------------------------------------------------------------------- orchestration


@dataclass
class Run:
    name: str
    result: dict[str, Any]
    cpu: dict[str, float]  # CPU seconds per 1,000 answered requests (warm-up included)

    @property
    def rps(self) -> float:
        return float(self.result["rps"])

    @property
    def capacity(self) -> float:
        """Requests/s the CPU costs allow on an otherwise idle machine: the server is one
        process (one core at most), and it shares the cores with PostgreSQL and the load
        generator. An estimate, for when other work skews the measured rate."""
        server, postgres, generator = (self.cpu[k] for k in ("server", "postgres", "generator"))
        worker = self.cpu.get("worker", 0.0)  # a process of its own, like the server
        cores = os.cpu_count() or 1
        alone = 1000 / max(server, worker, 1e-9)
        return min(alone, cores * 1000 / max(server + worker + postgres + generator, 1e-9))

    def line(self) -> str:
        r = self.result
        lat = r["latency_ms"]
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in self.cpu.items())
        note = " (slice used up early: raise --receipts)" if r["exhausted"] else ""
        return (
            f"  {self.name:<34} {r['rps']:8,.0f} req/s over {r['window']:5.1f} s{note}; "
            f"latency p50 {lat.get('p50', 0):6.1f} p95 {lat.get('p95', 0):6.1f} "
            f"p99 {lat.get('p99', 0):6.1f} max {lat.get('max', 0):6.1f} ms; "
            f"statuses {r['statuses']}, {r['connections']} connections; "
            f"{r['sessions']:,} PostgreSQL connections opened\n"
            f"  {'':<34} CPU s per 1,000 requests: {cpu}; "
            f"other processes kept {r['others_cores']:.2f} cores busy"
            + (" (the machine is shared: figures skewed)" if r["others_cores"] > 0.2 else "")
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


SEED_CONTACTS = """
    INSERT INTO contacts (contact_list_id, phone, country_code, first_name, last_name, fields)
    SELECT $1, '+1212' || (200 + n / 10000)::text || lpad((n % 10000)::text, 4, '0'), 1,
           'First' || n, 'Last' || n, jsonb_build_object('grade', (9 + n % 4)::text)
    FROM generate_series(0, $2 - 1) AS n
    ORDER BY n
"""
# What the delivery worker leaves once Twilio accepted each message: one attempt with its
# message id (SM + 32 hex digits: the n-th recipient, in id order, has message n), the
# recipient Still in Queue with no attempt due.
SEED_ATTEMPTS = """
    INSERT INTO attempts (recipient_id, provider, provider_message_id, status,
                          created_at, updated_at)
    SELECT id, 'twilio', 'SM' || lpad(to_hex(row_number() OVER (ORDER BY id) - 1), 32, '0'),
           'queued', now(), now()
    FROM recipients WHERE campaign_id = $1
"""
SEED_SENT = """
    UPDATE recipients SET status = 'queued', attempts = 1, first_attempt_at = now(),
                          next_attempt_at = NULL, updated_at = now()
    WHERE campaign_id = $1
"""


class Bench:
    def __init__(self, args: argparse.Namespace, database_url: str, shape: str) -> None:
        from app.kit.crypto import new_secret_key

        self.args = args
        self.shape = shape
        self.database_url = plain_url(database_url)
        self.port = free_port()
        self.baseline_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.auth_token = uuid.uuid4().hex
        self.logs = Path(tempfile.mkdtemp(prefix="campanile-bench-webhooks-"))
        self.processes: list[subprocess.Popen[bytes]] = []
        self.service: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.secret_key = new_secret_key()
        self.campaign_id = ""
        self.postmaster = 0
        # Message numbers: 0 is the probe, then one slice of --receipts per run.
        self.next_message = 1
        self.verdict = f"{shape}: did not finish"  # the shape's figures and verdict, one line
        self.receiver: Receiver | None = None  # --events on

    # processes

    def spawn(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    async def wait_ready(self, name: str, process: subprocess.Popen[bytes], url: str) -> None:
        import httpx

        deadline = time.monotonic() + 90
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{self.log_tail(name)}")
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(url)
                    if response.status_code < 500:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{name} did not answer {url} in 90 s:\n{self.log_tail(name)}")

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.processes.remove(process)

    def stop_all(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()

    @property
    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "SECRET_KEY": self.secret_key,
            "PUBLIC_BASE_URL": self.base_url,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "LOG_LEVEL": "WARNING",
            "EVENTS_ALLOW_PRIVATE_URLS": "true",  # --events on: the receiver is on loopback
        }

    async def start_service(self, name: str = "service", in_process_worker: bool = False) -> None:
        # `campanile serve`, as the console script runs it, from this checkout (cwd=ROOT).
        command = [sys.executable, "-m", "app.cli", "serve"]
        if not in_process_worker:
            command.append("--no-worker")
        self.service = self.spawn(
            name,
            [*command, "--host", "127.0.0.1", "--port", str(self.port)],
            self.env,
        )
        await self.wait_ready(name, self.service, f"{self.base_url}/healthz")

    async def restart_service(self) -> None:
        """`campanile serve` in place of the seed's `serve --no-worker`, on the same port:
        its delivery worker and receipt applier run in the server's process."""
        assert self.service is not None
        self.stop(self.service)
        await self.start_service("service", in_process_worker=True)

    def start_worker(self) -> None:
        """`campanile worker` beside the service: it applies the receipts the service stores
        (and would send due messages: the seed leaves none due)."""
        self.worker = self.spawn("worker", [sys.executable, "-m", "app.cli", "worker"], self.env)

    @property
    def service_pid(self) -> int:
        return self.service.pid if self.service is not None else -1

    async def start_baseline(self) -> subprocess.Popen[bytes]:
        process = self.spawn(
            "baseline",
            [
                sys.executable,
                str(ROOT / "bench" / "webhook_baseline.py"),
                "--port",
                str(self.baseline_port),
                *(["--autocommit"] if self.args.baseline_autocommit else []),
            ],
            {"DATABASE_URL": self.database_url},
        )
        await self.wait_ready("baseline", process, f"http://127.0.0.1:{self.baseline_port}/")
        return process

    # seed

    async def sql(self, query: str, *args: Any) -> Any:
        import asyncpg

        connection = await asyncpg.connect(self.database_url)
        try:
            return await connection.fetch(query, *args)
        finally:
            await connection.close()

    async def sessions(self) -> int:
        """Sessions (connections) opened on the benchmark's database so far."""
        rows = await self.sql(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(rows[0]["sessions"])

    async def find_postmaster(self) -> int:
        """The PostgreSQL server's postmaster pid (0 when its data directory is not
        readable here), so that its CPU is told apart from other servers'."""
        rows = await self.sql("SELECT current_setting('data_directory') AS dir")
        try:
            return int((Path(rows[0]["dir"]) / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    async def seed(self, messages: int) -> None:
        import httpx

        started = time.perf_counter()
        async with httpx.AsyncClient(base_url=self.base_url, timeout=120) as client:

            async def call(method: str, url: str, **kwargs: Any) -> Any:
                response = await client.request(method, url, **kwargs)
                if response.status_code >= 400:
                    raise RuntimeError(f"{method} {url}: {response.status_code} {response.text}")
                return response.json()

            school = await call(
                "POST",
                "/v1/admin/schools",
                json={"name": "Bench High"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            client.headers["Authorization"] = f"Bearer {school['api_key']}"
            await call(
                "PUT",
                "/v1/school/provider",
                json={
                    "provider": "twilio",
                    "account_sid": ACCOUNT_SID,
                    "auth_token": self.auth_token,
                    "from_number": FROM_NUMBER,
                },
            )
            made = await call("POST", "/v1/contact-lists", json={"name": "Whole school"})
            await self.sql(SEED_CONTACTS, uuid.UUID(made["id"]), messages)
            await self.sql("ANALYZE contacts")
            campaign = await call(
                "POST",
                "/v1/campaigns",
                json={"name": "Snow day", "body": "No school today", "contact_list_id": made["id"]},
            )
            self.campaign_id = campaign["id"]
            launched = await call("POST", f"/v1/campaigns/{self.campaign_id}/launch")
            assert launched["counts"]["total"] == messages, launched["counts"]
            if self.args.events == "on":
                self.receiver = Receiver()
                await call("POST", "/v1/webhook-endpoints", json={"url": self.receiver.url})
        campaign_id = uuid.UUID(self.campaign_id)
        await self.sql(SEED_ATTEMPTS, campaign_id)
        await self.sql(SEED_SENT, campaign_id)
        for statement in EVENTS_OFF if self.args.events == "off" else []:
            await self.sql(statement)
        for table in ("recipients", "attempts", "receipts"):
            await self.sql(f"VACUUM ANALYZE {table}")
        print(
            f"seed: school, Twilio account, campaign launched with {messages:,} recipients over "
            f"the API; contacts and attempts by SQL; {time.perf_counter() - started:.1f} s"
        )

    # checks

    def take_slice(self) -> tuple[int, int]:
        first = self.next_message
        self.next_message += self.args.receipts
        return first, self.args.receipts

    async def probe(self) -> bool:
        """One signed `sent` callback for message 0: is the endpoint there, and does it
        verify our signature and apply the receipt?"""
        import httpx

        form = callback_form(0, "sent")
        body = urlencode(form).encode()
        signature = compute_signature(self.base_url + PATH, form, self.auth_token)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as client:
            response = await client.post(
                PATH,
                content=body,
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    HEADER: signature,
                },
            )
            unsigned = await client.post(
                PATH,
                content=body,
                headers={"Content-Type": "application/x-www-form-urlencoded", HEADER: "bad"},
            )
        if response.status_code in (404, 405):
            print(f"probe: POST {PATH} answers {response.status_code}: the endpoint is not there")
            return False
        if response.status_code >= 300:
            raise RuntimeError(f"probe: {response.status_code} {response.text}")
        await self.drain(0, 1)  # the worker's receipt applier applies it moments later
        rows = await self.sql(
            "SELECT a.status AS attempt, r.status AS recipient FROM attempts a "
            "JOIN recipients r ON r.id = a.recipient_id WHERE a.provider_message_id = $1",
            sid_of(0),
        )
        print(
            f"probe: signed callback {response.status_code} {response.text[:60]!r}; "
            f"attempt {rows[0]['attempt']}, recipient {rows[0]['recipient']}; "
            f"bad signature {unsigned.status_code}"
        )
        if (rows[0]["attempt"], rows[0]["recipient"]) != ("sent", "pending"):
            raise RuntimeError("probe: the callback was answered but not applied")
        if unsigned.status_code < 400:
            raise RuntimeError("probe: a bad signature was accepted")
        return True

    async def drain(self, first: int, count: int, within: float = 300) -> float:
        """Seconds until every stored receipt of the slice is applied: the service answers
        once a receipt is stored, and its receipt applier applies it in the background."""
        started = time.perf_counter()
        while True:
            rows = await self.sql(
                "SELECT count(*) AS n FROM receipts WHERE applied_at IS NULL "
                "AND provider_message_id BETWEEN $1 AND $2",
                sid_of(first),
                sid_of(first + count - 1),
            )
            waited = time.perf_counter() - started
            if rows[0]["n"] == 0:
                return waited
            if waited > within:
                raise RuntimeError(f"{rows[0]['n']:,} receipts still not applied after {waited} s")
            await asyncio.sleep(0.05)

    async def check(self, first: int, count: int, answered: int, applied: bool) -> str:
        low, high = sid_of(first), sid_of(first + count - 1)
        stored = await self.sql(
            "SELECT count(*) AS n, count(applied_at) AS applied FROM receipts "
            "WHERE provider_message_id BETWEEN $1 AND $2",
            low,
            high,
        )
        attempts = await self.sql(
            "SELECT a.status, r.status AS recipient, count(*) AS n FROM attempts a "
            "JOIN recipients r ON r.id = a.recipient_id "
            "WHERE a.provider_message_id BETWEEN $1 AND $2 GROUP BY 1, 2 ORDER BY 3 DESC",
            low,
            high,
        )
        mix = ", ".join(f"{r['status']}/{r['recipient']} {r['n']:,}" for r in attempts)
        n, n_applied = stored[0]["n"], stored[0]["applied"]
        problems = []
        if n < answered:
            problems.append(f"only {n:,} receipts stored for {answered:,} answered callbacks")
        if applied and n_applied != n:
            problems.append(f"{n - n_applied:,} receipts not applied")
        verdict = "; ".join(problems) if problems else "ok"
        return (
            f"check: {n:,} receipts stored ({n_applied:,} applied); "
            f"attempt/recipient: {mix}: {verdict}"
        )

    async def check_nothing_sent(self) -> tuple[str, bool]:
        """The seeded recipients were sent once, before the bench: the service's delivery
        worker must have found none due (one attempt each, the seed's, and none leased)."""
        rows = await self.sql(
            "SELECT (SELECT count(*) FROM recipients) AS recipients, "
            "(SELECT count(*) FROM attempts) AS attempts, "
            "(SELECT count(*) FROM recipients WHERE next_attempt_at IS NOT NULL "
            "OR claimed_at IS NOT NULL) AS due"
        )
        recipients, attempts, due = rows[0]["recipients"], rows[0]["attempts"], rows[0]["due"]
        ok = attempts == recipients and due == 0
        return (
            f"check: {attempts:,} attempts for {recipients:,} recipients, {due:,} due or "
            f"leased: {'ok, the delivery worker sent nothing' if ok else 'something was sent'}"
        ), ok

    # runs

    async def load(
        self,
        name: str,
        port: int,
        pid: int,
        rate: float = 0.0,
        profile: Path | None = None,
    ) -> tuple[Run, tuple[int, int]]:
        first, count = self.take_slice()
        url = f"http://127.0.0.1:{port}{PATH}"
        command = [
            sys.executable,
            __file__,
            "--load",
            url,
            "--sign-url",
            self.base_url + PATH,
            "--first",
            str(first),
            "--count",
            str(count),
            "--concurrency",
            str(self.args.concurrency),
            "--seconds",
            str(self.args.seconds),
            "--warmup",
            str(self.args.warmup),
            "--rate",
            str(rate),
        ]
        generator = await asyncio.create_subprocess_exec(
            *command,
            cwd=ROOT,
            env={**os.environ, "BENCH_TWILIO_AUTH_TOKEN": self.auth_token},
            stdout=asyncio.subprocess.PIPE,
        )
        sessions_before = await self.sessions()
        started = time.perf_counter()
        # The service's worker applies what the service stores: its CPU is the service's too
        # (in serve shape the applier runs in the server: its CPU is in the server's).
        worker = self.worker.pid if self.worker is not None and pid == self.service_pid else 0
        before = (process_cpu(pid), postgres_cpu(self.postmaster), machine_busy())
        worker_before = process_cpu(worker) if worker else 0.0
        spy = None
        if profile is not None:
            spy = await asyncio.create_subprocess_exec(
                py_spy(),
                "record",
                "--pid",
                str(pid),
                "--rate",
                "250",
                "--nonblocking",
                "--format",
                "raw",
                "--duration",
                str(int(self.args.warmup + self.args.seconds)),
                "--output",
                str(profile),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        output, _ = await generator.communicate()
        after = (process_cpu(pid), postgres_cpu(self.postmaster), machine_busy())
        worker_after = process_cpu(worker) if worker else 0.0
        wall = time.perf_counter() - started
        if generator.returncode != 0:
            raise RuntimeError(f"load generator failed ({generator.returncode})")
        if spy is not None:
            _, err = await spy.communicate()
            if spy.returncode != 0:
                print(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
        result = json.loads(output.decode().strip().splitlines()[-1])
        # Connections opened during the run (a pool that keeps closing and reopening them
        # pays a connect, its setup queries and new prepared statements each time).
        result["sessions"] = await self.sessions() - sessions_before - 1  # less our own query
        per = 1000 / max(result["total"], 1)
        cpu = {
            "server": (after[0] - before[0]) * per,
            "postgres": (after[1] - before[1]) * per,
            "generator": result["cpu"] * per,
        }
        if worker:
            cpu["worker"] = (worker_after - worker_before) * per
        # Whatever else ran on the machine meanwhile (other work on a shared machine skews
        # every figure here: look at this before trusting a run).
        others = after[2] - before[2] - result["build_cpu"]
        cpu["other processes"] = others * per - sum(cpu.values())
        result["others_cores"] = cpu["other processes"] * result["total"] / 1000 / wall
        return Run(name, result, cpu), (first, count)

    async def run(self) -> bool:
        args = self.args
        runs = 2 * args.pairs + 1 + (1 if args.profile else 0)
        service_shape = {
            "serve": "campanile serve (its delivery worker and receipt applier inside)",
            "split": "campanile serve --no-worker + campanile worker",
        }[self.shape]
        print(
            f"webhooks bench, {self.shape} shape: {service_shape}; {args.receipts:,} messages "
            f"({2 * args.receipts:,} callbacks) per run, concurrency {args.concurrency}, "
            f"{args.warmup:g} s warm-up + {args.seconds:g} s per run; events {args.events}; "
            f"{os.cpu_count()} cores, "
            f"load average {os.getloadavg()[0]:.2f}; logs in {self.logs}"
        )
        self.postmaster = await self.find_postmaster()
        # No delivery worker while the seed runs: the launch makes every recipient due.
        await self.start_service("service-seed" if self.shape == "serve" else "service")
        await self.seed(1 + runs * args.receipts)
        if self.shape == "serve":
            await self.restart_service()
        else:
            self.start_worker()
        assert self.service is not None
        baseline = await self.start_baseline()
        endpoint = await self.probe()

        mode = "autocommit" if args.baseline_autocommit else "one transaction"
        if not endpoint:
            base, where = await self.load(f"baseline ({mode})", self.baseline_port, baseline.pid)
            print(base.line())
            print("  " + await self.check(*where, base.result["ok"], applied=False))
            # Still exercise the open-loop generator, against the baseline.
            paced, where = await self.load(
                f"baseline at {base.rps / 2:,.0f} req/s (open loop)",
                self.baseline_port,
                baseline.pid,
                rate=base.rps / 2,
            )
            print(paced.line())
            print("  " + await self.check(*where, paced.result["ok"], applied=False))
            print("FAIL: the service has no Twilio status endpoint yet; only the baseline ran")
            return False

        # Baseline and service in turn, --pairs times: each pair's runs lie next to each
        # other in time, so a machine whose speed drifts (a neighbour's load) skews both.
        pairs: list[tuple[Run, Run, float]] = []
        for n in range(1, args.pairs + 1):
            label = f" {n}/{args.pairs}" if args.pairs > 1 else ""
            base, where = await self.load(
                f"baseline ({mode}){label}", self.baseline_port, baseline.pid
            )
            print(base.line())
            print("  " + await self.check(*where, base.result["ok"], applied=False))
            service, where = await self.load(
                f"service, max rate{label}", self.port, self.service.pid
            )
            print(service.line())
            # Answered is not applied: the rate that counts is answered and applied.
            lag = await self.drain(*where)
            span = args.warmup + service.result["window"]
            answered_applied = min(service.rps, service.result["total"] / (span + lag))
            print(
                f"  {'':<34} applied {lag:.2f} s after the load stopped: "
                f"{answered_applied:,.0f} req/s answered and applied; pair ratio "
                f"{answered_applied / base.rps:.2f}"
            )
            print("  " + await self.check(*where, service.result["ok"], applied=True))
            pairs.append((base, service, answered_applied))
        # The median pair (by its ratio) is the one judged.
        base, service, sustained = sorted(pairs, key=lambda p: p[2] / p[0].rps)[len(pairs) // 2]
        half = sustained / 2
        paced, where = await self.load(
            f"service at {half:,.0f} req/s (open loop)", self.port, self.service.pid, rate=half
        )
        print(paced.line())
        paced_lag = await self.drain(*where)
        print(f"  {'':<34} applied {paced_lag:.2f} s after the load stopped")
        print("  " + await self.check(*where, paced.result["ok"], applied=True))

        if args.profile:
            profile = Path(args.profile)
            if args.shape == "both":  # webhooks.raw -> webhooks.serve.raw, webhooks.split.raw
                profile = profile.with_name(f"{profile.stem}.{self.shape}{profile.suffix}")
            profiled, where = await self.load(
                "service, max rate, under py-spy",
                self.port,
                self.service.pid,
                profile=profile,
            )
            print(profiled.line())
            summarise_profile(profile)
        sent, nothing_sent = await self.check_nothing_sent()
        print("  " + sent)
        if self.receiver is not None:
            print(f"  events receiver: {await self.receiver.posts():,} posts during the runs")

        failures = [
            run.name
            for run in (*(r for pair in pairs for r in pair[:2]), paced)
            if run.result["ok"] != run.result["answered"] or run.result["answered"] == 0
        ]
        ratio = sustained / base.rps
        p99 = paced.result["latency_ms"].get("p99", float("inf"))
        ratio_ok = ratio >= RATIO_TARGET and not failures and nothing_sent
        p99_ok = p99 < P99_TARGET_MS and not failures and nothing_sent
        print()
        if len(pairs) > 1:
            ratios = ", ".join(f"{p[2] / p[0].rps:.2f}" for p in pairs)
            print(f"pair ratios: {ratios}; the median pair is judged")
        print(f"baseline: {base.rps:8,.0f} req/s")
        print(
            f"service:  {sustained:8,.0f} req/s answered and applied ({service.rps:,.0f} answered)"
        )
        print(f"ratio:    {ratio:8.2f}")
        print(
            f"(from CPU costs, on an idle machine: baseline ~{base.capacity:,.0f} req/s, service "
            f"~{service.capacity:,.0f} req/s, ratio ~{service.capacity / base.capacity:.2f}; "
            "an estimate, not the target's measure)"
        )
        if failures:
            print(f"non-2xx answers in: {', '.join(failures)}")
        if not nothing_sent:
            print("the delivery worker sent seeded recipients again: the figures are not valid")
        print(
            f"{'PASS' if ratio_ok else 'FAIL'}: throughput ratio {ratio:.2f} "
            f"(target >= {RATIO_TARGET})"
        )
        print(
            f"{'PASS' if p99_ok else 'FAIL'}: p99 {p99:.1f} ms at {paced.rps:,.0f} req/s "
            f"(half of {sustained:,.0f}; target < {P99_TARGET_MS:g} ms)"
        )
        self.verdict = (
            f"{self.shape}: baseline {base.rps:,.0f} req/s, service {sustained:,.0f} req/s, "
            f"ratio {ratio:.2f} {'PASS' if ratio_ok else 'FAIL'}; p99 {p99:.1f} ms at "
            f"{paced.rps:,.0f} req/s {'PASS' if p99_ok else 'FAIL'}"
        )
        return ratio_ok and p99_ok


def py_spy() -> str:
    found = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if found is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return found


# Leaves where a thread waits rather than works (py-spy's idle detection misses some).
IDLE_LEAVES = ("Condition.wait (threading.py", "Runner.run (asyncio/runners.py", "select (")


def package_of(frame: str) -> str:
    """`Session.execute (sqlalchemy/orm/session.py:2555)` -> `sqlalchemy`."""
    location = frame.rpartition("(")[2].rstrip(")")
    path = location.rpartition(":")[0]
    if not path:
        return "(native)"
    return path.split("/")[0] if "/" in path else path


def summarise_profile(path: Path, top: int = 25) -> None:
    """Where the server's busy samples went: by package (leaf frame, and anywhere in the
    stack), the app's own frames, and the hottest leaves. SQLAlchemy runs statements in
    greenlets, whose stacks py-spy shows apart from the request's: count by package."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    in_stack: Counter[str] = Counter()
    total = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if frames[-1].startswith(IDLE_LEAVES):
            idle += n
            continue
        total += n
        leaf[frames[-1]] += n
        packages[package_of(frames[-1])] += n
        for frame in set(frames):
            inclusive[frame] += n
        for package in {package_of(frame) for frame in frames}:
            in_stack[package] += n
    if not total:
        print("profile: no samples")
        return
    print(f"profile: {total:,} busy samples ({idle:,} idle left out) in {path}")
    print("  by package: self time (anywhere in the stack)")
    for package, n in packages.most_common(12):
        print(f"  {100 * n / total:5.1f}% ({100 * in_stack[package] / total:5.1f}%)  {package}")
    print("  the app's own frames, including callees (greenlet stacks not joined):")
    own = [(f, n) for f, n in inclusive.most_common() if "(app/" in f and "app/cli.py" not in f]
    for frame, n in own[:top]:
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print("  leaves (self time):")
    for frame, n in leaf.most_common(top // 2):
        print(f"  {100 * n / total:5.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--receipts",
        type=int,
        default=50_000,
        help="messages per run, two callbacks each (sent, delivered); a run ends early when "
        "its callbacks are used up, so keep it above (warmup + seconds) x rate / 2",
    )
    parser.add_argument(
        "--shape",
        choices=[*SHAPES, "both"],
        default="both",
        help="serve: `campanile serve` (applier in the server); split: `serve --no-worker` "
        "+ `campanile worker`; both (default): each in full, one after the other",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="max-rate runs of the baseline and the service, in turn; the median pair's "
        "ratio is judged (default 3)",
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--baseline-autocommit",
        action="store_true",
        help="the baseline's two statements autocommitted instead of in one transaction",
    )
    parser.add_argument("--profile", metavar="PATH", help="py-spy raw stacks of one more run")
    parser.add_argument(
        "--events",
        choices=("none", "off", "on"),
        default="none",
        help="the outbox: triggers on, no endpoint (none); triggers off (off); one endpoint "
        "subscribed, posted to on loopback (on)",
    )
    # The load generator's own options (run as a subprocess of the benchmark).
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--sign-url", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        run_load(args)
        return

    shapes = SHAPES if args.shape == "both" else (args.shape,)
    verdicts: list[tuple[bool, str]] = []
    for shape in shapes:
        if verdicts:
            print()
        ok = False
        bench: Bench | None = None
        with fresh_database() as database_url:
            try:
                bench = Bench(args, database_url, shape)
                ok = asyncio.run(bench.run())
            finally:
                if bench is not None:
                    bench.stop_all()
        verdicts.append((ok, bench.verdict))
    if len(verdicts) > 1:
        print()
        for ok, verdict in verdicts:
            print(f"{'PASS' if ok else 'FAIL'} {verdict}")
    raise SystemExit(0 if all(ok for ok, _ in verdicts) else 1)


if __name__ == "__main__":
    main()
