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


# The recipient's columns a `recipient.updated` keeps (migration b5d9e2a7c341).
RECIPIENT_COLUMNS = (
    "phone",
    "first_name",
    "last_name",
    "fields",
    "status",
    "failed_reason",
    "failed_definition",
    "provider_error_code",
    "delivery_confirmed",
    "attempts",
    "next_attempt_at",
    "updated_at",
)


def public_id(event_id: int, stored: str | None) -> str:
    """An event's id as integrators see it (`webhook-id`): the one older revisions stored,
    else `evt_` and its id in 32 hex digits."""
    return stored or f"evt_{event_id:032x}"


def data(event: Event) -> dict[str, Any]:
    """The resource the event is about, as the REST API shows it, with its sequence."""
    snapshot = event.snapshot
    shown: dict[str, Any]
    if event.type == RECIPIENT_UPDATED:
        if snapshot is None:  # the recipient's columns, as columns
            snapshot = {name: getattr(event, name) for name in RECIPIENT_COLUMNS}
            snapshot |= {"id": int(event.resource_id), "campaign_id": event.campaign_id}
        view = recipients.view(Recipient(**_columns(Recipient, snapshot)))
        shown = {**view.model_dump(mode="json"), "campaign_id": str(snapshot["campaign_id"])}
    elif snapshot is None:
        raise ValueError(f"event {event.id} ({event.type}) has no snapshot")
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
        "id": public_id(event.id, event.public_id),
        "type": event.type,
        "timestamp": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "data": data(event),
    }
