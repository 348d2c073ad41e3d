"""THE LOCK ORDER: every writer that changes recipients takes its locks in this order.

1. The campaign's **send lock** (a PostgreSQL advisory lock per campaign, `lock_key`):
   exclusive for a stop (`hold_back_sends`: close, archive, staff and keyword opt-outs),
   taken before any row lock, several campaigns in key order; shared for a send
   (`app.delivery.admission`), only tried, never waited for, and held with no row lock.
2. **Recipients' rows**, in id order (a bulk UPDATE locks them first with an ordered
   `SELECT ... FOR UPDATE`); the claim skips the locked ones (`SKIP LOCKED`) and so never
   waits.
3. **Opt-out rows** (inserted) and **provider accounts** (a claim's rate slots, school id
   order; close and archive only try them, `SKIP LOCKED`).
4. **Campaigns' rows**, in id order, last: the completion rule
   (`app.campaigns.service.complete_finished`), a resend's reopening, a stop's new status.

Attempts' rows are locked after their recipients' (the record's and the applier's writes
to them come once step 2 is taken), before step 3; a writer that locks attempts alone
skips them if locked (`SKIP LOCKED`) and so never waits.

A transaction may skip a step, never go back to an earlier one. So no two writers wait
for each other in a circle (PostgreSQL would break it after `deadlock_timeout` by failing
one of them: a staff member's 500, or a batch recorded again).

The writers, and the steps each takes (tests/delivery/committed/test_lock_order.py
checks each against a real PostgreSQL):

- close, archive (`app.campaigns.service`, `_stopped`): 1; 2 the campaign's waiting
  recipients; 3 its account's promised turns, skipped if locked; 4.
- staff and keyword opt-outs (`app.opt_outs.service`): 1 for each campaign where the
  number waits; 2 the number's waiting recipients; 3 the opt-out; 4 completed ones. Each
  step once for all the numbers (a STOP to a number several schools share: all of them).
- the claim (`app.delivery.claim`): 2 the due recipients, skipped if locked; 3 accounts
  under a rate; 4 campaigns whose retries expired (completion).
- the record (`app.delivery.record`): 2 its batch, and the waiting recipients of the
  numbers that opted out at the provider (21610), all in one id order; 3 those opt-outs;
  4 the completed campaigns.
- the receipt applier (`app.delivery.applier`): 2 its receipts' recipients, and the waiting
  recipients of the numbers that opted out at the provider; 3 those opt-outs; 4 the
  completed campaigns.
- the reconciliation (`app.delivery.reconcile`, README): its claim locks due attempts
  alone, skipped if locked (no recipient, no wait); its overdue rule takes 2 the recipients
  whose message is taken as delivered unconfirmed, then their attempts; 4 the completed
  campaigns.
- resend, of one or of all failed (`app.recipients.service`): 2 the failed recipients;
  4 the campaign (reopened).

Not in the list, since they lock no recipient that exists: launch, edit and delete lock
the campaign's row alone (a launch's recipients are new rows); the sweep and the start of
scheduled campaigns update campaigns' rows only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


def lock_key(campaign_id: uuid.UUID) -> int:
    """The campaign's send lock key: 64 bits of its id."""
    return int.from_bytes(campaign_id.bytes[:8], "big", signed=True)


async def hold_back_sends(session: AsyncSession, campaign_ids: Iterable[uuid.UUID]) -> None:
    """Step 1 for a stop: the caller's transaction waits for these campaigns' sends in
    flight, and every admission after it sees what it commits. Before any row lock."""
    for key in sorted({lock_key(c) for c in campaign_ids}):
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
