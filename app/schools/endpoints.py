from __future__ import annotations

from fastapi import APIRouter, Body, status

from app.errors import NotFound, responses
from app.kit.deps import SecretBoxDep, SessionDep, SettingsDep
from app.kit.schemas import parse_uuid
from app.schools import schemas, service
from app.schools.dependencies import AdminAuth, CurrentSchool

router = APIRouter()
ADMIN = "schools"
SCHOOL = "school"


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
    data: schemas.SchoolCreate, session: SessionDep, settings: SettingsDep
) -> schemas.SchoolWithKey:
    """Create a school and its first API key (shown only in this answer)."""
    school, key = await service.create(session, data, settings)
    return schemas.SchoolWithKey.model_validate(
        {**schemas.School.model_validate(school).model_dump(), "api_key": key}
    )


@router.post(
    "/admin/schools/{school_id}/api-keys",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.ApiKeyCreated,
    dependencies=[AdminAuth],
    operation_id="createSchoolApiKey",
    summary="Issue another API key",
    tags=[ADMIN],
    responses=responses((NotFound, "No school with that id.")),
)
async def create_api_key(school_id: str, session: SessionDep) -> schemas.ApiKeyCreated:
    """Issue another API key for a school (shown only in this answer)."""
    key, token = await service.add_api_key(session, parse_uuid(school_id, "school"))
    return schemas.ApiKeyCreated(
        id=str(key.id), api_key=token, prefix=key.prefix, created_at=key.created_at
    )


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
    changes: schemas.SchoolSettings, school: CurrentSchool, session: SessionDep
) -> schemas.School:
    """Change the school's settings: time zone, region, countries, sending window, retries."""
    return schemas.School.model_validate(await service.update(session, school, changes))


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
    data: schemas.ProviderAccountIn = Body(),
) -> schemas.ProviderAccount:
    """Set the school's SMS provider account; the answer never includes secrets."""
    account = await service.set_provider(session, school, data, box)
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
