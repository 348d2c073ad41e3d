"""What a cycle passes from step to step: a claim's decisions (`Claim`), each claimed
recipient's hand-over (`Job`), and what became of it (`Handover`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.delivery.pacing import Slots
from app.delivery.sql import RecipientRow
from app.models import ProviderAccount, School
from app.models.attempt import UNKNOWN, UNRESOLVED
from app.providers.base import OutboundMessage, Provider, SendResult
from app.sending import status as rules
from app.sending.state import apply_change

__all__ = ["UNKNOWN", "UNRESOLVED", "Claim", "Handover", "Job", "Sender"]


@dataclass(slots=True, eq=False)
class Job:
    """One claimed recipient's hand-over."""

    recipient_id: int
    campaign_id: uuid.UUID
    # The attempt this hand-over is recorded into, named in its status callback URL:
    # taken at the claim for a new one (its row written by the record), or an earlier
    # attempt whose outcome is unknown, being recovered (`recorded`: its row exists).
    attempt_id: int
    # The attempt's provider as stored (a recovery keeps its first hand-over's).
    attempt_provider: str
    provider: Provider
    message: OutboundMessage
    # When the hand-over began: the recipient's `claimed_at`, the new attempt's created_at.
    started: datetime
    # The claim that holds it (the recipient's `claimed_by` while it is still its claim's).
    claim: uuid.UUID
    # Earliest moment the provider's rate allows this send.
    not_before: datetime | None = None
    # The hand-over, begun at `started`, may have gone out already: ask before sending.
    recovering: bool = False
    # The attempt's row exists already (an earlier attempt whose answer was lost).
    recorded: bool = False
    # The message id a receipt naming the attempt brought, found when it was claimed for a
    # recovery: it went out as that message (no need to ask the provider).
    named_message: str | None = None
    # Ask only, never send: its campaign or recipient was stopped meanwhile, or its retry
    # age ran out (then, if the message did not go out, it fails with `expire_reason`).
    recover_only: bool = False
    expire_reason: str | None = None
    # The account's slots in this claim, which pace its sends (with not_before).
    slots: Slots | None = None
    # Message ids the school's other attempts to this number hold: a recovery that finds
    # one of them found another campaign's message (same text), not this attempt's.
    taken: frozenset[str] = frozenset()
    # When the school's sending window closes (its Sender's `closes`; None: no window).
    window_closes: datetime | None = None


@dataclass
class Handover:
    job: Job
    result: SendResult | None  # None: released unsent (shutdown, or stopped meanwhile)
    expired: bool = False  # (with None) not sent because its retry age ran out
    # (with None) a recovery whose provider could not tell whether the hand-over went out:
    # nothing sent, asked again later (`app.delivery.recover.ask_again_at`)
    undecided: bool = False


@dataclass(slots=True)
class Sender:
    """A school's part in a claim, found once for all its recipients."""

    school: School
    opening: datetime  # of its sending window: now, or when it next opens
    # When the window open at the claim closes (None: no window): each send's message
    # may wait at the provider only until then (`validity_seconds`, reckoned at the send).
    closes: datetime | None
    account: ProviderAccount | None
    provider: Provider
    # Its provider's status callback URL naming an attempt (`app.providers.callbacks`),
    # by the attempt's id; None for a provider without callbacks (the simulator).
    callback: Callable[[int], str] | None


@dataclass
class Claim:
    """What one claim decided, before it is written."""

    now: datetime
    lease_until: datetime
    id: uuid.UUID = field(default_factory=uuid.uuid4)  # each leased row's `claimed_by`
    senders: dict[uuid.UUID, Sender] = field(default_factory=dict)  # by school
    # Accounts under a rate (locked): their next free send slot and last promised turn as
    # stored, and the slots this claim takes from them.
    next_send: dict[uuid.UUID, tuple[datetime | None, datetime | None]] = field(
        default_factory=dict
    )
    slots: dict[uuid.UUID, Slots] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)
    # Rows leased for a hand-over into `leasing` (one state for all: `sql.write_claim`), and
    # any other row changed (written back whole).
    leasing: rules.Change | None = None
    leased: list[RecipientRow] = field(default_factory=list)
    changed: list[RecipientRow] = field(default_factory=list)
    expired: set[uuid.UUID] = field(default_factory=set)  # campaigns with a retry expired
    # Each campaign's body, parsed once for all its recipients in the claim.
    templates: dict[uuid.UUID, Callable[[Mapping[str, Any]], str]] = field(default_factory=dict)

    def lease(self, row: RecipientRow, change: rules.Change) -> None:
        """Lease the row for a hand-over, into the state the status rules gave."""
        self.leasing = self.leasing or change
        if change == self.leasing:
            self.leased.append(row)  # its attempts, first attempt and claimed_at set
        else:  # (the rules give every hand-over one state: never so far)
            apply_change(row, change, now=self.now)
            row.next_attempt_at = self.lease_until
            row.claimed_by = self.id
            self.changed.append(row)

    @property
    def dealt_with(self) -> int:
        """Due recipients this claim leased or settled (deferred, moved, stopped)."""
        return len(self.leased) + len(self.changed)
