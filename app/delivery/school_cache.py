"""Schools and their provider accounts as the worker last loaded them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from app.delivery import sql
from app.models import ProviderAccount, School

Versions = tuple[datetime, datetime | None]  # the school's `updated_at`, its account's


class Known(NamedTuple):
    """A school and its account as loaded, and their versions then."""

    versions: Versions
    school: School
    account: ProviderAccount | None


@dataclass
class SchoolCache:
    """Schools and their provider accounts as of their last change: the claim reads their
    versions (`updated_at`) with its rows, and loads a school again only when it changed
    (a claim a few times a second, a school changed now and then)."""

    known: dict[uuid.UUID, Known] = field(default_factory=dict)

    async def get(
        self, session: AsyncSession, versions: dict[uuid.UUID, Versions]
    ) -> tuple[dict[uuid.UUID, School], dict[uuid.UUID, ProviderAccount]]:
        changed = [
            i
            for i, v in versions.items()
            if (known := self.known.get(i)) is None or known.versions != v
        ]
        if changed:
            for row in await session.execute(sql.SCHOOLS, {"ids": changed}):
                school, account = row.School, row.ProviderAccount
                version = (school.updated_at, account.updated_at if account else None)
                # Out of the session: kept as loaded, whatever becomes of its transaction.
                session.expunge(school)
                if account is not None:
                    session.expunge(account)
                self.known[school.id] = Known(version, school, account)
        schools = {i: self.known[i].school for i in versions}
        accounts = {i: a for i in versions if (a := self.known[i].account) is not None}
        return schools, accounts
