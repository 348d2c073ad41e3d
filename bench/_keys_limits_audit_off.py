"""bench/keys_limits_audit.py's "off" app: the per-request work that keys, limits and the
audit trail added (commit b3c8c5d and after) taken out, so that what is left is what an
authenticated request did before them. Another app of the same process ("on") is left as
it is: what is swapped at module level asks which app a request is for.

Taken out: the request-id middleware (it is there for the trail); the count of the key's
requests in flight and its rate limit (both off, as `RATE_LIMIT_IN_FLIGHT=0` and
`RATE_LIMIT_PER_MINUTE=0` turn them off); `current_key`'s lookup, revocation check and last
use, replaced by the lookup as it was before (the school by its token's hash, in the
request's transaction); every audit event (the off app's keys carry no prefix, and a trail
without an actor records nothing).

Left in, as the functions FastAPI was given when the routes were made: the dependencies
themselves (`key_in_flight`, now a pass-through, `current_school`, `school_trail`), a few
function calls a request; and, in both apps, the two checks of which app it is. Not
`app.dependency_overrides`: FastAPI rebuilds an overridden dependency's signature on every
request, a cost of its own (over 1 ms a page here) that the "on" app does not pay."""

from __future__ import annotations

import uuid
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import Trail
from app.errors import Unauthorized
from app.kit.crypto import token_hash
from app.kit.request_id import RequestId
from app.models import ApiKey, School
from app.schools import dependencies
from app.schools.repository import KeyInUse

NO_KEY = uuid.UUID(int=0)
NO_ACTOR = ""


async def school_by_token(
    request: Request,
    session: AsyncSession,
    credentials: HTTPAuthorizationCredentials | None,
) -> KeyInUse:
    """In place of `current_key`: the lookup as it was before keys were managed (d751606)."""
    if credentials is None:
        raise Unauthorized("Send your API key as `Authorization: Bearer <key>`.")
    query = (
        select(School)
        .join(ApiKey, ApiKey.school_id == School.id)
        .where(ApiKey.token_hash == token_hash(credentials.credentials))
    )
    school = (await session.execute(query)).scalar_one_or_none()
    if school is None:
        raise Unauthorized("That API key is not valid.")
    return KeyInUse(school, NO_KEY, NO_ACTOR)


def feature_off(app: FastAPI) -> None:
    app.state.feature_off = True
    app.state.rate_limits = None
    app.state.in_flight = None
    # The middleware stack is built at the first request.
    app.user_middleware = [m for m in app.user_middleware if cast(object, m.cls) is not RequestId]
    if getattr(dependencies.current_key, "__name__", "") == "current_key":
        current_key = dependencies.current_key
        record = Trail.record

        async def either_key(
            request: Request,
            session: AsyncSession,
            credentials: HTTPAuthorizationCredentials | None,
        ) -> KeyInUse:
            if getattr(request.app.state, "feature_off", False):
                return await school_by_token(request, session, credentials)
            return await current_key(request, session, credentials)

        def either_record(self: Trail, *args: Any, **kwargs: Any) -> None:
            if self.actor != NO_ACTOR:
                record(self, *args, **kwargs)

        # `key_in_flight` calls `current_key` by its module's name, at each request; the
        # trail's `record` is looked up on its class.
        dependencies.current_key = either_key
        Trail.record = either_record  # type: ignore[method-assign]
