"""Opt-outs: a number gets nothing from the school until it opts back in (README, Webhooks)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.campaigns import service as campaigns
from app.errors import NotFound, Unprocessable
from app.kit.pagination import decode_cursor, page_of, text_key
from app.kit.phones import InvalidPhone, parse_phone
from app.models import OptOut, OptOutSource, School
from app.opt_outs import keywords, repository
from app.providers.base import InboundMessage
from app.schools import service as schools
from app.sending import status as rules
from app.sending.locks import hold_back_sends
from app.sending.state import apply_change, state_of

log = logging.getLogger(__name__)


def normalize(school: School, raw: str, where: str = "body") -> str:
    """The number in E.164, or a 422 naming the `phone` of the body (or of the path)."""
    try:
        return parse_phone(raw, school.default_region).e164
    except InvalidPhone as exc:
        detail = f"{raw!r} is {exc}."
        error = {"loc": [where, "phone"], "msg": detail, "type": "phone_invalid"}
        raise Unprocessable(detail, extra={"errors": [error]}) from exc


class Addressee(Protocol):
    """Whom a message went to: the ORM recipient, or the delivery engine's plain row."""

    @property
    def school_id(self) -> uuid.UUID: ...
    @property
    def phone(self) -> str: ...
    @property
    def campaign_id(self) -> uuid.UUID: ...


async def opted_out_at_provider(session: AsyncSession, addressees: Iterable[Addressee]) -> None:
    """The provider says these numbers opted out (Twilio 21610, at create time or in a
    receipt): recorded as any opt-out, source `provider`, naming the campaign. The caller
    (the record, the receipt applier) holds their waiting recipients' locks already
    (`app.delivery.sql.record`, `sql.LOCK_APPLIED`), so this takes no lock out of order."""
    await _opt_out(
        session,
        [
            OptOutRequest(a.school_id, a.phone, OptOutSource.provider, None, a.campaign_id)
            for a in addressees
        ],
    )


@dataclass(frozen=True, slots=True)
class OptOutRequest:
    """One number to opt out of one school, and how it asked."""

    school_id: uuid.UUID
    phone: str
    source: OptOutSource
    keyword: str | None = None
    campaign_id: uuid.UUID | None = None


async def opt_out(
    session: AsyncSession,
    school_id: uuid.UUID,
    phone: str,
    *,
    source: OptOutSource,
    keyword: str | None = None,
    campaign_id: uuid.UUID | None = None,
) -> tuple[OptOut, bool]:
    """Record the opt-out (kept once, first record wins) and cancel the number's waiting
    messages in every campaign of the school (→ failed, opted_out)."""
    [done] = await _opt_out(
        session, [OptOutRequest(school_id, phone, source, keyword, campaign_id)]
    )
    return done


async def _opt_out(
    session: AsyncSession, requests: list[OptOutRequest]
) -> list[tuple[OptOut, bool]]:
    """Opt-outs of several numbers at once, taking each step of the lock order
    (`app.sending.locks`) once for all of them: the send locks of the campaigns where they
    wait, their waiting recipients, the opt-outs, the campaigns completed. Each request's
    record and whether it is new, in the requests' order (the first of a repeated number
    is the one recorded)."""
    if not requests:
        return []  # (a batch with no provider opt-out: no query)
    first = {(r.school_id, r.phone): r for r in reversed(requests)}
    numbers = sorted(first)
    if any(r.source is not OptOutSource.provider for r in first.values()):
        # The numbers' sends already claimed do not start once this commits. A provider's
        # 21610 needs none: the provider refuses those sends itself.
        await hold_back_sends(session, await repository.waiting_campaigns(session, numbers))
    waiting = await repository.waiting_recipients(session, numbers)
    recorded = {}
    for number in numbers:
        r = first[number]
        recorded[number] = await repository.add(
            session, r.school_id, r.phone, r.source.value, r.keyword, r.campaign_id
        )
    touched: set[uuid.UUID] = set()
    for recipient, campaign in waiting:
        change = rules.on_opt_out(state_of(recipient), campaign.status)
        if change is not None:
            apply_change(recipient, change)  # (a hand-over in flight keeps its lease)
            touched.add(campaign.id)
    await session.flush()
    await campaigns.complete_finished(session, touched)
    return [recorded[r.school_id, r.phone] for r in requests]


async def opt_in(session: AsyncSession, school: School, raw_phone: str) -> str:
    """Remove the number from the school's opt-out list (staff action); the number, E.164."""
    phone = normalize(school, raw_phone, where="path")
    if not await repository.remove(session, school.id, phone):
        raise NotFound(f"{phone} is not on the opt-out list.")
    return phone


async def opt_in_if_listed(session: AsyncSession, school_id: uuid.UUID, phone: str) -> bool:
    """Take an E.164 number off the school's opt-out list if it is on it (an opt-in keyword
    from the contact): no error when it is not. Whether it was."""
    return await repository.remove(session, school_id, phone)


async def on_inbound(
    session: AsyncSession, school_ids: Sequence[uuid.UUID], message: InboundMessage
) -> keywords.Keyword | None:
    """A message a contact sent to the schools' number (README, Webhooks): an opt-out keyword
    opts the sender out of each school (source `keyword`, cancelling their waiting messages),
    an opt-in keyword takes them off each school's list; anything else changes nothing. The
    provider's own classification (Twilio's OptOutType) wins over the words
    (`keywords.classify`).

    The keyword found, or None. A sender that is not a phone number (short code, alphanumeric
    sender) cannot be on a list and is ignored.
    """
    sender = message.from_number
    keyword = keywords.classify(message.body, message.opt_out_type)
    if keyword is None:
        return None
    requests: list[OptOutRequest] = []
    for school in await schools.get_many(session, school_ids):
        try:
            phone = parse_phone(sender, school.default_region).e164
        except InvalidPhone:
            log.info("keyword %s from %r ignored: not a phone number", keyword.word, sender)
            continue
        if keyword.action is keywords.Action.opt_out:
            latest = await repository.latest_campaign_id(session, school.id, phone)
            requests.append(
                OptOutRequest(school.id, phone, OptOutSource.keyword, keyword.word, latest)
            )
        else:
            await opt_in_if_listed(session, school.id, phone)
    if requests:  # every school's at once, in the lock order
        await _opt_out(session, requests)
    return keyword


async def is_opted_out(session: AsyncSession, school_id: uuid.UUID, phone: str) -> bool:
    return await repository.get(session, school_id, phone) is not None


async def list_page(
    session: AsyncSession, school: School, cursor: str | None, limit: int
) -> tuple[list[OptOut], str | None]:
    after = decode_cursor(cursor, text_key)
    rows = await repository.page(session, school.id, after[0] if after else None, limit)
    return page_of(rows, limit, lambda o: (o.phone,))
