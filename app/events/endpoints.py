from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.ext.asyncio import AsyncSession
from sse_starlette import EventSourceResponse

from app.campaigns import service as campaigns
from app.errors import BadRequest, NotFound, Unauthorized, Unprocessable, responses
from app.events import outbox, schemas, service, stream
from app.events.stream import Broadcaster
from app.events.tokens import StreamTokens
from app.kit.db import unit_of_work
from app.kit.deps import SecretBoxDep, SessionDep, SessionmakerDep, SettingsDep
from app.kit.pagination import CURSOR_ERROR, Cursor, Limit, Page
from app.kit.schemas import parse_uuid
from app.models import AuditAction
from app.schools import repository as keys
from app.schools.dependencies import CurrentKey, CurrentSchool, SchoolTrail, bearer, current_key
from app.schools.repository import KeyInUse

HEARTBEAT_SECONDS = 15
# The longest position the stream sends (`xid-id`, each below 2**63): a Last-Event-ID any
# longer is not one, and is not parsed.
POSITION_CHARS = len(str(outbox.Position(2**63 - 1, 2**63 - 1)))
NOT_A_POSITION = "Last-Event-ID is not a position this stream sent."
NO_ENDPOINT = (NotFound, "No webhook endpoint with this id in the school.")
REFUSED_URL = (
    Unprocessable,
    "Not valid; or the URL is not https, or its host does not resolve only to public "
    "addresses (README, Events).",
)

router = APIRouter(prefix="/webhook-endpoints", tags=["webhook-endpoints"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.WebhookEndpointCreated,
    operation_id="createWebhookEndpoint",
    responses=responses(REFUSED_URL, service.TOO_MANY),
    summary="Subscribe a URL to the school's events",
)
async def create_webhook_endpoint(
    data: schemas.WebhookEndpointCreate,
    school: CurrentSchool,
    session: SessionDep,
    box: SecretBoxDep,
    settings: SettingsDep,
    trail: SchoolTrail,
) -> schemas.WebhookEndpointCreated:
    """Events of the types asked for (all, with `events: null`) are posted to the URL, signed
    as Standard Webhooks says, with the secret in this answer: it is shown this once. A
    school has at most 20 endpoints."""
    made = await service.create(session, school, data, box, settings.events_allow_private_urls)
    trail.record(school.id, AuditAction.webhook_endpoint_create, made.id, {"url": made.url})
    return made


@router.get(
    "",
    response_model=Page[schemas.WebhookEndpoint],
    operation_id="listWebhookEndpoints",
    responses=responses(CURSOR_ERROR),
    summary="The school's webhook endpoints",
)
async def list_webhook_endpoints(
    school: CurrentSchool, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[schemas.WebhookEndpoint]:
    """The school's webhook endpoints, oldest first (never their secrets)."""
    rows, next_cursor = await service.list_page(session, school, cursor, limit)
    return Page(
        items=[schemas.WebhookEndpoint.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/{endpoint_id}",
    response_model=schemas.WebhookEndpoint,
    operation_id="getWebhookEndpoint",
    responses=responses(NO_ENDPOINT),
    summary="One webhook endpoint",
)
async def get_webhook_endpoint(
    endpoint_id: str, school: CurrentSchool, session: SessionDep
) -> schemas.WebhookEndpoint:
    """One of the school's webhook endpoints (another school's id is a 404)."""
    return schemas.WebhookEndpoint.model_validate(await service.get(session, school, endpoint_id))


@router.patch(
    "/{endpoint_id}",
    response_model=schemas.WebhookEndpoint,
    operation_id="updateWebhookEndpoint",
    responses=responses(NO_ENDPOINT, REFUSED_URL),
    summary="Change a webhook endpoint's URL, event types, description, or enable it",
)
async def update_webhook_endpoint(
    endpoint_id: str,
    data: schemas.WebhookEndpointUpdate,
    school: CurrentSchool,
    session: SessionDep,
    settings: SettingsDep,
    trail: SchoolTrail,
) -> schemas.WebhookEndpoint:
    """Change what the request names: `url` (checked as when it was made), `events`,
    `description`, `enabled` (a disabled endpoint's deliveries wait until it is enabled)."""
    endpoint, changed = await service.update(
        session, school, endpoint_id, data, settings.events_allow_private_urls
    )
    if changed:
        fields = {"fields": changed}
        trail.record(school.id, AuditAction.webhook_endpoint_update, endpoint.id, fields)
    return schemas.WebhookEndpoint.model_validate(endpoint)


@router.delete(
    "/{endpoint_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="deleteWebhookEndpoint",
    responses=responses(NO_ENDPOINT),
    summary="Stop posting to a webhook endpoint, and forget it",
)
async def delete_webhook_endpoint(
    endpoint_id: str, school: CurrentSchool, session: SessionDep, trail: SchoolTrail
) -> Response:
    """Forget the endpoint: nothing more is posted to it, its deliveries go with it."""
    deleted = await service.delete(session, school, endpoint_id)
    trail.record(school.id, AuditAction.webhook_endpoint_delete, deleted)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{endpoint_id}/deliveries",
    response_model=Page[schemas.Delivery],
    operation_id="listWebhookDeliveries",
    responses=responses(NO_ENDPOINT, CURSOR_ERROR),
    summary="A webhook endpoint's recent deliveries, newest first",
)
async def list_webhook_deliveries(
    endpoint_id: str,
    school: CurrentSchool,
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[schemas.Delivery]:
    """The endpoint's deliveries, newest first: each event, how many posts it took, the
    last answer (HTTP status or why there was none) and the next retry."""
    items, next_cursor = await service.deliveries(session, school, endpoint_id, cursor, limit)
    return Page(items=items, next_cursor=next_cursor)


streams = APIRouter(prefix="/campaigns", tags=["campaigns"])


@streams.post(
    "/{campaign_id}/events/token",
    response_model=schemas.StreamToken,
    operation_id="createStreamToken",
    responses=responses((NotFound, "No such campaign in this school.")),
    summary="A short-lived token for a campaign's live stream, for browsers",
)
async def create_stream_token(
    campaign_id: str, key: CurrentKey, session: SessionDep, box: SecretBoxDep
) -> schemas.StreamToken:
    """A token that opens this campaign's stream for an hour (`?token=`), while the API key
    that asked for it is not revoked: for a browser, whose EventSource cannot send the API
    key in a header. With it, the stream's position now (`last_event_id`), to start from
    instead of the campaign's history."""
    campaign = await campaigns.get(session, key.school, campaign_id)
    token, expires = StreamTokens(box).issue(key.school.id, campaign.id, key.key_id)
    latest = await outbox.latest(session, campaign.id)
    return schemas.StreamToken(
        token=token,
        expires_at=datetime.fromtimestamp(expires, UTC),
        last_event_id=None if latest is None else str(latest),
    )


@streams.get(
    "/{campaign_id}/events",
    operation_id="streamCampaignEvents",
    summary="The campaign's live stream of events (Server-Sent Events)",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The stream"},
        **responses(
            (BadRequest, "`Last-Event-ID` is not a position this stream sent."),
            (NotFound, "No such campaign in this school."),
        ),
    },
)
async def stream_campaign_events(
    campaign_id: str,
    request: Request,
    sessionmaker: SessionmakerDep,
    box: SecretBoxDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    token: Annotated[str | None, Query(max_length=200)] = None,
    # No max_length: a longer one is refused as every other that is not a position, a 400.
    last_event_id: Annotated[
        str | None,
        Header(
            description="The SSE `id` of the last event the client had: the stream resumes "
            "after it. One the stream did not send (whatever its length) is a 400"
        ),
    ] = None,
) -> EventSourceResponse:
    """The campaign's `recipient.updated` and `campaign.updated` events, as the webhooks post
    them, each with its position as the SSE `id`: those after `Last-Event-ID` first (all
    of them without it), then each as it happens, within a second of its commit; a comment
    every 15 s keeps proxies from closing it. Authenticate with the API key, or with
    `?token=` from `POST .../events/token`."""
    # A transaction of its own, over before the stream begins: a stream lasts as long as its
    # client listens, and the request's own session would hold a connection of the pool
    # all that time.
    async with unit_of_work(sessionmaker) as session:
        key = await stream_key(request, session, box, credentials, token, campaign_id)
        campaign = await campaigns.get(session, key.school, campaign_id)
    after = outbox.START
    if last_event_id:
        short = len(last_event_id) <= POSITION_CHARS
        resumed = outbox.Position.parse(last_event_id) if short else None
        if resumed is None:
            raise BadRequest(NOT_A_POSITION)
        after = resumed
    broadcaster: Broadcaster = request.app.state.broadcaster
    await broadcaster.start()
    sessionmaker = request.app.state.sessionmaker
    return EventSourceResponse(
        stream.campaign_events(broadcaster, sessionmaker, campaign.id, after, key.key_id),
        ping=HEARTBEAT_SECONDS,
    )


async def stream_key(
    request: Request,
    session: AsyncSession,
    box: SecretBoxDep,
    credentials: HTTPAuthorizationCredentials | None,
    token: str | None,
    campaign_id: str,
) -> KeyInUse:
    """The API key a stream is opened with: the request's, or the one a stream token names
    (a token, if given, must be valid and its key not revoked, whatever else is)."""
    if token is None:
        if credentials is None:
            raise Unauthorized("Send your API key as `Authorization: Bearer <key>`, or `?token=`.")
        # As every other operation: the key's rate limit, its last use, its validity.
        return await current_key(request, session, credentials)
    issued = StreamTokens(box).read(token, parse_uuid(campaign_id, "campaign"))
    key = await keys.by_key_id(session, *issued) if issued is not None else None
    if key is None:
        raise Unauthorized(
            "That stream token is not valid, has expired, or its API key was revoked."
        )
    return key
