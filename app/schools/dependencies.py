"""Authentication: the school behind a bearer API key, and the admin token."""

from __future__ import annotations

import hmac
import math
from collections.abc import AsyncIterator
from typing import Annotated, NoReturn

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.audit.service import Trail
from app.errors import AppError, TooManyRequests, Unauthorized
from app.kit.crypto import token_hash
from app.kit.deps import SessionDep, SettingsDep
from app.kit.rate_limit import InFlight, TokenBuckets
from app.kit.request_id import request_id
from app.models import ADMIN_ACTOR, School
from app.schools import service
from app.schools.repository import KeyInUse

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


async def current_key(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> KeyInUse:
    """The caller's key and school. A key already seen valid by this process spends its rate
    limit first, so a key over it is refused before anything is asked of the database; a
    token is given a bucket and its use noted only once it is found to be a valid key, so a
    made-up token leaves nothing behind (README, Rate limits)."""
    if credentials is None:
        raise Unauthorized("Send your API key as `Authorization: Bearer <key>`.")
    digest = token_hash(credentials.credentials)
    limits: TokenBuckets | None = request.app.state.rate_limits
    wait = limits.spend(digest) if limits is not None else 0.0
    if wait:
        await _refuse(request, session, digest, _over_the_limit(wait))
    key = await service.authenticate(session, digest)
    if key is None:
        raise Unauthorized("That API key is not valid.")
    known: service.KnownKeys = request.app.state.known_keys
    known.confirm(digest, key.school.id)
    # A key without a bucket here gets one now; its requests that raced this one to the
    # lookup spend from the same.
    if wait is None and limits is not None and (wait := limits.take(digest)):
        raise _over_the_limit(wait)
    last_used: service.LastUsed = request.app.state.last_used
    last_used.note(key.key_id)
    return key


async def _refuse(
    request: Request, session: SessionDep, digest: str, refusal: TooManyRequests
) -> NoReturn:
    """Refuse a request over a limit before its key is looked up, unless the key was
    revoked: its validity is read again once the last reading is a second old, so a revoked
    key is answered 401, not 429, within a second in every process (README, API keys),
    while a runaway key costs at most one lookup a second."""
    known: service.KnownKeys = request.app.state.known_keys
    if not known.confirmed(digest):
        key = await service.authenticate(session, digest)
        if key is None:
            forget(request, digest)
            raise Unauthorized("That API key is not valid.")
        known.confirm(digest, key.school.id)
    raise refusal


def forget(request: Request, digest: str) -> None:
    """Drop what this process keeps of a key (revoked): its bucket, its school."""
    known: service.KnownKeys = request.app.state.known_keys
    known.forget(digest)
    limits: TokenBuckets | None = request.app.state.rate_limits
    if limits is not None:
        limits.forget(digest)


def _over_the_limit(wait: float) -> TooManyRequests:
    seconds = max(1, math.ceil(wait))
    return TooManyRequests(
        f"This API key is over its rate limit; try again in {seconds} s.",
        retry_after_seconds=seconds,
    )


async def key_in_flight(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> AsyncIterator[KeyInUse]:
    """`current_key`, counted among its school's requests in flight in this process for as
    long as the operation runs (whichever of the school's keys they carry, once this
    process has seen the key valid; by the key itself before); over `RATE_LIMIT_IN_FLIGHT`
    it is refused at once, before its rate limit is spent or, unless its validity was last
    read a second ago or more, the database asked (README, Rate limits)."""
    in_flight: InFlight | None = request.app.state.in_flight
    if in_flight is None or credentials is None:
        yield await current_key(request, session, credentials)
        return
    digest = token_hash(credentials.credentials)
    known: service.KnownKeys = request.app.state.known_keys
    school_id = known.school_of(digest)
    counted = digest if school_id is None else f"school:{school_id}"
    if not in_flight.enter(counted):
        await _refuse(
            request,
            session,
            digest,
            TooManyRequests(
                f"This school has {in_flight.cap} requests in progress in this API process "
                "already; send more once they are answered.",
                retry_after_seconds=1,
            ),
        )
    try:
        yield await current_key(request, session, credentials)
    finally:
        in_flight.leave(counted)


# scope="function": the key leaves the count when the operation returns (its transaction then
# commits), before its answer is sent, so a client that waits for each answer before its next
# request is never refused for requests in flight.
CurrentKey = Annotated[KeyInUse, Depends(key_in_flight, scope="function")]


async def current_school(key: CurrentKey) -> School:
    return key.school


async def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
) -> None:
    expected = settings.admin_token
    if credentials is None or not expected:
        raise Unauthorized("Send the admin token as `Authorization: Bearer <token>`.")
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise Unauthorized("That admin token is not valid.")


async def school_trail(request: Request, session: SessionDep, key: CurrentKey) -> Trail:
    """The audit trail of a change made with the caller's key."""
    return Trail(session, key.prefix, request_id(request))


async def admin_trail(request: Request, session: SessionDep) -> Trail:
    """The audit trail of a change made with the admin token."""
    return Trail(session, ADMIN_ACTOR, request_id(request))


CurrentSchool = Annotated[School, Depends(current_school)]
AdminAuth = Depends(require_admin)
SchoolTrail = Annotated[Trail, Depends(school_trail)]
AdminTrail = Annotated[Trail, Depends(admin_trail)]

# The errors every operation behind these dependencies may answer (OpenAPI `responses`,
# through `app.errors.declared`).
RATE_LIMITED: tuple[type[AppError], str] = (
    TooManyRequests,
    "The key is over its rate limit, or has as many requests in progress as it may; "
    "`Retry-After` says when to retry.",
)
KEY_REFUSALS: tuple[tuple[type[AppError], str], ...] = (
    (Unauthorized, "No API key, or one that is unknown or revoked."),
    RATE_LIMITED,
)
ADMIN_REFUSALS: tuple[tuple[type[AppError], str], ...] = (
    (Unauthorized, "No admin token, or not the service's ADMIN_TOKEN."),
)
