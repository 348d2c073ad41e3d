"""Authentication: the school behind a bearer API key, and the admin token."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import Unauthorized
from app.kit.deps import SessionDep, SettingsDep
from app.models import School
from app.schools import service

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="SchoolApiKey",
    description="A school's API key (from `POST /v1/admin/schools` or its api-keys).",
)
admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="The service's `ADMIN_TOKEN` setting, for the `/v1/admin/...` operations.",
)


async def current_school(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> School:
    if credentials is None:
        raise Unauthorized("Send your API key as `Authorization: Bearer <key>`.")
    school = await service.authenticate(session, credentials.credentials)
    if school is None:
        raise Unauthorized("That API key is not valid.")
    return school


async def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
) -> None:
    expected = settings.admin_token
    if credentials is None or not expected:
        raise Unauthorized("Send the admin token as `Authorization: Bearer <token>`.")
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise Unauthorized("That admin token is not valid.")


CurrentSchool = Annotated[School, Depends(current_school)]
AdminAuth = Depends(require_admin)
