"""Contact lists: creation, listing, deletion, and importing contacts row by row."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from app import metrics
from app.contact_lists import repository, schemas
from app.contact_lists.parsing import ContactRow
from app.contact_lists.repository import ListSummary
from app.errors import Conflict, NotFound
from app.kit.pagination import decode_cursor, int_key, page_of, time_key, uuid_key
from app.kit.phones import InvalidPhone, parse_phone
from app.models import Campaign, Contact, ContactList, School

ALREADY_IN_LIST = "already in this list"
# Rows judged (in a thread) while the previous batch is written.
IMPORT_BATCH = 10_000
# A rejected row echoes its phone; a pasted paragraph should not fill the answer.
ECHO_MAX = 64


def _not_found(list_id: uuid.UUID) -> NotFound:
    return NotFound(f"No contact list with id {list_id}.")


async def create(
    session: AsyncSession, school: School, data: schemas.ContactListCreate
) -> ListSummary:
    """A new, empty list."""
    contact_list = ContactList(id=uuid.uuid4(), school_id=school.id, name=data.name)
    session.add(contact_list)
    await session.flush()
    return await get(session, school, contact_list.id)


async def get(session: AsyncSession, school: School, list_id: uuid.UUID) -> ListSummary:
    """The school's list with its contact count; 404 for any other school's list."""
    found = await repository.summary(session, school.id, list_id)
    if found is None:
        raise _not_found(list_id)
    return found


async def list_page(
    session: AsyncSession, school: School, limit: int, cursor: str | None
) -> tuple[list[ListSummary], str | None]:
    """One page of the school's lists, newest first, and the cursor of the next page."""
    before: tuple[datetime, uuid.UUID] | None = None
    values = decode_cursor(cursor, time_key, uuid_key)
    if values is not None:
        created_at, list_id = values
        before = (created_at, list_id)
    rows = await repository.summaries(session, school.id, limit + 1, before)
    return page_of(rows, limit, lambda row: (row.created_at.isoformat(), str(row.id)))


async def delete(session: AsyncSession, school: School, list_id: uuid.UUID) -> None:
    """Delete the list and its contacts; 409 while any campaign is built on it."""
    # Locked first: a campaign being created on the list (it takes a key-share lock on
    # the row) either commits before this check sees it, or waits until the list is gone.
    contact_list = await repository.lock(session, school.id, list_id)
    if contact_list is None:
        raise _not_found(list_id)
    campaigns = await repository.campaigns_using(session, school.id, list_id)
    if campaigns:
        raise _in_use(campaigns)
    try:
        await repository.delete(session, contact_list)
    except IntegrityError as exc:  # a campaign the check above could not see
        raise Conflict("This list is used by a campaign, so it cannot be deleted.") from exc


def _in_use(campaigns: list[Campaign]) -> Conflict:
    count = len(campaigns)
    names = ", ".join(f"“{campaign.name}”" for campaign in campaigns[:3])
    if count > 3:
        names += f" and {count - 3} more"
    noun = "campaign uses" if count == 1 else "campaigns use"
    return Conflict(
        f"{count} {noun} this list ({names}), so it cannot be deleted.",
        extra={
            "campaign_count": count,
            "campaigns": [
                {"id": str(campaign.id), "name": campaign.name, "status": campaign.status}
                for campaign in campaigns[:100]
            ],
        },
    )


@dataclass
class Batch:
    """Rows that passed the per-row checks, as columns ready for one bulk insert."""

    rows: list[int] = field(default_factory=list)
    raw_phones: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    country_codes: list[int] = field(default_factory=list)
    first_names: list[str | None] = field(default_factory=list)
    last_names: list[str | None] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)


def _rejected(row: int, phone: str, reason: str) -> schemas.RejectedRow:
    if len(phone) > ECHO_MAX:
        phone = phone[: ECHO_MAX - 1] + "…"
    return schemas.RejectedRow(row=row, phone=phone, reason=reason)


def _too_long(row: ContactRow) -> str | None:
    for label, value in (("first name", row.first_name), ("last name", row.last_name)):
        if value is not None and len(value) > schemas.NAME_MAX:
            return f"{label} is longer than {schemas.NAME_MAX} characters"
    return None


class RowJudge:
    """Judges one upload's rows, batch after batch: parses each phone (national numbers in
    the school's region) and rejects repeats within the upload. Numbers already in the
    list are found by the insert. Pure CPU work, safe to run in a thread."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.first_seen: dict[str, int] = {}
        self.rejected: list[schemas.RejectedRow] = []

    def batch(self, rows: list[ContactRow]) -> Batch:
        batch = Batch()
        for row in rows:
            try:
                phone = parse_phone(row.phone, self.region)
            except InvalidPhone as exc:
                self.rejected.append(_rejected(row.row, row.phone, str(exc)))
                continue
            earlier = self.first_seen.get(phone.e164)
            reason = f"same number as row {earlier} of this upload" if earlier else _too_long(row)
            if reason is not None:
                self.rejected.append(_rejected(row.row, row.phone, reason))
                continue
            self.first_seen[phone.e164] = row.row
            batch.rows.append(row.row)
            batch.raw_phones.append(row.phone)
            batch.phones.append(phone.e164)
            batch.country_codes.append(phone.country_code)
            batch.first_names.append(row.first_name)
            batch.last_names.append(row.last_name)
            batch.fields.append(json.dumps(row.fields) if row.fields else "{}")
        return batch


async def import_contacts(
    session: AsyncSession, school: School, list_id: uuid.UUID, rows: list[ContactRow]
) -> schemas.ImportResult:
    """Import rows into the list, judging each: a row whose phone is missing, not a phone
    number, not valid, repeated in the upload, or already in the list is rejected with its
    row number and reason; the others are stored as E.164. Numbers from countries outside
    `allowed_country_codes` are imported (they fail at launch)."""
    # Locked for the whole import, so concurrent imports judge "already in this list" in
    # turn rather than racing (a number lost to a writer that did not lock still reads so).
    if await repository.lock(session, school.id, list_id) is None:
        raise _not_found(list_id)
    judge = RowJudge(school.default_region)
    already: list[schemas.RejectedRow] = []
    imported = 0

    async def insert(batch: Batch) -> None:
        nonlocal imported
        if not batch.phones:
            return
        new = await repository.insert_contacts(
            session,
            list_id,
            phones=batch.phones,
            country_codes=batch.country_codes,
            first_names=batch.first_names,
            last_names=batch.last_names,
            fields=batch.fields,
        )
        imported += len(new)
        if len(new) < len(batch.phones):
            already.extend(
                _rejected(row, raw, ALREADY_IN_LIST)
                for row, raw, phone in zip(batch.rows, batch.raw_phones, batch.phones, strict=True)
                if phone not in new
            )

    # Phones take ~30 µs each to parse: that runs in a thread (other requests keep being
    # served) while PostgreSQL writes the previous batch, the two overlapping on two cores.
    chunks = [rows[at : at + IMPORT_BATCH] for at in range(0, len(rows), IMPORT_BATCH)]
    batch = await run_in_threadpool(judge.batch, chunks[0]) if chunks else Batch()
    for chunk in chunks[1:]:
        writing = asyncio.create_task(insert(batch))
        try:
            batch = await run_in_threadpool(judge.batch, chunk)
        finally:
            await writing  # the session is never used by two operations at once
    await insert(batch)

    rejected = sorted(judge.rejected + already, key=lambda item: item.row)
    metrics.contacts_imported.labels(result="imported").inc(imported)
    metrics.contacts_imported.labels(result="rejected").inc(len(rejected))
    return schemas.ImportResult(imported=imported, rejected=rejected)


async def contacts_page(
    session: AsyncSession, school: School, list_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[Contact], str | None]:
    """One page of the list's contacts in import order, and the cursor of the next page."""
    values = decode_cursor(cursor, int_key)
    after: int | None = values[0] if values else None
    if await repository.get(session, school.id, list_id) is None:
        raise _not_found(list_id)
    rows = await repository.contacts(session, list_id, limit + 1, after)
    return page_of(rows, limit, lambda contact: (contact.id,))
