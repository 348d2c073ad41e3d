"""The README's simulator table, row by row, end to end: a school without a provider
account sends through the simulator with the real Engine, the simulator's receipts are
kept and applied as the worker keeps and applies them, and each contact shows, over the
API, what its row promises (status, status_label, failed_reason).

`README_TABLE` is the README's table copied literally, and the expectations are read from
it: a change to the README or to the code that makes them disagree fails here.

"Time passing" between cycles is simulated in SQL only (a scheduled recipient's
`next_attempt_at` set to now); nothing of Campanile's is patched.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.delivery import inbox as receipts
from app.delivery.engine import Engine
from app.kit.crypto import SecretBox
from app.kit.db import unit_of_work
from app.models import Recipient
from app.providers.base import Receipt
from app.providers.registry import Registry
from tests.support.api import apply_receipts, inbox_on, launched, make_school, people
from tests.support.delivery import one

Sessions = async_sessionmaker[AsyncSession]
README = Path(__file__).resolve().parents[2] / "README.md"

# The README's "### The simulator" table, cell for cell.
README_TABLE: list[tuple[str, str, str, str]] = [
    ("00, and any ending not below", "sent, then delivered", "—", "Delivered"),
    (
        "01",
        "fails once (queue overflow), delivered on the retry",
        "30001",
        "Scheduled, then Delivered",
    ),
    (
        "02",
        "sent, then undelivered: handset unreachable",
        "30003",
        "Failed · Unreachable Number",
    ),
    ("03", "sent, then undelivered: landline", "30006", "Failed · Unreachable Number"),
    (
        "04",
        "sent, then undelivered: filtered by the carrier",
        "30007",
        "Failed · Blocked by Carrier/User",
    ),
    ("05", "sent, then undelivered: unknown handset", "30005", "Failed · Invalid Number"),
    ("06", "sent, then undelivered: unknown error", "30008", "Failed · Unknown Error"),
    ("07", "refused at create: invalid number", "21211", "Failed · Invalid Number"),
    ("08", "sent, no final receipt ever", "—", "Pending"),
    (
        "09",
        "refused at create: the number replied STOP",
        "21610",
        "Failed · Opted out (and opted out)",
    ),
    ("10", "fails on every attempt (queue overflow)", "30001", "Scheduled, again and again"),
]

# Endings the table does not name ("any ending not below").
OTHER_ENDINGS = ("11", "42", "99")
CYCLES = 3
REATTEMPTING = "Re-attempting Delivery"


def readme_table() -> list[tuple[str, ...]]:
    """The rows of the table in the README's simulator section, as cell texts."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### The simulator", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header, rule, *rows = lines
    assert header.startswith("| number ends in |"), header
    assert set(rule) <= set("|-: "), rule
    return [tuple(cell.strip() for cell in row.strip("|").split("|")) for row in rows]


def test_the_table_here_is_the_readme_s() -> None:
    assert readme_table() == README_TABLE


# -- what a row promises ---------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """What the contact shows after one cycle: status label, failed reason label."""

    status_label: str
    reason_label: str | None


@dataclass(frozen=True)
class Row:
    endings: tuple[str, ...]
    happens: str
    code: str | None
    # What the contact shows after cycle 1, 2, ...; the last one for good.
    shown: tuple[Shown, ...]
    again_and_again: bool  # a new attempt every cycle
    opted_out: bool


def row_of(cells: tuple[str, str, str, str]) -> Row:
    """Read one README row; whatever it says that is not understood here fails."""
    ends, happens, code, shows = cells
    endings: tuple[str, ...] = (ends,) if re.fullmatch(r"\d\d", ends) else ()
    if ends == "00, and any ending not below":
        endings = ("00", *OTHER_ENDINGS)
    assert endings, ends
    opted_out = shows.endswith(" (and opted out)")
    shows = shows.removesuffix(" (and opted out)")
    again = shows.endswith(", again and again")
    shows = shows.removesuffix(", again and again")
    shown: list[Shown] = []
    for step in shows.split(", then "):
        label, _, reason = step.partition(" · ")
        assert label in ("Delivered", "Scheduled", "Pending", "Failed"), step
        if label == "Scheduled":
            reason = REATTEMPTING  # a scheduled contact's reason (`app.sending.status`)
        assert bool(reason) == (label in ("Failed", "Scheduled")), step
        shown.append(Shown(label, reason or None))
    return Row(endings, happens, None if code == "—" else code, tuple(shown), again, opted_out)


ROWS = [row_of(cells) for cells in README_TABLE]


def number(ending: str) -> str:
    return f"+120155501{ending}"


# -- the simulator's receipts, kept and applied as the worker does ---------------------


class Webhooks:
    """The simulator's receipt callback. The worker keeps each receipt as it comes and its
    receipt applier applies it moments later; here they wait for `arrive`, after the
    cycle, because the test's one database connection cannot serve the engine's record
    and a receipt at the same time."""

    def __init__(self, sessionmaker: Sessions) -> None:
        self.sessionmaker = sessionmaker
        self.held: list[Receipt] = []

    async def __call__(self, receipt: Receipt) -> None:
        self.held.append(receipt)

    async def arrive(self) -> None:
        held, self.held = self.held, []
        for receipt in held:
            await receipts.keep(inbox_on(self.sessionmaker), receipt)
        await apply_receipts(self.sessionmaker)


@dataclass
class Simulated:
    engine: Engine
    registry: Registry
    webhooks: Webhooks
    sessionmaker: Sessions

    async def cycle(self) -> int:
        """One delivery cycle, then every receipt the simulator plays for it."""
        claimed = await self.engine.run_once()
        await self.registry.simulator.drain()
        await self.webhooks.arrive()
        return claimed

    async def time_passes(self, campaign_id: str) -> None:
        """Every recipient with an attempt due is due now."""
        async with unit_of_work(self.sessionmaker) as session:
            await session.execute(
                update(Recipient)
                .where(
                    Recipient.campaign_id == uuid.UUID(campaign_id),
                    Recipient.next_attempt_at.is_not(None),
                )
                .values(next_attempt_at=datetime.now(UTC))
            )


@pytest.fixture
async def simulated(
    http: httpx.AsyncClient, settings: Settings, sessionmaker: Sessions
) -> AsyncIterator[Simulated]:
    """The real Engine on a Registry whose simulator plays its receipts without delay."""
    assert settings.secret_key
    webhooks = Webhooks(sessionmaker)
    registry = Registry(
        http,
        SecretBox(settings.secret_key),
        settings.public_base_url,
        webhooks,
        simulator_delay_seconds=0,
    )
    engine = Engine(sessionmaker, settings, registry, rng=random.Random(1234))
    yield Simulated(engine, registry, webhooks, sessionmaker)
    await registry.aclose()


def attempts_after(row: Row, cycle: int) -> int:
    """Attempts made after `cycle` cycles: one per step the contact shows, or one a cycle."""
    return cycle if row.again_and_again else min(cycle, len(row.shown))


def attempts_of(row: Row, count: int) -> list[tuple[bool, str, str | None]]:
    """The attempts history a row's "what happens" promises after `count` attempts: (has a
    provider message id, attempt status, error code) each."""
    happens, code = row.happens, row.code
    if happens.startswith("refused at create: "):
        return [(False, "failed", code)] * count
    if happens.startswith("fails on every attempt "):
        return [(True, "failed", code)] * count
    if happens.startswith("fails once ") and happens.endswith(", delivered on the retry"):
        return [(True, "failed", code), (True, "delivered", None)][:count]
    if happens == "sent, then delivered":
        return [(True, "delivered", None)]
    if happens.startswith("sent, then undelivered: "):
        return [(True, "undelivered", code)]
    if happens == "sent, no final receipt ever":
        return [(True, "sent", None)]
    raise AssertionError(f"not understood: {happens!r}")


async def test_each_readme_row_end_to_end(client: httpx.AsyncClient, simulated: Simulated) -> None:
    _, auth = await make_school(client, sending_window=None)  # no provider account
    response = await client.get("/v1/failed-reasons")
    assert response.status_code == 200, response.text
    code_of = {reason["label"]: reason["code"] for reason in response.json()}
    numbers = {number(ending): row for row in ROWS for ending in row.endings}
    campaign = await launched(client, auth, people(*numbers))
    cid = campaign["id"]

    for cycle in range(1, CYCLES + 1):
        if cycle > 1:
            await simulated.time_passes(cid)
        new_attempts = sum(
            attempts_after(row, cycle) - attempts_after(row, cycle - 1) for row in numbers.values()
        )
        assert await simulated.cycle() == new_attempts, f"cycle {cycle}"

        for phone, row in numbers.items():
            where = f"cycle {cycle}: {phone} ({row.happens})"
            shown = row.shown[min(cycle, len(row.shown)) - 1]
            recipient = await one(client, auth, cid, phone)
            assert recipient["status_label"] == shown.status_label, where
            assert recipient["status"] == shown.status_label.lower(), where
            if shown.reason_label is None:
                assert recipient["failed_reason"] is None, where
            else:
                reason = recipient["failed_reason"]
                assert reason is not None, where
                assert reason["code"] == code_of[shown.reason_label], where
                assert reason["label"] == shown.reason_label, where
                assert reason["provider_error_code"] == row.code, where
            # Only a scheduled contact waits for another attempt.
            assert (recipient["next_attempt_at"] is not None) == (
                shown.status_label == "Scheduled"
            ), where
            count = attempts_after(row, cycle)
            assert recipient["attempts"] == count, where
            history = [
                (a["provider_message_id"] is not None, a["status"], a["error_code"])
                for a in recipient["attempts_history"]
            ]
            assert history == attempts_of(row, count), where
            assert all(a["provider"] == "simulator" for a in recipient["attempts_history"])

    response = await client.get("/v1/opt-outs", headers=auth)
    assert response.status_code == 200, response.text
    opted_out = {item["phone"]: item["source"] for item in response.json()["items"]}
    assert opted_out == {phone: "provider" for phone, row in numbers.items() if row.opted_out}
