"""An event as integrators receive it (README, Events): `{id, type, timestamp, data}`, where
`data` is the resource as the REST API shows it, from the snapshot the change left
(`app.models.Event`), with its `sequence`: a recipient as `GET .../contacts/{rid}` shows it
(without its attempts history) plus its `campaign_id`, a campaign with its counts, an
opt-out."""

from __future__ import annotations

from typing import Any

from app.campaigns import service as campaigns
from app.campaigns.schemas import Campaign as CampaignOut
from app.models import Campaign, Event, OptOut, Recipient
from app.opt_outs.schemas import OptOut as OptOutOut
from app.recipients import service as recipients

RECIPIENT_UPDATED = "recipient.updated"
CAMPAIGN_UPDATED = "campaign.updated"
OPT_OUT_CREATED = "opt_out.created"
OPT_OUT_DELETED = "opt_out.deleted"
TYPES = (RECIPIENT_UPDATED, CAMPAIGN_UPDATED, OPT_OUT_CREATED, OPT_OUT_DELETED)


def _columns(model: type[Any], snapshot: dict[str, Any]) -> dict[str, Any]:
    """The snapshot's values of the model's columns (a transient row to show)."""
    names = model.__table__.columns.keys()
    return {name: value for name, value in snapshot.items() if name in names}


def data(event: Event) -> dict[str, Any]:
    """The resource the event is about, as the REST API shows it, with its sequence."""
    snapshot = event.snapshot
    shown: dict[str, Any]
    if event.type == RECIPIENT_UPDATED:
        view = recipients.view(Recipient(**_columns(Recipient, snapshot)))
        shown = {**view.model_dump(mode="json"), "campaign_id": str(snapshot["campaign_id"])}
    elif event.type == CAMPAIGN_UPDATED:
        campaign: CampaignOut = campaigns.shown(
            Campaign(**_columns(Campaign, snapshot)), snapshot.get("counts") or {}
        )
        shown = campaign.model_dump(mode="json")
    else:
        shown = OptOutOut.model_validate(OptOut(**_columns(OptOut, snapshot))).model_dump(
            mode="json"
        )
    return {**shown, "sequence": event.id}


def envelope(event: Event) -> dict[str, Any]:
    """What a webhook posts and the stream sends."""
    return {
        "id": event.public_id,
        "type": event.type,
        "timestamp": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "data": data(event),
    }
