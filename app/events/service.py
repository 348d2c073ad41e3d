"""A school's webhook endpoints (README, Events): made with a signing secret shown once and
kept sealed, changed, deleted, and their recent deliveries."""

from __future__ import annotations

import base64
import secrets
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy import literal_column, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.errors import Conflict, NotFound, Unprocessable
from app.events import outbox, render, schemas, urls
from app.kit.crypto import SecretBox
from app.kit.pagination import decode_cursor, int_key, page_of, time_key, uuid_key
from app.kit.schemas import parse_uuid
from app.models import Event, School, WebhookDelivery, WebhookEndpoint

# Endpoints a school may have: each holds at most one of a worker's posts at once while it
# fails to answer (app.events.deliveries), so one school's dead endpoints never take more
# than this of a worker's `concurrency` (50).
MAX_ENDPOINTS = 20
TOO_MANY_TEXT = f"The school has {MAX_ENDPOINTS} webhook endpoints, the most it may have."
TOO_MANY = (Conflict, TOO_MANY_TEXT)


def _new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def _checked(url: str, allow_private: bool) -> str:
    try:
        await urls.check(url, allow_private=allow_private)
    except urls.RefusedUrl as exc:
        raise Unprocessable(
            str(exc),
            extra={"errors": [{"loc": ["body", "url"], "msg": str(exc), "type": "url_refused"}]},
        ) from exc
    return url


async def create(
    session: AsyncSession,
    school: School,
    data: schemas.WebhookEndpointCreate,
    box: SecretBox,
    allow_private: bool,
) -> schemas.WebhookEndpointCreated:
    # The school's row locked, so that two creates at once count each other.
    await session.execute(select(School.id).where(School.id == school.id).with_for_update())
    held = await session.scalar(
        select(sa.func.count()).where(WebhookEndpoint.school_id == school.id)
    )
    if (held or 0) >= MAX_ENDPOINTS:
        raise Conflict(f"{TOO_MANY_TEXT} Delete one to add another.")
    secret = _new_secret()
    endpoint = WebhookEndpoint(
        school_id=school.id,
        url=await _checked(data.url, allow_private),
        events=data.events,
        description=data.description,
        enabled=True,
        secret=box.seal({"secret": secret}),
    )
    session.add(endpoint)
    await session.flush()
    shown = schemas.WebhookEndpoint.model_validate(endpoint).model_dump()
    return schemas.WebhookEndpointCreated(**shown, secret=secret)


async def get(session: AsyncSession, school: School, endpoint_id: str) -> WebhookEndpoint:
    found = await session.get(WebhookEndpoint, parse_uuid(endpoint_id, "webhook endpoint"))
    if found is None or found.school_id != school.id:
        raise NotFound(f"No webhook endpoint with id {endpoint_id!r}.")
    return found


async def update(
    session: AsyncSession,
    school: School,
    endpoint_id: str,
    data: schemas.WebhookEndpointUpdate,
    allow_private: bool,
) -> tuple[WebhookEndpoint, list[str]]:
    """Change what `data` names; the endpoint, and the columns whose values changed."""
    endpoint = await get(session, school, endpoint_id)
    before = audit.columns(endpoint)
    changes: dict[str, Any] = data.model_dump(exclude_unset=True)
    if changes.get("url") is not None:
        endpoint.url = await _checked(changes["url"], allow_private)
    if "events" in changes:
        endpoint.events = changes["events"]
    if "description" in changes:
        endpoint.description = changes["description"]
    if changes.get("enabled") is not None:
        endpoint.enabled = changes["enabled"]
    await session.flush()
    changed = audit.changed(before, endpoint)
    if "enabled" in changed and endpoint.enabled:
        # Enabled again: the events of the transactions that begin writing after this one,
        # none of those of while it was off.
        await session.execute(
            sa.update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint.id)
            .values(cursor_xid=literal_column(outbox.XID), cursor_id=0)
        )
    return endpoint, changed


async def delete(session: AsyncSession, school: School, endpoint_id: str) -> uuid.UUID:
    """Delete the endpoint (its deliveries with it); its id."""
    endpoint = await get(session, school, endpoint_id)
    await session.execute(
        sa.delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    )
    await session.delete(endpoint)
    return endpoint.id


async def list_page(
    session: AsyncSession, school: School, cursor: str | None, limit: int
) -> tuple[list[WebhookEndpoint], str | None]:
    after = decode_cursor(cursor, time_key, uuid_key)
    query = select(WebhookEndpoint).where(WebhookEndpoint.school_id == school.id)
    if after is not None:
        query = query.where(
            tuple_(WebhookEndpoint.created_at, WebhookEndpoint.id) > tuple_(after[0], after[1])
        )
    query = query.order_by(WebhookEndpoint.created_at, WebhookEndpoint.id).limit(limit + 1)
    rows = list((await session.scalars(query)).all())
    return page_of(rows, limit, lambda e: (e.created_at.isoformat(), str(e.id)))


async def deliveries(
    session: AsyncSession, school: School, endpoint_id: str, cursor: str | None, limit: int
) -> tuple[list[schemas.Delivery], str | None]:
    """The endpoint's deliveries, newest first."""
    endpoint = await get(session, school, endpoint_id)
    after = decode_cursor(cursor, int_key)
    query = (
        select(WebhookDelivery, Event.id, Event.public_id, Event.type)
        .join(Event, Event.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.endpoint_id == endpoint.id)
    )
    if after is not None:
        query = query.where(WebhookDelivery.id < after[0])
    query = query.order_by(WebhookDelivery.id.desc()).limit(limit + 1)
    rows = (await session.execute(query)).all()
    page, next_cursor = page_of(list(rows), limit, lambda r: (r[0].id,))
    return [
        schemas.Delivery(
            id=str(delivery.id),
            event_id=render.public_id(event_id, stored),
            type=kind,
            status=delivery.status,
            attempts=delivery.attempts,
            last_status=delivery.last_status,
            last_error=delivery.last_error,
            next_attempt_at=delivery.next_attempt_at,
            delivered_at=delivery.delivered_at,
            created_at=delivery.created_at,
        )
        for delivery, event_id, stored, kind in page
    ], next_cursor
