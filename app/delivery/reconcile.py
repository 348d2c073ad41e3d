"""The reconciliation: receipts that never come (README).

Some carriers never confirm (a Twilio `sent` can be final), and callbacks get lost. An
attempt at its provider (not final: queued there, or `sent`) whose final receipt has not come
RECONCILE_AFTER_SECONDS after its hand-over is looked up by its message id
(`Provider.fetch_status`), and again every RECONCILE_AFTER_SECONDS; what is found goes to
the receipts inbox (`app.delivery.inbox.keep`) as the receipt a callback of it would be (a
Twilio one: the same event id, so a callback and a lookup of one status are one event), and
the receipt applier applies it through the status rules like any other. Once
UNCONFIRMED_AFTER_SECONDS have passed since the hand-over with no final status, a message
the carrier accepted (`sent`) is taken as delivered, unconfirmed (`on_receipt_overdue`),
so its campaign can complete and nobody resends a message that most likely arrived.

One pass (`Reconciler.sweep_once`), run by the worker (`app.workers.reconciler`):
1. the claim, one statement in a short transaction (`sql.CLAIM_DUE`): the due attempts,
   read through the partial index `ix_attempts_unconfirmed` (a range scan: the cost does
   not grow with the table), locked SKIP LOCKED and marked checked now, so that workers
   sweeping at once never take the same attempt, and none takes it again before
   RECONCILE_AFTER_SECONDS; an attempt its recipient no longer follows is let go;
2. the lookups, outside any transaction, a few at a time; *can't tell* changes nothing;
3. the receipts kept; then, for attempts past UNCONFIRMED_AFTER_SECONDS that are not final,
   the overdue rule in one transaction that follows the lock order (`app.sending.locks`):
   the recipients in id order, their attempts, then the campaigns that completed.

An attempt still queued at its provider (never accepted by the carrier) is looked up every
RECONCILE_AFTER_SECONDS for as long as it stays so: the overdue rule is for accepted
messages only, and a provider does not hold a message for long (Twilio: 36,000 s at most),
so its final status comes, by callback or by lookup.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.campaigns import service as campaigns
from app.config import Settings
from app.delivery import inbox, sql
from app.delivery.school_cache import SchoolCache
from app.delivery.sql import AnyRow, RecipientRow, SettledAttempt
from app.kit.clock import utcnow
from app.kit.db import Inbox, unit_of_work
from app.models import ProviderAccount
from app.providers.base import Receipt
from app.providers.registry import Registry
from app.sending import status as rules
from app.sending.state import apply_change, state_of

log = logging.getLogger(__name__)

# Attempts claimed by one pass, and lookups in flight at once.
BATCH = 200
CONCURRENCY = 10


@dataclass(frozen=True, slots=True)
class Passed:
    """What one pass did."""

    claimed: int = 0  # due attempts taken (looked up, or let go)
    looked_up: int = 0  # lookups made
    cant_tell: int = 0  # lookups that could not tell
    kept: int = 0  # receipts kept for the applier (new ones: a status it did not know)
    unconfirmed: int = 0  # recipients taken as delivered, unconfirmed


class Reconciler:
    """Reconciliation passes over one database, asking the providers of a `Registry` (the
    delivery worker's: the simulator answers from what it sent)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        registry: Registry,
        receipts: Inbox,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.registry = registry
        self.receipts = receipts
        self.every = timedelta(seconds=settings.reconcile_after_seconds)
        self.unconfirmed_after = settings.unconfirmed_after_seconds
        self._schools = SchoolCache()

    async def sweep_once(self, limit: int = BATCH) -> Passed:
        """One pass over at most `limit` due attempts (a full pass: more may be due)."""
        now = utcnow()
        rows, accounts = await self._claim(now, limit)
        followed = [row for row in rows if row.followed]
        if not followed:
            return Passed(claimed=len(rows))
        looked_up = await self._look_up(followed, accounts)
        found = [receipt for _, receipt in looked_up]
        asked = sum(1 for was_asked, _ in looked_up if was_asked)
        kept = 0
        for row, receipt in zip(followed, found, strict=True):
            # Only what moves the attempt forward: the same `queued` or `sent` every
            # RECONCILE_AFTER_SECONDS would only be stored to be found stale.
            told = None if receipt is None else rules.phase_of(receipt.provider_status)
            if (
                receipt is not None
                and told is not None
                and rules.advance(rules.phase_of(row.status), told)
            ):
                kept += await inbox.keep(self.receipts, receipt)
        overdue_before = now - timedelta(seconds=self.unconfirmed_after)
        overdue = [
            (row, receipt)
            for row, receipt in zip(followed, found, strict=True)
            if row.created_at <= overdue_before and not _final(receipt)
        ]
        unconfirmed = await self._settle(overdue) if overdue else 0
        passed = Passed(
            claimed=len(rows),
            looked_up=asked,
            cant_tell=asked - sum(1 for r in found if r is not None),
            kept=kept,
            unconfirmed=unconfirmed,
        )
        log.info("reconciliation: %s", passed)
        return passed

    async def _claim(
        self, now: datetime, limit: int
    ) -> tuple[list[AnyRow], dict[uuid.UUID, ProviderAccount]]:
        """Step 1, in a transaction of its own: the due attempts, marked checked (or let
        go), and the provider accounts of their schools."""
        async with unit_of_work(self.sessionmaker) as session:
            connection = await session.connection()
            params = {"before": now - self.every, "limit": limit, "now": now}
            rows = list((await connection.execute(sql.CLAIM_DUE, params)).all())
            versions = {r.school_id: (r.school_version, r.account_version) for r in rows}
            accounts: dict[uuid.UUID, ProviderAccount] = {}
            if versions:
                _, accounts = await self._schools.get(session, versions)
        return rows, accounts

    async def _look_up(
        self,
        rows: Sequence[AnyRow],
        accounts: dict[uuid.UUID, ProviderAccount],
    ) -> list[tuple[bool, Receipt | None]]:
        """Step 2: for each message, whether its provider was asked, and its status as a
        receipt, or None (could not tell)."""
        gate = asyncio.Semaphore(CONCURRENCY)

        async def look_up(row: AnyRow) -> tuple[bool, Receipt | None]:
            provider = self.registry.for_account(accounts.get(row.school_id))
            if provider.name != row.provider:  # the school sends through another one now
                return False, None
            async with gate:
                fetched = await provider.fetch_status(row.provider_message_id)
            if fetched.receipt is None:
                log.info(
                    "reconciliation: %s cannot tell of %s: %s",
                    row.provider,
                    row.provider_message_id,
                    fetched.why,
                )
            return True, fetched.receipt

        return list(await asyncio.gather(*(look_up(row) for row in rows)))

    async def _settle(self, overdue: Sequence[tuple[AnyRow, Receipt | None]]) -> int:
        """Step 3's overdue rule, in one transaction in the lock order: the recipients (id
        order), their attempts, the campaigns completed. How many became delivered."""
        async with unit_of_work(self.sessionmaker) as session:
            connection = await session.connection()
            ids = sorted({row.recipient_id for row, _ in overdue})
            locked = await connection.execute(sql.record(opted_out=False), {"ids": ids})
            recipients = {r.id: r for r in map(RecipientRow.of, locked)}
            found = await connection.execute(
                sql.OVERDUE_ATTEMPTS, {"ids": [row.id for row, _ in overdue]}
            )
            attempts = {a.id: a for a in found}
            now = utcnow()
            settled: list[SettledAttempt] = []
            changed: dict[int, RecipientRow] = {}
            finished: set[uuid.UUID] = set()
            for row, receipt in overdue:
                attempt, recipient = attempts[row.id], recipients[row.recipient_id]
                if not attempt.is_latest:
                    continue
                status = attempt.status
                phase = rules.phase_of(status)
                state = state_of(recipient)
                told = None if receipt is None else rules.phase_of(receipt.provider_status)
                if receipt is not None and told is rules.Phase.sent and rules.advance(phase, told):
                    # The lookup found what a lost `sent` callback would have said: applied
                    # as that receipt would be (its copy in the inbox is then stale).
                    taught = rules.on_receipt(
                        state,
                        recipient.campaign_status,
                        told,
                        None,
                        None,
                        latest_attempt=True,
                        retry_allowed=False,
                    )
                    state = taught.state if taught is not None else state
                    phase, status = told, receipt.provider_status
                change = rules.on_receipt_overdue(
                    state,
                    recipient.campaign_status,
                    phase,
                    row.created_at,
                    now,
                    unconfirmed_after_seconds=self.unconfirmed_after,
                )
                if change is None:
                    continue
                apply_change(recipient, change, None, now)
                changed[recipient.id] = recipient
                settled.append(SettledAttempt(row.id, status))
                finished.add(recipient.campaign_id)
            if settled:
                await connection.execute(*sql.write_overdue(settled, list(changed.values()), now))
                await campaigns.complete_finished(session, finished)
        return len(changed)


def _final(receipt: Receipt | None) -> bool:
    """Whether a lookup found a final status (the applier applies it: no overdue rule)."""
    if receipt is None:
        return False
    phase = rules.phase_of(receipt.provider_status)
    return phase is not None and phase > rules.Phase.sent
