from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.events import schemas, service
from app.kit.deps import SecretBoxDep, SessionDep, SettingsDep
from app.kit.pagination import Cursor, Limit, Page
from app.schools.dependencies import CurrentSchool

router = APIRouter(prefix="/webhook-endpoints", tags=["webhook-endpoints"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.WebhookEndpointCreated,
    operation_id="createWebhookEndpoint",
    summary="Subscribe a URL to the school's events",
)
async def create_webhook_endpoint(
    data: schemas.WebhookEndpointCreate,
    school: CurrentSchool,
    session: SessionDep,
    box: SecretBoxDep,
    settings: SettingsDep,
) -> schemas.WebhookEndpointCreated:
    """Events of the types asked for (all, with `events: null`) are posted to the URL, signed
    as Standard Webhooks says, with the secret in this answer: it is shown this once."""
    return await service.create(session, school, data, box, settings.events_allow_private_urls)


@router.get(
    "",
    response_model=Page[schemas.WebhookEndpoint],
    operation_id="listWebhookEndpoints",
    summary="The school's webhook endpoints",
)
async def list_webhook_endpoints(
    school: CurrentSchool, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[schemas.WebhookEndpoint]:
    rows, next_cursor = await service.list_page(session, school, cursor, limit)
    return Page(
        items=[schemas.WebhookEndpoint.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/{endpoint_id}",
    response_model=schemas.WebhookEndpoint,
    operation_id="getWebhookEndpoint",
    summary="One webhook endpoint",
)
async def get_webhook_endpoint(
    endpoint_id: str, school: CurrentSchool, session: SessionDep
) -> schemas.WebhookEndpoint:
    return schemas.WebhookEndpoint.model_validate(await service.get(session, school, endpoint_id))


@router.patch(
    "/{endpoint_id}",
    response_model=schemas.WebhookEndpoint,
    operation_id="updateWebhookEndpoint",
    summary="Change a webhook endpoint's URL, event types, description, or enable it",
)
async def update_webhook_endpoint(
    endpoint_id: str,
    data: schemas.WebhookEndpointUpdate,
    school: CurrentSchool,
    session: SessionDep,
    settings: SettingsDep,
) -> schemas.WebhookEndpoint:
    endpoint = await service.update(
        session, school, endpoint_id, data, settings.events_allow_private_urls
    )
    return schemas.WebhookEndpoint.model_validate(endpoint)


@router.delete(
    "/{endpoint_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="deleteWebhookEndpoint",
    summary="Stop posting to a webhook endpoint, and forget it",
)
async def delete_webhook_endpoint(
    endpoint_id: str, school: CurrentSchool, session: SessionDep
) -> Response:
    await service.delete(session, school, endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{endpoint_id}/deliveries",
    response_model=Page[schemas.Delivery],
    operation_id="listWebhookDeliveries",
    summary="A webhook endpoint's recent deliveries, newest first",
)
async def list_webhook_deliveries(
    endpoint_id: str,
    school: CurrentSchool,
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[schemas.Delivery]:
    items, next_cursor = await service.deliveries(session, school, endpoint_id, cursor, limit)
    return Page(items=items, next_cursor=next_cursor)
