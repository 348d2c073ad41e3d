"""The receipts inbox: where a delivery receipt waits for the receipt applier
(`app.delivery.applier`). A webhook, or the simulator, only `keep`s its receipt: one INSERT
on the inbox's own pool (`app.kit.db.Inbox`), deduplicated by the provider's event id, and
the webhook is answered at once."""

from __future__ import annotations

from app import metrics
from app.kit.db import Inbox
from app.providers.base import Receipt

_INSERT = """
    INSERT INTO receipts (provider, event_id, provider_message_id, provider_status,
                          error_code, reason, soft, definition, occurred_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT DO NOTHING
    RETURNING id
"""


async def keep(inbox: Inbox, receipt: Receipt) -> bool:
    """Keep a receipt for the applier, once per provider event: one INSERT that commits on
    its own. Whether it was new (False: the same event came before; nothing changes)."""
    classification = receipt.classification
    stored = await inbox.fetchval(
        _INSERT,
        receipt.provider,
        receipt.event_id,
        receipt.provider_message_id,
        receipt.provider_status,
        receipt.error_code,
        classification.reason if classification else None,
        classification.soft if classification else None,
        classification.definition_index if classification else None,
        receipt.occurred_at,
    )
    new = stored is not None
    metrics.receipts.labels(receipt.provider, "stored" if new else "duplicate").inc()
    return new
