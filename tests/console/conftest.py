"""The console's browser tests: Debian's Chromium driven by Playwright, against a live
`campanile serve` (tests/support/live.py) on a fresh database with the simulator.

Playwright's own browser download does not work on our machines, so the tests drive the
OS's Chromium (`/usr/bin/chromium`); when it is missing and we are root (CI), it is
installed here with apt-get. Screenshots of every page go to `artifacts/console/` (CI keeps
the folder; its path is printed at the end of the run)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, sync_playwright

from tests.support.database import ROOT
from tests.support.live import LiveServer, live_server

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "artifacts" / "console"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


def installed_chromium() -> Path:
    """Debian's Chromium, installed now if it is missing and we may (root)."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`) "
            "to run the console's browser tests"
        )
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    if subprocess.run(install, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, check=True)
        subprocess.run(install, capture_output=True, check=True)
    return CHROMIUM


@pytest.fixture(scope="module")
def server(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(server_url, tmp_path_factory.mktemp("console")) as live:
        yield live


@pytest.fixture(scope="module")
def browser(server: LiveServer) -> Iterator[Browser]:
    """Chromium, started after the server and closed before it stops: while Playwright's
    sync API runs, its event loop is this thread's, and the server's fixture needs
    asyncio.run."""
    executable = installed_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(executable), args=["--no-sandbox"]
        )
        yield launched
        launched.close()


class School:
    """A school of the live server, as its staff's key sees it (sync httpx)."""

    families: str  # a contact list's id, once the test has made it

    def __init__(self, server: LiveServer, name: str) -> None:
        self.key = server.new_school_key(name)
        self.http = httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )

    def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        assert response.status_code == expect, response.text
        return (
            response.json()
            if response.headers.get("content-type", "").endswith("json")
            else response
        )

    def contact_list(self, name: str, contacts: list[tuple[str, str, str]]) -> str:
        """A contact list of (phone, first name, last name); its id."""
        made = self.call("POST", "/v1/contact-lists", 201, json={"name": name})
        rows = [{"phone": p, "first_name": f, "last_name": last} for p, f, last in contacts]
        imported = self.call(
            "POST", f"/v1/contact-lists/{made['id']}/contacts", json={"contacts": rows}
        )
        assert imported["rejected"] == [], imported
        return str(made["id"])

    def launched(self, name: str, body: str, list_id: str) -> str:
        """A campaign launched on the list; its id."""
        made = self.call(
            "POST",
            "/v1/campaigns",
            201,
            json={"name": name, "body": body, "contact_list_id": list_id},
        )
        self.call("POST", f"/v1/campaigns/{made['id']}/launch")
        return str(made["id"])

    def contacts(self, campaign_id: str, **params: str) -> list[dict[str, Any]]:
        page = self.call(
            "GET", f"/v1/campaigns/{campaign_id}/contacts", params={"limit": 500, **params}
        )
        items: list[dict[str, Any]] = page["items"]
        return items


@pytest.fixture
def new_page(browser: Browser, server: LiveServer) -> Iterator[Any]:
    """Pages of fresh browser contexts (own session storage) at the console's origin, each
    failing the test on a script error or a Content-Security-Policy violation."""
    contexts = []
    problems: list[str] = []

    def make(viewport: ViewportSize = DESKTOP) -> Page:
        context = browser.new_context(
            viewport=viewport, base_url=server.base_url, accept_downloads=True
        )
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        page.on(
            "console",
            lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
        )
        return page

    yield make
    for context in contexts:
        context.close()
    assert problems == []


def screenshot(page: Page, name: str, *, full_page: bool = True) -> None:
    """`artifacts/console/<name>-<width>x<height>.png` (the whole page, or what the window
    shows: a dialog's backdrop covers only the window)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size or DESKTOP
    path = SCREENSHOTS / f"{name}-{size['width']}x{size['height']}.png"
    page.screenshot(path=path, full_page=full_page)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SCREENSHOTS.is_dir() and any(SCREENSHOTS.iterdir()):
        terminalreporter.write_line(f"console screenshots: {SCREENSHOTS}")
