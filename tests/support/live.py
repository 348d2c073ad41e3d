"""A live `campanile serve` process on a fresh database of its own, for the tests that
speak HTTP to the service as an integrator does (the fuzzer, the generated client).

The process runs this checkout's code (`python -m app.cli serve`, PYTHONPATH at the
repository), with the delivery worker in process on the simulator, as in the README's
walk-through. The database is made on the test server, migrated by `serve` itself, and
dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.kit.crypto import new_secret_key
from tests.support.database import ROOT, admin_sql, with_database

STARTUP_SECONDS = 90
# Variables of the test run that must not reach the service's settings.
NOT_INHERITED = {"DATABASE_URL", "TEST_DATABASE_URL", "SECRET_KEY", "ADMIN_TOKEN", "DATA_DIR"}


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    admin_token: str
    log: Path

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def new_school_key(self, name: str) -> str:
        """A new school (sending at any hour), and its API key."""
        created = httpx.post(
            f"{self.base_url}/v1/admin/schools",
            json={"name": name, "sending_window": None},
            headers=self.admin,
            timeout=30,
        )
        assert created.status_code == 201, created.text
        key: str = created.json()["api_key"]
        return key

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_ready(process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, f"serve exited early:\n{log.read_text()}"
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready after {STARTUP_SECONDS} s:\n{log.read_text()}")


@contextmanager
def live_server(server_url: str, workdir: Path, **settings: str) -> Iterator[LiveServer]:
    """`campanile serve` on a new database of `server_url`'s server; `settings` are more
    environment variables for it (`LOG_LEVEL="INFO"`)."""
    name = f"campanile_live_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin_sql(server_url, f'CREATE DATABASE "{name}"'))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    admin_token = f"live-admin-{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if k.upper() not in NOT_INHERITED}
    env.update(
        DATABASE_URL=with_database(server_url, name),
        SECRET_KEY=new_secret_key(),
        ADMIN_TOKEN=admin_token,
        PUBLIC_BASE_URL=base_url,
        LOG_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    env.update(settings)
    log = workdir / "serve.log"
    try:
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                env=env,
                cwd=workdir,  # no stray .env
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_ready(process, base_url, log)
            yield LiveServer(base_url, admin_token, log)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    finally:
        asyncio.run(admin_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
