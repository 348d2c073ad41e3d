"""The webhooks' account cache (`signing_accounts`): webhooks that need the same accounts
read at once share one read, and a webhook signed with a secret rotated meanwhile is not
refused for a read that began before it came."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from app.webhooks.common import AccountCache, Accounts, WebhookAccount, signing_accounts

KEY = ("twilio", "AC123")


class Database:
    """The account's secret as stored; each read answers once the test lets it."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.reads = 0
        self.answer = asyncio.Event()

    async def read(self) -> Accounts:
        self.reads += 1
        secret = self.secret  # as of when the read began
        await self.answer.wait()
        return [WebhookAccount(uuid.uuid4(), secret, "+15005550006", None)]


async def until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until the condition holds (bounded)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


def signed_with(secret: str) -> Callable[[Accounts], Accounts]:
    def signers(accounts: Accounts) -> Accounts:
        return [a for a in accounts if a.secret == secret]

    return signers


async def test_webhooks_in_flight_share_one_read() -> None:
    cache, database = AccountCache(), Database("token")
    webhooks = [
        asyncio.create_task(signing_accounts(cache, KEY, database.read, signed_with("token")))
        for _ in range(50)
    ]
    await until(lambda: database.reads == 1)
    await asyncio.sleep(0.01)  # the other 49 come meanwhile (if late, the cache has it)
    database.answer.set()
    found = await asyncio.gather(*webhooks)
    assert all(len(accounts) == 1 for accounts in found)
    assert database.reads == 1


async def test_a_secret_rotated_during_a_read_verifies_the_webhook_signed_with_it() -> None:
    cache, database = AccountCache(), Database("old")
    earlier = asyncio.create_task(signing_accounts(cache, KEY, database.read, signed_with("old")))
    await until(lambda: database.reads == 1)  # its read is in flight, finding the old token
    database.secret = "new"  # the school rotates its token; a webhook signed with it comes
    later = asyncio.create_task(signing_accounts(cache, KEY, database.read, signed_with("new")))
    await asyncio.sleep(0.01)  # it joins the read in flight, or comes after it
    database.answer.set()
    assert len(await earlier) == 1
    assert len(await later) == 1  # read again, not refused
    assert database.reads == 2


async def test_a_failed_read_fails_the_webhooks_sharing_it_and_the_next_reads_again() -> None:
    cache = AccountCache()
    calls = 0

    async def broken() -> Accounts:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise ConnectionError("database restarting")

    results = await asyncio.gather(
        *(signing_accounts(cache, KEY, broken, signed_with("token")) for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    assert calls == 1
    database = Database("token")
    database.answer.set()
    assert len(await signing_accounts(cache, KEY, database.read, signed_with("token"))) == 1
