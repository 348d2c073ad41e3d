from __future__ import annotations

from fastapi import APIRouter, Body, Query, Request, Response, status

from app.audit import schemas as audit_schemas
from app.audit import service as audit
from app.errors import NotFound, Unprocessable, responses
from app.kit.deps import SecretBoxDep, SessionDep, SettingsDep
from app.kit.pagination import CURSOR_ERROR, Cursor, Limit, Page
from app.kit.schemas import NoNul, Timestamp, parse_uuid
from app.models import AuditAction
from app.schools import schemas, service
from app.schools.dependencies import (
    ADMIN_REFUSALS,
    KEY_REFUSALS,
    AdminAuth,
    AdminTrail,
    CurrentSchool,
    SchoolTrail,
    forget,
)

router = APIRouter()
ADMIN = "schools"
SCHOOL = "school"
KEYS = "api-keys"
AUDIT = "audit-events"

NO_SCHOOL = (NotFound, "No school with this id.")
NO_KEY = (NotFound, "No API key with this id in the school.")
INVALID = (Unprocessable, "The request is not valid.")


@router.post(
    "/admin/schools",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.SchoolWithKey,
    dependencies=[AdminAuth],
    operation_id="createSchool",
    summary="Create a school",
    tags=[ADMIN],
)
async def create_school(
    data: schemas.SchoolCreate, session: SessionDep, settings: SettingsDep, trail: AdminTrail
) -> schemas.SchoolWithKey:
    """Create a school and its first API key (shown only in this answer)."""
    school, key = await service.create(session, data, settings)
    trail.record(school.id, AuditAction.school_create, school.id, {"api_key": key[:12]})
    return schemas.SchoolWithKey.model_validate(
        {**schemas.School.model_validate(school).model_dump(), "api_key": key}
    )


@router.get(
    "/admin/schools",
    response_model=Page[schemas.School],
    dependencies=[AdminAuth],
    operation_id="listSchools",
    summary="List schools",
    responses=responses(*ADMIN_REFUSALS, CURSOR_ERROR),
    tags=[ADMIN],
)
async def list_schools(
    session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[schemas.School]:
    """Every school, oldest first."""
    rows, next_cursor = await service.list_page(session, cursor, limit)
    return Page(items=[schemas.School.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/admin/schools/{school_id}",
    response_model=schemas.School,
    dependencies=[AdminAuth],
    operation_id="getSchoolAsAdmin",
    summary="Get a school",
    responses=responses(*ADMIN_REFUSALS, NO_SCHOOL),
    tags=[ADMIN],
)
async def get_school_as_admin(school_id: str, session: SessionDep) -> schemas.School:
    """One school and its settings."""
    school = await service.get(session, parse_uuid(school_id, "school"))
    return schemas.School.model_validate(school)


@router.get(
    "/admin/schools/{school_id}/api-keys",
    response_model=Page[schemas.ApiKey],
    dependencies=[AdminAuth],
    tags=[KEYS],
    operation_id="listSchoolApiKeys",
    summary="List a school's API keys",
    responses=responses(*ADMIN_REFUSALS, NO_SCHOOL, CURSOR_ERROR),
)
async def list_school_api_keys(
    school_id: str,
    request: Request,
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[schemas.ApiKey]:
    """A school's API keys, oldest first, revoked ones included; never their secrets."""
    await request.app.state.last_used.flush_in(session)  # the uses this process noted
    rows, next_cursor = await service.api_keys_page(
        session, parse_uuid(school_id, "school"), cursor, limit
    )
    return Page(items=[schemas.ApiKey.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "/admin/schools/{school_id}/api-keys",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.ApiKeyCreated,
    dependencies=[AdminAuth],
    tags=[KEYS],
    operation_id="createSchoolApiKey",
    summary="Create an API key for a school",
    responses=responses(*ADMIN_REFUSALS, NO_SCHOOL, INVALID),
)
async def create_school_api_key(
    school_id: str, data: schemas.ApiKeyCreate, session: SessionDep, trail: AdminTrail
) -> schemas.ApiKeyCreated:
    """Issue another API key for a school (shown only in this answer)."""
    key, token = await service.add_api_key(session, parse_uuid(school_id, "school"), data.name)
    trail.record(key.school_id, AuditAction.api_key_create, key.id)
    return schemas.ApiKeyCreated.model_validate({**_shown(key), "api_key": token})


@router.delete(
    "/admin/schools/{school_id}/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[AdminAuth],
    tags=[KEYS],
    operation_id="revokeSchoolApiKey",
    summary="Revoke a school's API key",
    responses=responses(*ADMIN_REFUSALS, NO_KEY),
)
async def revoke_school_api_key(
    school_id: str, key_id: str, request: Request, session: SessionDep, trail: AdminTrail
) -> Response:
    """Revoke a school's key: refused from the moment this answers, in every API process,
    and the live streams it opened end."""
    school_uuid = parse_uuid(school_id, "school")
    key, revoked = await service.revoke_api_key(session, school_uuid, parse_uuid(key_id, "API key"))
    forget(request, key.token_hash)
    if revoked:
        trail.record(school_uuid, AuditAction.api_key_revoke, key.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/api-keys",
    response_model=Page[schemas.ApiKey],
    tags=[KEYS],
    operation_id="listApiKeys",
    summary="List API keys",
    responses=responses(*KEY_REFUSALS, CURSOR_ERROR),
)
async def list_api_keys(
    request: Request,
    school: CurrentSchool,
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[schemas.ApiKey]:
    """The school's API keys, oldest first, revoked ones included; never their secrets."""
    await request.app.state.last_used.flush_in(session)  # this request's use among them
    rows, next_cursor = await service.api_keys_page(session, school.id, cursor, limit)
    return Page(items=[schemas.ApiKey.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "/api-keys",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.ApiKeyCreated,
    tags=[KEYS],
    operation_id="createApiKey",
    summary="Create an API key",
    responses=responses(*KEY_REFUSALS, INVALID),
)
async def create_api_key(
    data: schemas.ApiKeyCreate, school: CurrentSchool, session: SessionDep, trail: SchoolTrail
) -> schemas.ApiKeyCreated:
    """Issue another API key for the school; its secret is in this answer and never again."""
    key, token = await service.add_api_key(session, school.id, data.name)
    trail.record(school.id, AuditAction.api_key_create, key.id)
    return schemas.ApiKeyCreated.model_validate({**_shown(key), "api_key": token})


@router.delete(
    "/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=[KEYS],
    operation_id="revokeApiKey",
    summary="Revoke an API key",
    responses=responses(*KEY_REFUSALS, NO_KEY),
)
async def revoke_api_key(
    key_id: str, request: Request, school: CurrentSchool, session: SessionDep, trail: SchoolTrail
) -> Response:
    """Revoke one of the school's keys (this one too): refused from the moment this answers,
    in every API process, and the live streams it opened end. Revoking a revoked key
    changes nothing."""
    key, revoked = await service.revoke_api_key(session, school.id, parse_uuid(key_id, "API key"))
    forget(request, key.token_hash)
    if revoked:
        trail.record(school.id, AuditAction.api_key_revoke, key.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/audit-events",
    response_model=Page[audit_schemas.AuditEvent],
    tags=[AUDIT],
    operation_id="listAuditEvents",
    summary="List audit events",
    responses=responses(*KEY_REFUSALS, INVALID, CURSOR_ERROR),
)
async def list_audit_events(
    school: CurrentSchool,
    session: SessionDep,
    action: AuditAction | None = Query(default=None, description="Only this action."),
    target_id: str | None = Query(
        default=None, max_length=64, pattern=NoNul, description="Only changes of this target."
    ),
    since: Timestamp | None = Query(
        default=None, description="Only changes made at or after this time (RFC 3339)."
    ),
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[audit_schemas.AuditEvent]:
    """Who changed what through the API, and when: the school's audit trail, newest first."""
    rows, next_cursor = await audit.list_page(
        session,
        school.id,
        action=action,
        target_id=target_id,
        since=since,
        cursor=cursor,
        limit=limit,
    )
    items = [audit_schemas.AuditEvent.model_validate(r) for r in rows]
    return Page(items=items, next_cursor=next_cursor)


@router.get(
    "/school",
    response_model=schemas.School,
    operation_id="getSchool",
    summary="Get the caller's school",
    tags=[SCHOOL],
)
async def get_school(school: CurrentSchool) -> schemas.School:
    """The caller's school and its settings."""
    return schemas.School.model_validate(school)


@router.patch(
    "/school",
    response_model=schemas.School,
    operation_id="updateSchool",
    summary="Change the school's settings",
    tags=[SCHOOL],
)
async def update_school(
    changes: schemas.SchoolSettings, school: CurrentSchool, session: SessionDep, trail: SchoolTrail
) -> schemas.School:
    """Change the school's settings: time zone, region, countries, sending window, retries."""
    before = audit.columns(school)
    updated = await service.update(session, school, changes)
    if settings := audit.changed(before, updated):
        trail.record(school.id, AuditAction.school_update, school.id, {"settings": settings})
    return schemas.School.model_validate(updated)


@router.put(
    "/school/provider",
    response_model=schemas.ProviderAccount,
    operation_id="setProviderAccount",
    summary="Set the SMS provider account",
    tags=[SCHOOL],
)
async def set_provider(
    school: CurrentSchool,
    session: SessionDep,
    box: SecretBoxDep,
    trail: SchoolTrail,
    # The discriminator on Body: FastAPI keeps Body's field info, not the type's.
    data: schemas.ProviderAccountIn = Body(discriminator="provider"),
) -> schemas.ProviderAccount:
    """Set the school's SMS provider account; the answer never includes secrets."""
    account = await service.set_provider(session, school, data, box)
    trail.record(
        school.id, AuditAction.provider_account_set, school.id, {"provider": account.provider}
    )
    return schemas.ProviderAccount.model_validate(account)


@router.get(
    "/school/provider",
    response_model=schemas.ProviderAccount,
    operation_id="getProviderAccount",
    summary="Get the SMS provider account",
    tags=[SCHOOL],
    responses=responses(
        (NotFound, "The school has no provider account: its messages go to the simulator.")
    ),
)
async def get_provider(school: CurrentSchool, session: SessionDep) -> schemas.ProviderAccount:
    """The school's provider account, without secrets (404: the simulator is used)."""
    return schemas.ProviderAccount.model_validate(await service.get_provider(session, school))


def _shown(key: object) -> dict[str, object]:
    """A key's listed fields (everything but its secret)."""
    return schemas.ApiKey.model_validate(key).model_dump()
