"""`campanile serve` as a user runs it: a real process on an embedded PostgreSQL of its own."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

STARTUP_SECONDS = 60
CAMPANILE = Path(sys.executable).with_name("campanile")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not under tmp_path: as root the embedded server runs as another user, and any pytest
    # session that starts meanwhile makes /tmp/pytest-of-<user> private again.
    path = Path(tempfile.mkdtemp(prefix="campanile-serve-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def postmaster_pid(pgdata: Path) -> int | None:
    """The embedded server's pid while it runs (PostgreSQL removes the file on shutdown)."""
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def stop_postgres(pgdata: Path) -> None:
    """Fast shutdown of a server the process under test left running."""
    pid = postmaster_pid(pgdata)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while postmaster_pid(pgdata) is not None and time.monotonic() < deadline:
        time.sleep(0.1)


def wait_ready(process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
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


def walk_through(base_url: str, key: dict[str, str]) -> None:
    """The README's walk-through, in short: a campaign launched on the simulator reaches
    its contacts' final statuses through the in-process worker (send, simulated receipts
    kept like a webhook's, applied by the receipt applier)."""
    response = httpx.patch(f"{base_url}/v1/school", json={"sending_window": None}, headers=key)
    assert response.status_code == 200, response.text
    phones = {"+12015550100": ("delivered", None), "+12015550102": ("failed", "unreachable_number")}
    made = httpx.post(f"{base_url}/v1/contact-lists", json={"name": "Families"}, headers=key)
    list_id = made.json()["id"]
    imported = httpx.post(
        f"{base_url}/v1/contact-lists/{list_id}/contacts",
        json={"contacts": [{"phone": phone} for phone in phones]},
        headers=key,
    )
    assert imported.status_code == 200, imported.text
    campaign = httpx.post(
        f"{base_url}/v1/campaigns",
        json={"name": "Snow day", "body": "No school today", "contact_list_id": list_id},
        headers=key,
    ).json()
    launched = httpx.post(f"{base_url}/v1/campaigns/{campaign['id']}/launch", headers=key)
    assert launched.status_code == 200, launched.text
    deadline = time.monotonic() + 30
    while True:
        page = httpx.get(f"{base_url}/v1/campaigns/{campaign['id']}/contacts", headers=key)
        seen = {
            r["phone"]: (r["status"], (r["failed_reason"] or {}).get("code"))
            for r in page.json()["items"]
        }
        if seen == phones:
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.2)
    final = httpx.get(f"{base_url}/v1/campaigns/{campaign['id']}", headers=key).json()
    assert final["status"] == "complete"


def test_serve_runs_the_service_on_embedded_postgres_and_stops_cleanly(
    tmp_path: Path, data_dir: Path
) -> None:
    log = tmp_path / "serve.log"
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"DATABASE_URL", "TEST_DATABASE_URL", "ADMIN_TOKEN", "SECRET_KEY"}
    }
    env["DATA_DIR"] = str(data_dir)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"

    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(CAMPANILE), "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,  # no stray .env
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(process, base_url, log)
        admin = {"Authorization": f"Bearer {(data_dir / 'admin-token').read_text().strip()}"}
        created = httpx.post(
            f"{base_url}/v1/admin/schools", json={"name": "Serve High"}, headers=admin
        )
        assert created.status_code == 201, created.text
        key = {"Authorization": f"Bearer {created.json()['api_key']}"}
        school = httpx.get(f"{base_url}/v1/school", headers=key)
        assert school.status_code == 200, school.text
        assert school.json()["id"] == created.json()["id"]
        walk_through(base_url, key)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
        assert postmaster_pid(data_dir / "pgdata") is None, "embedded PostgreSQL still running"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stop_postgres(data_dir / "pgdata")
