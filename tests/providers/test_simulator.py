"""The simulator: outcomes per number class, receipts through the callback, clean shutdown."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from app.providers.base import Lookup, LookupAnswer, OutboundMessage, Provider, Receipt
from app.providers.simulator import RULES, SimulatorProvider, rule_for
from app.sending.outcomes import Classification, Outcome


class Inbox:
    def __init__(self) -> None:
        self.receipts: list[Receipt] = []

    async def __call__(self, receipt: Receipt) -> None:
        self.receipts.append(receipt)

    def of(self, sid: str | None) -> list[tuple[str, str | None, Classification | None]]:
        return [
            (r.provider_status, r.error_code, r.classification)
            for r in self.receipts
            if r.provider_message_id == sid
        ]


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
async def simulator(inbox: Inbox) -> AsyncIterator[SimulatorProvider]:
    provider = SimulatorProvider(inbox, delay_seconds=0)
    yield provider
    await provider.aclose()


def number(suffix: str) -> str:
    return f"+1415555{suffix.rjust(4, '0')}"[-12:]


DELIVERED = [("sent", None, None), ("delivered", None, None)]


@pytest.mark.parametrize(
    ("suffix", "receipts"),
    [
        ("00", DELIVERED),
        ("42", DELIVERED),
        ("99", DELIVERED),
        ("01", [("failed", "30001", Classification("sending_error", True))]),
        ("10", [("failed", "30001", Classification("sending_error", True))]),
        (
            "02",
            [
                ("sent", None, None),
                ("undelivered", "30003", Classification("unreachable_number", False, 0)),
            ],
        ),
        (
            "03",
            [
                ("sent", None, None),
                ("undelivered", "30006", Classification("unreachable_number", False, 1)),
            ],
        ),
        (
            "04",
            [("sent", None, None), ("undelivered", "30007", Classification("blocked", False, 0))],
        ),
        (
            "05",
            [
                ("sent", None, None),
                ("undelivered", "30005", Classification("invalid_number", False, 1)),
            ],
        ),
        (
            "06",
            [("sent", None, None), ("undelivered", "30008", Classification("unknown", False, 0))],
        ),
        ("08", [("sent", None, None)]),
    ],
)
async def test_accepted_numbers_and_their_receipts(
    simulator: SimulatorProvider,
    inbox: Inbox,
    suffix: str,
    receipts: list[tuple[str, str | None, Classification | None]],
) -> None:
    provider: Provider = simulator
    to = number(suffix)
    result = await provider.send(OutboundMessage(to, "Hello"))
    assert result.outcome is Outcome.accepted
    assert result.provider_status == "queued"
    assert result.provider_message_id is not None
    assert re.fullmatch(r"SM[0-9a-f]{32}", result.provider_message_id)
    await simulator.drain()
    assert inbox.of(result.provider_message_id) == receipts
    assert all(r.provider == "simulator" for r in inbox.receipts)
    assert len({r.event_id for r in inbox.receipts}) == len(inbox.receipts)


@pytest.mark.parametrize(
    ("suffix", "code", "classification"),
    [
        ("07", "21211", Classification("invalid_number", False)),
        ("09", "21610", Classification("opted_out", False)),
    ],
)
async def test_refused_at_create(
    simulator: SimulatorProvider,
    inbox: Inbox,
    suffix: str,
    code: str,
    classification: Classification,
) -> None:
    result = await simulator.send(OutboundMessage(number(suffix), "Hello"))
    assert result.outcome is Outcome.hard
    assert (result.error_code, result.classification) == (code, classification)
    assert result.provider_message_id is None
    await simulator.drain()
    assert inbox.receipts == []


async def test_soft_bounce_once_then_delivered(simulator: SimulatorProvider, inbox: Inbox) -> None:
    to = number("01")
    first = await simulator.send(OutboundMessage(to, "Hello"))
    second = await simulator.send(OutboundMessage(to, "Hello"))
    await simulator.drain()
    assert [s for s, _, _ in inbox.of(first.provider_message_id)] == ["failed"]
    assert inbox.of(second.provider_message_id) == DELIVERED


async def test_always_soft_bounces(simulator: SimulatorProvider, inbox: Inbox) -> None:
    sids = [
        (await simulator.send(OutboundMessage(number("10"), "x"))).provider_message_id
        for _ in range(3)
    ]
    await simulator.drain()
    for sid in sids:
        assert [(s, c) for s, c, _ in inbox.of(sid)] == [("failed", "30001")]


def test_the_table_reads_the_last_two_digits() -> None:
    assert rule_for("+1 (415) 555-0102") is RULES["02"]
    assert rule_for("+14155550100") is RULES["00"]
    assert rule_for("+14155550177").behaviour == "deliver"
    assert rule_for("7").behaviour == "deliver"


async def test_find_sent(simulator: SimulatorProvider) -> None:
    since = datetime.now(UTC)
    to = number("08")
    result = await simulator.send(OutboundMessage(to, "Hello"))
    assert result.provider_message_id is not None
    sent = Lookup.sent(result.provider_message_id)
    assert await simulator.find_sent(to, since, "Hello") == sent
    assert await simulator.find_sent(to, since, "Other") == Lookup.not_sent()
    assert await simulator.find_sent(to, since + timedelta(minutes=1), "Hello") == Lookup.not_sent()
    assert await simulator.find_sent(number("00"), since, "Hello") == Lookup.not_sent()
    # A hand-over begun before this simulator started (another process's): it cannot tell.
    earlier = await simulator.find_sent(to, since - timedelta(hours=1), "Other")
    assert earlier.answer is LookupAnswer.cant_tell


async def test_receipts_come_after_the_delay_and_aclose_cancels(inbox: Inbox) -> None:
    simulator = SimulatorProvider(inbox, delay_seconds=30)
    await simulator.send(OutboundMessage(number("00"), "Hello"))
    await asyncio.sleep(0)
    assert simulator.pending_receipts == 1
    assert inbox.receipts == []
    await simulator.aclose()
    assert simulator.pending_receipts == 0
    assert inbox.receipts == []
    late = await simulator.send(OutboundMessage(number("00"), "Hello"))
    assert late.outcome is Outcome.soft  # shut down: nothing accepted, nothing lost


async def test_a_failing_callback_does_not_stop_the_receipts() -> None:
    seen: list[str] = []

    async def flaky(receipt: Receipt) -> None:
        seen.append(receipt.provider_status)
        if receipt.provider_status == "sent":
            raise RuntimeError("database is down")

    simulator = SimulatorProvider(flaky, delay_seconds=0)
    await simulator.send(OutboundMessage(number("00"), "Hello"))
    await simulator.drain()
    await simulator.aclose()
    assert seen == ["sent", "delivered"]


async def test_fetch_status_says_what_its_receipts_said(
    simulator: SimulatorProvider, inbox: Inbox
) -> None:
    """Queued until the first receipt, then each receipt's status: the same receipt."""
    simulator.delay_seconds = 30
    queued = await simulator.send(OutboundMessage(number("02"), "Hello"))
    assert queued.provider_message_id is not None
    fetched = await simulator.fetch_status(queued.provider_message_id)
    assert fetched.receipt is not None and fetched.receipt.provider_status == "queued"
    await simulator.aclose()

    played = SimulatorProvider(inbox, delay_seconds=0)
    try:
        for suffix in ("02", "08"):
            result = await played.send(OutboundMessage(number(suffix), "Hello"))
            assert result.provider_message_id is not None
            await played.drain()
            fetched = await played.fetch_status(result.provider_message_id)
            assert fetched.receipt == inbox.receipts[-1]
        assert [r.provider_status for r in inbox.receipts] == ["sent", "undelivered", "sent"]
        unknown = await played.fetch_status("SM" + "0" * 32)
        assert unknown.receipt is None and unknown.why
    finally:
        await played.aclose()
