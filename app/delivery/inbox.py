"""The receipts inbox: where a delivery receipt waits for the receipt applier
(`app.delivery.applier`). A webhook, or the simulator, only `keep`s its receipt: one INSERT
on the inbox's own pool (`app.kit.db.Inbox`), deduplicated by the provider's event id, and
the webhook is answered at once."""

from __future__ import annotations

from app import metrics
from app.delivery import sql
from app.kit.db import Inbox
from app.providers.base import Receipt


async def keep(inbox: Inbox, receipt: Receipt) -> bool:
    """Keep a receipt for the applier, once per provider event: one INSERT that commits on
    its own. Whether it was new (False: the same event came before; nothing changes)."""
    classification = receipt.classification
    stored = await inbox.fetchval(
        sql.KEEP_RECEIPT,
        receipt.provider,
        receipt.event_id,
        receipt.provider_message_id,
        receipt.provider_status,
        receipt.error_code,
        classification.reason if classification else None,
        classification.soft if classification else None,
        classification.definition_index if classification else None,
        receipt.occurred_at,
        receipt.named_attempt_id,
    )
    new = stored is not None
    metrics.receipts.labels(receipt.provider, "stored" if new else "duplicate").inc()
    return new
