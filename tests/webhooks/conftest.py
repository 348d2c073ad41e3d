"""Fixtures for the webhook tests: schools with a Twilio or Telnyx account (over the API,
so credentials are sealed as in production), and a live server for the tests that need
real commits and concurrency."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.kit.crypto import new_secret_key
from tests.support.api import ADMIN_TOKEN, apply_receipts
from tests.support.database import plain_url, with_database
from tests.support.webhooks import (
    LiveServer,
    TelnyxSchool,
    TwilioSchool,
    add_telnyx_school,
    add_twilio_school,
)

CAMPANILE = Path(sys.executable).with_name("campanile")
STARTUP_SECONDS = 60
# Settings the live server must not take from the environment of the test run.
NOT_INHERITED = {
    "DATABASE_URL",
    "TEST_DATABASE_URL",
    "SECRET_KEY",
    "ADMIN_TOKEN",
    "PUBLIC_BASE_URL",
    "TWILIO_CODE_TABLE",
    "TELNYX_CODE_TABLE",
}


@pytest.fixture
async def client(
    app: FastAPI, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[httpx.AsyncClient]:
    """The API client, with the receipt applier's part played after every webhook answer:
    the receipts it stored are applied if their message is known (as the applier running
    in every service process does moments later); the others stay stored."""

    async def applier(response: httpx.Response) -> None:
        if response.request.url.path.startswith("/v1/webhooks/"):
            await apply_receipts(sessionmaker)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", event_hooks={"response": [applier]}
    ) as client:
        yield client


@pytest.fixture
async def twilio_school(client: httpx.AsyncClient) -> TwilioSchool:
    return await add_twilio_school(client)


@pytest.fixture
async def telnyx_school(client: httpx.AsyncClient) -> TelnyxSchool:
    return await add_telnyx_school(client)


# -- a live server: `campanile serve --no-worker` on a database of its own -------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _admin(server_url: str, statement: str) -> None:
    connection = await asyncpg.connect(plain_url(server_url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        assert process.poll() is None, f"serve exited early:\n{log.read_text()}"
        try:
            if httpx.get(f"{url}/readyz", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"not ready:\n{log.read_text()}"
        time.sleep(0.1)


@pytest.fixture(scope="session")
def live_server(server_url: str) -> Iterator[LiveServer]:
    """The service as deployed: `campanile serve --no-worker` (one uvicorn process, real
    commits, its own pool) and two `campanile worker`s beside it (whose appliers share the
    receipts the service stores), on a fresh database that serve migrates; posted to over
    loopback.
    Schools of these tests keep a sending window that is closed now: nothing is sent."""
    name = f"campanile_live_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if k not in NOT_INHERITED},
        "DATABASE_URL": with_database(server_url, name),
        "SECRET_KEY": new_secret_key(),
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "PUBLIC_BASE_URL": url,
        "LOG_LEVEL": "WARNING",
        "RECEIPTS_POLL_SECONDS": "0.05",
    }
    log = Path(tempfile.mkstemp(prefix="campanile-live-", suffix=".log")[1])
    processes: list[subprocess.Popen[bytes]] = []
    with log.open("wb") as output:

        def start(*command: str) -> subprocess.Popen[bytes]:
            process = subprocess.Popen(
                [str(CAMPANILE), *command],
                env=env,
                cwd=tempfile.gettempdir(),  # no stray .env
                stdout=output,
                stderr=subprocess.STDOUT,
            )
            processes.append(process)
            return process

        try:
            _wait_ready(start("serve", "--no-worker", "--port", str(port)), url, log)
            for _ in range(2):  # two appliers share the receipts, as two workers would
                start("worker")  # after serve has migrated the database
            yield LiveServer(url, env["DATABASE_URL"])
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log.unlink(missing_ok=True)
            asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def live(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the live server (keep-alive connections, no proxies)."""
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(
        base_url=live_server.url, trust_env=False, limits=limits, timeout=30
    ) as client:
        yield client
