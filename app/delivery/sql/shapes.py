"""The row shapes the worker reads and writes (`app.delivery.sql`): a shape's fields are
its columns' names, and their annotations give the writes their SQL types (`columns`)."""

from __future__ import annotations

import operator
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Row

from app.models import Campaign, CampaignStatus, Recipient

# A result row of the statements below, read by column name.
AnyRow = Row[*tuple[Any, ...]]


@dataclass(slots=True, eq=False)
class RecipientRow:
    """A locked recipient's columns that the worker reads and writes: changed in place,
    written back by `write_claim` or `write_record`. Its fields are the columns' names."""

    id: int
    campaign_id: uuid.UUID
    school_id: uuid.UUID
    phone: str
    status: str
    failed_reason: str | None
    failed_definition: int
    provider_error_code: str | None
    delivery_confirmed: bool | None
    attempts: int
    next_attempt_at: datetime | None
    first_attempt_at: datetime | None
    claimed_at: datetime | None
    claimed_by: uuid.UUID | None
    claimed_attempt_id: int | None
    updated_at: datetime
    campaign_status: CampaignStatus

    @classmethod
    def of(cls, row: AnyRow) -> RecipientRow:
        """The recipient of a result row that selected `RECIPIENT_COLUMNS` (by name)."""
        return cls(*(getattr(row, name) for name in _RECIPIENT_FIELDS))

    @classmethod
    def reader(cls, keys: Iterable[str]) -> Callable[[AnyRow], RecipientRow]:
        """`of` for every row of a result whose columns are `keys` (`Result.keys()`), each
        column found by its name once for them all rather than once a row: hundreds of
        rows a batch, and a row's attribute costs as much as the rest of `of`."""
        index = {key: i for i, key in enumerate(keys)}
        columns = operator.itemgetter(*(index[name] for name in _RECIPIENT_FIELDS))
        return lambda row: cls(*columns(row))


_RECIPIENT_FIELDS = tuple(f.name for f in fields(RecipientRow))
# `RecipientRow`'s columns, named as its fields: the recipient's own, and its campaign's status.
RECIPIENT_COLUMNS = tuple(
    Campaign.status.label(name) if name == "campaign_status" else getattr(Recipient, name)
    for name in _RECIPIENT_FIELDS
)


@dataclass(frozen=True, slots=True)
class Previous:
    """A recipient's latest attempt, as the claim needs it."""

    id: int
    provider: str
    status: str
    created_at: datetime

    @classmethod
    def reader(cls, keys: Iterable[str]) -> Callable[[AnyRow], Previous | None]:
        """The latest attempt in each claimed row of a result whose columns are `keys`
        (`CLAIM`: its columns `previous_` + field), if the recipient has one; found by name
        once for all rows, as `RecipientRow.reader`."""
        index = {key: i for i, key in enumerate(keys)}
        first = index["previous_id"]
        columns = operator.itemgetter(*(index[f"previous_{name}"] for name in _PREVIOUS_FIELDS))
        return lambda row: None if row[first] is None else cls(*columns(row))


_PREVIOUS_FIELDS = tuple(f.name for f in fields(Previous))


class Claimed(NamedTuple):
    """A claimed row (`CLAIM`), read: the recipient, its latest attempt, and what the
    hand-over's message and the school cache need (the fields after `previous` are the
    columns of the same names)."""

    recipient: RecipientRow
    previous: Previous | None
    body: str  # its campaign's
    first_name: str | None
    last_name: str | None
    fields: dict[str, Any]
    # An id from the attempts' sequence, for a new hand-over's attempt.
    new_attempt_id: int
    # Its school's and provider account's `updated_at` (`app.delivery.school_cache`).
    school_version: datetime
    account_version: datetime | None

    @classmethod
    def reader(cls, keys: Iterable[str]) -> Callable[[AnyRow], Claimed]:
        """`Claimed` for every row of a result whose columns are `keys`, each column found
        by its name once for them all (`RecipientRow.reader`): a claim reads hundreds."""
        keys = list(keys)
        index = {key: i for i, key in enumerate(keys)}
        recipient, previous = RecipientRow.reader(keys), Previous.reader(keys)
        rest = operator.itemgetter(*(index[name] for name in cls._fields[2:]))
        make = cls._make
        return lambda row: make((recipient(row), previous(row), *rest(row)))


@dataclass(frozen=True, slots=True)
class SendSlots:
    """An account's next free send slot and last promised turn, as a claim leaves them."""

    school_id: uuid.UUID
    next_send_at: datetime
    deferred_until: datetime | None


@dataclass(frozen=True, slots=True)
class NewAttempt:
    """An attempt row the record inserts, under the id its hand-over was claimed with (the
    one its callback URL names)."""

    id: int
    recipient_id: int
    provider: str
    provider_message_id: str | None
    status: str
    error_code: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RecoveredAttempt:
    """What the record learnt of an attempt whose outcome was unknown (its id known)."""

    id: int
    provider_message_id: str | None
    status: str
    failed: bool
    error_code: str | None


@dataclass(slots=True, eq=False)
class AttemptRow:
    """An attempt a batch's receipts are about: changed in place, written back by
    `write_applied` if a receipt moved it. Its fields are the columns' names."""

    id: int
    status: str
    error_code: str | None
    # Null while the create call's answer is lost: a receipt naming the attempt teaches it.
    provider_message_id: str | None


# A field's annotation, as written (`from __future__ import annotations`), and its SQL type.
_SQL_TYPES = {
    "int": "bigint",
    "str": "text",
    "bool": "boolean",
    "datetime": "timestamptz",
    "uuid.UUID": "uuid",
}


def columns(shape: type, *names: str) -> dict[str, str]:
    """A row shape's columns (all its fields, or those `names`, in that order) with their
    SQL types: what `writes.unnest` and `writes.arrays` take."""
    types = {f.name: str(f.type).removesuffix(" | None") for f in fields(shape)}
    return {name: _SQL_TYPES[types[name]] for name in names or types}
