"""Schools: creation, settings, API keys, provider accounts."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection
from datetime import datetime, time
from time import monotonic

from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.errors import NotFound, Unprocessable
from app.kit.clock import utcnow
from app.kit.crypto import SecretBox, new_token, token_hash
from app.kit.db import unit_of_work
from app.kit.pagination import decode_cursor, page_of, time_key, uuid_key
from app.models import ApiKey, ProviderAccount, School
from app.schools import repository, schemas
from app.schools.repository import KeyInUse

DEFAULT_WINDOW = (time(8, 0), time(21, 0))
DEFAULT_TIMEZONE = "America/New_York"


def _apply(school: School, changes: schemas.SchoolSettings) -> None:
    fields = changes.model_fields_set
    # Merged and checked before anything changes: an invalid result refuses the whole change.
    policy = None
    if "retry_policy" in fields and changes.retry_policy is not None:
        policy = _merged_policy(school, changes.retry_policy)
    for name in ("name", "timezone", "default_region", "allowed_country_codes"):
        value = getattr(changes, name)
        if name in fields and value is not None:
            setattr(school, name, value)
    if "sending_window" in fields:
        window = changes.sending_window
        school.sending_window_start = window.start if window else None
        school.sending_window_end = window.end if window else None
    if policy is not None:
        school.retry_base_delay_seconds = policy.base_delay_seconds
        school.retry_max_delay_seconds = policy.max_delay_seconds
        school.max_retry_age_seconds = policy.max_retry_age_seconds


def _merged_policy(school: School, change: schemas.RetryPolicyPatch) -> schemas.RetryPolicyIn:
    """The school's retry policy with the settings the change names replaced (an explicit
    `max_retry_age_seconds: null` included), checked as a whole; 422 if it is not valid."""
    merged = {
        "base_delay_seconds": school.retry_base_delay_seconds,
        "max_delay_seconds": school.retry_max_delay_seconds,
        "max_retry_age_seconds": school.max_retry_age_seconds,
        **change.model_dump(exclude_unset=True),
    }
    try:
        return schemas.RetryPolicyIn.model_validate(merged)
    except ValidationError as exc:
        shown = ", ".join(f"{name} {'null' if v is None else v}" for name, v in merged.items())
        detail = (
            f"The retry policy this change would leave is not valid ({shown}); "
            "settings not sent keep their current values."
        )
        errors = [
            {"loc": ["body", "retry_policy", *err["loc"]], "msg": err["msg"], "type": err["type"]}
            for err in exc.errors()
        ]
        raise Unprocessable(detail, extra={"errors": errors}) from exc


async def create(
    session: AsyncSession, data: schemas.SchoolCreate, settings: Settings
) -> tuple[School, str]:
    """Create a school with the service defaults, and its first API key (returned in clear)."""
    school = School(
        id=uuid.uuid4(),
        name=data.name,
        timezone=DEFAULT_TIMEZONE,
        default_region="US",
        allowed_country_codes=[1],
        sending_window_start=DEFAULT_WINDOW[0],
        sending_window_end=DEFAULT_WINDOW[1],
        retry_base_delay_seconds=settings.retry_base_delay_seconds,
        retry_max_delay_seconds=settings.retry_max_delay_seconds,
        max_retry_age_seconds=None,
    )
    _apply(school, data)
    session.add(school)
    await session.flush()
    _, key = await add_api_key(session, school.id, schemas.DEFAULT_KEY_NAME)
    await session.refresh(school)
    return school, key


async def get(session: AsyncSession, school_id: uuid.UUID) -> School:
    school = await repository.get(session, school_id)
    if school is None:
        raise NotFound(f"No school with id {school_id}.")
    return school


async def list_page(
    session: AsyncSession, cursor: str | None, limit: int
) -> tuple[list[School], str | None]:
    """Every school, oldest first (the admin's list)."""
    after = decode_cursor(cursor, time_key, uuid_key)
    rows = await repository.schools_page(session, (after[0], after[1]) if after else None, limit)
    return page_of(rows, limit, lambda school: (school.created_at.isoformat(), school.id))


async def add_api_key(session: AsyncSession, school_id: uuid.UUID, name: str) -> tuple[ApiKey, str]:
    """A new API key for the school; the clear token exists only in the return value."""
    await get(session, school_id)
    token = new_token("cmp")
    key = ApiKey(school_id=school_id, token_hash=token_hash(token), prefix=token[:12], name=name)
    session.add(key)
    await session.flush()
    await session.refresh(key)
    return key, token


async def api_keys_page(
    session: AsyncSession, school_id: uuid.UUID, cursor: str | None, limit: int
) -> tuple[list[ApiKey], str | None]:
    """The school's keys, oldest first, revoked ones included."""
    await get(session, school_id)
    after = decode_cursor(cursor, time_key, uuid_key)
    rows = await repository.api_keys_page(
        session, school_id, (after[0], after[1]) if after else None, limit
    )
    return page_of(rows, limit, lambda key: (key.created_at.isoformat(), key.id))


async def revoke_api_key(
    session: AsyncSession, school_id: uuid.UUID, key_id: uuid.UUID
) -> tuple[ApiKey, bool]:
    """Revoke the school's key: every request with it is refused once this commits (keys
    are checked on every request, README, API keys). (key, whether it was revoked now: a
    key revoked before is left as it was.)"""
    key = await repository.api_key(session, school_id, key_id, lock=True)
    if key is None:
        raise NotFound(f"This school has no API key with id {key_id}.")
    if key.revoked_at is not None:
        return key, False
    key.revoked_at = utcnow()
    await session.flush()
    # Delivered at commit: every process ends the live streams the key opened
    # (`app.events.stream.Broadcaster`).
    await session.execute(
        text("SELECT pg_notify(:channel, :key)"), {"channel": KEY_REVOKED, "key": str(key.id)}
    )
    return key, True


# Notified (at commit) with a key's id when it is revoked.
KEY_REVOKED = "campanile_key_revoked"


async def authenticate(session: AsyncSession, digest: str) -> KeyInUse | None:
    """The key (by its token's SHA-256) and its school, unless unknown or revoked."""
    return await repository.by_token_hash(session, digest)


class KnownKeys:
    """The keys this process found valid, by their token's SHA-256: each one's school, so a
    school's requests in flight are counted together whichever of its keys they carry, and
    when its validity was last read, so that a request refused before its key is looked up
    (over a limit) is a revoked key's for at most CONFIRM_SECONDS (README, API keys). Only
    valid keys are held (at most MAX_HELD, the least recently confirmed dropped first)."""

    CONFIRM_SECONDS = 1.0
    MAX_HELD = 10_000

    def __init__(self, clock: Callable[[], float] = monotonic) -> None:
        self._clock = clock
        self._known: dict[str, tuple[uuid.UUID, float]] = {}

    def school_of(self, digest: str) -> uuid.UUID | None:
        known = self._known.get(digest)
        return None if known is None else known[0]

    def confirmed(self, digest: str) -> bool:
        """Whether the key's validity was read less than CONFIRM_SECONDS ago."""
        known = self._known.get(digest)
        return known is not None and self._clock() - known[1] < self.CONFIRM_SECONDS

    def confirm(self, digest: str, school_id: uuid.UUID) -> None:
        """The key was just found valid, for this school."""
        self._known.pop(digest, None)
        if len(self._known) >= self.MAX_HELD:
            del self._known[next(iter(self._known))]
        self._known[digest] = (school_id, self._clock())

    def forget(self, digest: str) -> None:
        self._known.pop(digest, None)


class LastUsed:
    """Keeps `api_keys.last_used_at` to the minute without a write per request, nor one on
    any request's way: a request notes its key's minute here (`note`, in memory, once the
    key was found valid: a token that is not one notes nothing); `flush` writes the minutes
    noted since, every key in one UPDATE that leaves a row already at its minute (or
    revoked) alone. `app.workers.last_used` flushes every FLUSH_SECONDS and when the
    process stops; a list of keys flushes first, so it shows its own request's use."""

    FLUSH_SECONDS = 5.0
    MAX_HELD = 10_000

    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self._clock = clock
        self._written: dict[uuid.UUID, datetime] = {}  # the minute noted last, per key
        self._pending: dict[uuid.UUID, datetime] = {}  # noted, not written yet

    def __len__(self) -> int:
        return len(self._written)

    def note(self, key_id: uuid.UUID) -> None:
        """A use of the valid key, now."""
        minute = self._clock().replace(second=0, microsecond=0)
        if self._written.get(key_id) == minute:
            return
        if len(self._written) >= self.MAX_HELD:
            self._written = {k: m for k, m in self._written.items() if m == minute}
        self._written[key_id] = minute
        self._pending[key_id] = minute

    async def flush(self, sessionmaker: async_sessionmaker[AsyncSession]) -> int:
        """Write the minutes noted since the last flush, in a transaction of their own; how
        many keys. Those not written (the database failed) are kept for the next."""
        if not self._pending:
            return 0
        async with unit_of_work(sessionmaker) as session:
            return await self.flush_in(session)

    async def flush_in(self, session: AsyncSession) -> int:
        """As `flush`, in the caller's transaction (a list of keys: it shows them)."""
        taken, self._pending = self._pending, {}
        if not taken:
            return 0
        try:
            await repository.mark_keys_used(session, taken)
        except BaseException:
            for key_id, minute in taken.items():
                self._pending.setdefault(key_id, minute)
            raise
        return len(taken)


async def update(session: AsyncSession, school: School, changes: schemas.SchoolSettings) -> School:
    _apply(school, changes)
    await session.flush()
    await session.refresh(school)
    return school


async def set_provider(
    session: AsyncSession,
    school: School,
    data: schemas.TwilioAccount | schemas.TelnyxAccount | schemas.SimulatorAccount,
    box: SecretBox,
) -> ProviderAccount:
    """Replace the school's provider account; secrets are sealed with SECRET_KEY."""
    account = await repository.provider_account(session, school.id)
    if account is None:
        account = ProviderAccount(school_id=school.id)
        session.add(account)
    account.provider = data.provider
    account.max_messages_per_second = data.max_messages_per_second
    account.deferred_until = None  # turns promised at the old rate or sender are void
    account.account_sid = account.from_number = account.messaging_service_sid = None
    account.messaging_profile_id = account.api_base = account.public_key = None
    account.credentials = None
    if isinstance(data, schemas.TwilioAccount):
        account.account_sid = data.account_sid
        account.from_number = data.from_number
        account.messaging_service_sid = data.messaging_service_sid
        account.api_base = data.api_base
        account.credentials = box.seal({"auth_token": data.auth_token})
    elif isinstance(data, schemas.TelnyxAccount):
        account.from_number = data.from_number
        account.messaging_profile_id = data.messaging_profile_id
        account.api_base = data.api_base
        account.public_key = data.public_key
        account.credentials = box.seal({"api_key": data.api_key})
    await session.flush()
    await session.refresh(account)
    return account


async def get_provider(session: AsyncSession, school: School) -> ProviderAccount:
    account = await repository.provider_account(session, school.id)
    if account is None:
        raise NotFound("This school has no provider account; messages go to the simulator.")
    return account


async def get_many(session: AsyncSession, school_ids: Collection[uuid.UUID]) -> list[School]:
    return await repository.get_many(session, school_ids)


async def accounts_by_sid(
    session: AsyncSession, provider: str, account_sid: str
) -> list[ProviderAccount]:
    """Every school's account with this provider account id (schools may share one)."""
    return await repository.provider_accounts_by_sid(session, provider, account_sid)


async def accounts_with_public_key(session: AsyncSession, provider: str) -> list[ProviderAccount]:
    return await repository.provider_accounts_with_public_key(session, provider)


def account_secret(account: ProviderAccount, box: SecretBox, name: str) -> str | None:
    """One sealed credential of the account (`auth_token`, `api_key`), None when absent."""
    if not account.credentials:
        return None
    value = box.open(account.credentials).get(name)
    return value if isinstance(value, str) and value else None
