"""The recipient status rules: one pure module, no I/O.

Every path that changes a recipient — launch, the delivery loop, webhooks, staff actions —
asks this module what the new state is instead of deciding for itself.

Two levels of order:
- an attempt's provider phase only moves forward (queued < sent < final), so a late or
  duplicated receipt for an attempt is recognised as such;
- a recipient follows its latest attempt, except that `delivered` from any attempt wins
  (late delivered cancels the pending retry), and an archived campaign freezes it.

A delivered recipient says whether the carrier confirmed it (`State.delivery_confirmed`,
README, Webhooks): `True` for a confirmed delivery (Twilio `delivered`/`read`, Telnyx
`delivered`), `False` for one taken as delivered without confirmation (a Telnyx
`delivery_unconfirmed` receipt; a message still `sent` UNCONFIRMED_AFTER_SECONDS after
its hand-over, `on_receipt_overdue`), `None` in every other status. Delivered never goes
back, and the confirmation only goes up: a confirmed delivery that comes after an
unconfirmed one makes it confirmed; an unconfirmed one (or anything else) after a
confirmed one changes nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.models.campaign import CampaignStatus
from app.sending.outcomes import Classification, Outcome


class Status(enum.StrEnum):
    queued = "queued"
    pending = "pending"
    scheduled = "scheduled"
    delivered = "delivered"
    failed = "failed"


class Group(enum.StrEnum):
    in_progress = "in_progress"
    delivered = "delivered"
    failed = "failed"


LABELS: dict[Status, str] = {
    Status.queued: "Still in Queue",
    Status.pending: "Pending",
    Status.scheduled: "Scheduled",
    Status.delivered: "Delivered",
    Status.failed: "Failed",
}
GROUPS: dict[Status, Group] = {
    Status.queued: Group.in_progress,
    Status.pending: Group.in_progress,
    Status.scheduled: Group.in_progress,
    Status.delivered: Group.delivered,
    Status.failed: Group.failed,
}
IN_PROGRESS: frozenset[Status] = frozenset(s for s, g in GROUPS.items() if g is Group.in_progress)
FINAL: frozenset[Status] = frozenset({Status.delivered, Status.failed})
# Waiting for an attempt of ours (not yet with the provider): opt-outs cancel these.
WAITING: frozenset[Status] = frozenset({Status.queued, Status.scheduled})
NOT_RESENDABLE = ("unreachable_number", "opted_out", "invalid_number", "international_number")


class Phase(enum.IntEnum):
    """Where one attempt's message is at its provider; only ever moves up."""

    queued = 0  # queued / accepted / sending at the provider
    sent = 1  # handed to the carrier
    failed = 2  # failed / undelivered / expired
    # Final: delivered as far as anyone will say, without the carrier's confirmation (Telnyx
    # `delivery_unconfirmed`). A delivery, so it beats a failure for the same attempt.
    unconfirmed = 3
    delivered = 4  # final and best: the carrier confirmed it; beats everything else


PROVIDER_PHASES: dict[str, Phase] = {
    # Twilio
    "accepted": Phase.queued,
    "scheduled": Phase.queued,
    "queued": Phase.queued,
    "sending": Phase.queued,
    "sent": Phase.sent,
    "delivered": Phase.delivered,
    "read": Phase.delivered,
    "undelivered": Phase.failed,
    "failed": Phase.failed,
    "canceled": Phase.failed,
    # Telnyx (docs/providers.md §2.2): `read`, `delivered` as Twilio's; `expired` is a
    # failure (a soft `sending_error`, docs/providers.md §2.2); `delivery_unconfirmed` is not.
    "sending_failed": Phase.failed,
    "delivery_failed": Phase.failed,
    "expired": Phase.failed,
    "delivery_unconfirmed": Phase.unconfirmed,
}
# Phases that make a recipient delivered, with or without the carrier's confirmation.
DELIVERED_PHASES: frozenset[Phase] = frozenset({Phase.unconfirmed, Phase.delivered})


def phase_of(provider_status: str) -> Phase | None:
    """The phase a provider status word means, or None for words we do not know."""
    return PROVIDER_PHASES.get(provider_status.lower())


@dataclass(frozen=True, slots=True)
class State:
    """A recipient's visible status."""

    status: Status
    failed_reason: str | None = None
    provider_error_code: str | None = None
    # Index of the reason's definition that fits the provider error.
    definition: int = 0
    # Delivered only: whether the carrier confirmed the delivery; None in any other status.
    delivery_confirmed: bool | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """The state a recipient moves to, and what happens to its next attempt."""

    state: State
    # True: schedule the next attempt (backoff); False: no attempt is due any more.
    retry: bool = False


def launch_state(*, opted_out: bool, country_allowed: bool) -> State:
    """A recipient's first state when its campaign launches."""
    if opted_out:
        return State(Status.failed, "opted_out")
    if not country_allowed:
        return State(Status.failed, "international_number")
    return State(Status.queued)


def _failure(
    campaign: CampaignStatus,
    classification: Classification,
    code: str | None,
    *,
    retry_allowed: bool,
) -> Change:
    """A soft bounce is retried only while the campaign is active and the policy allows;
    otherwise it is final with its reason (a closed campaign sends nothing more)."""
    if classification.soft and retry_allowed and campaign is CampaignStatus.active:
        return Change(State(Status.scheduled, "reattempting", code), retry=True)
    return Change(
        State(Status.failed, classification.reason, code, classification.definition_index)
    )


def _frozen(current: State, campaign: CampaignStatus) -> bool:
    return campaign is CampaignStatus.archived or current.status is Status.delivered


# The two delivered states: one object each, not one per recipient.
_DELIVERED = Change(State(Status.delivered, delivery_confirmed=True))
_DELIVERED_UNCONFIRMED = Change(State(Status.delivered, delivery_confirmed=False))


def _delivered(current: State, *, confirmed: bool) -> Change | None:
    """A delivery (the campaign not archived): it wins over every other status, from any
    attempt (a retry due is cancelled). Once delivered, only a confirmation changes the
    recipient: an unconfirmed delivery becomes confirmed, never the other way."""
    if current.status is Status.delivered and (current.delivery_confirmed or not confirmed):
        return None
    return _DELIVERED if confirmed else _DELIVERED_UNCONFIRMED


def on_claim(current: State, campaign: CampaignStatus) -> Change | None:
    """An attempt starts: a due recipient shows Still in Queue while it is handed over."""
    if campaign is not CampaignStatus.active or current.status not in WAITING:
        return None
    return _STILL_IN_QUEUE


_STILL_IN_QUEUE = Change(State(Status.queued))  # one object, not one per recipient claimed


def on_send_result(
    current: State,
    campaign: CampaignStatus,
    outcome: Outcome,
    classification: Classification | None,
    error_code: str | None,
    *,
    retry_allowed: bool,
) -> Change | None:
    """The provider answered the create call of the recipient's latest attempt."""
    if _frozen(current, campaign) or current.status in FINAL:
        return None  # e.g. opted out while the message was in flight
    if outcome is Outcome.accepted:
        # Never backwards: a receipt may already have made it pending.
        return None if current.status is Status.pending else Change(State(Status.queued))
    assert classification is not None, "a failed send carries its classification"
    return _failure(campaign, classification, error_code, retry_allowed=retry_allowed)


def advance(attempt: Phase | None, receipt: Phase) -> bool:
    """Whether a receipt moves its attempt forward (False: late or duplicated)."""
    return attempt is None or receipt > attempt


def on_receipt(
    current: State,
    campaign: CampaignStatus,
    receipt: Phase,
    classification: Classification | None,
    error_code: str | None,
    *,
    latest_attempt: bool,
    retry_allowed: bool,
) -> Change | None:
    """A receipt that moved its attempt forward (see `advance`): what the recipient becomes."""
    if campaign is CampaignStatus.archived:
        return None
    if receipt in DELIVERED_PHASES:  # wins, even for an earlier attempt
        return _delivered(current, confirmed=receipt is Phase.delivered)
    if not latest_attempt or current.status in FINAL:
        return None
    if receipt is Phase.queued:
        if current.status in (Status.queued, Status.pending):
            return None
        return Change(State(Status.queued))
    if receipt is Phase.sent:
        return Change(State(Status.pending))
    assert classification is not None, "a failure receipt carries its classification"
    return _failure(campaign, classification, error_code, retry_allowed=retry_allowed)


def on_receipt_overdue(
    current: State,
    campaign: CampaignStatus,
    attempt: Phase | None,
    handed_over_at: datetime,
    now: datetime,
    *,
    unconfirmed_after_seconds: float,
) -> Change | None:
    """No final receipt came for the recipient's latest attempt (`attempt`: its phase,
    handed over at `handed_over_at`): once the carrier has accepted the message (`sent`,
    the recipient Pending) and UNCONFIRMED_AFTER_SECONDS have passed since the hand-over,
    it is taken as delivered, unconfirmed (README, Webhooks), so the campaign can complete and
    nobody resends a message that most likely arrived. A message the carrier never
    accepted (still queued at the provider) is not: it is the reconciliation's to find.
    The attempt keeps the provider's word: a confirmed `delivered` that comes later still
    moves it, and makes the recipient's delivery confirmed (`on_receipt`)."""
    if campaign is CampaignStatus.archived or current.status is not Status.pending:
        return None
    if attempt is not Phase.sent:
        return None
    if now - handed_over_at < timedelta(seconds=unconfirmed_after_seconds):
        return None
    return _DELIVERED_UNCONFIRMED


def on_retry_expired(current: State, last_reason: str | None) -> Change | None:
    """max_retry_age_seconds passed: a scheduled recipient fails with its last reason."""
    if current.status is not Status.scheduled:
        return None
    final = last_reason if last_reason and last_reason != "reattempting" else "unknown"
    return Change(State(Status.failed, final, current.provider_error_code))


def on_opt_out(current: State, campaign: CampaignStatus) -> Change | None:
    """The number opted out: messages still waiting for an attempt are cancelled."""
    if campaign is CampaignStatus.archived or current.status not in WAITING:
        return None
    return Change(State(Status.failed, "opted_out"))


def resend_refusal(current: State, campaign: CampaignStatus) -> str | None:
    """Why a staff resend is refused, or None when it is allowed."""
    if campaign in (CampaignStatus.closed, CampaignStatus.archived):
        return f"The campaign is {campaign.value}; nothing more is sent."
    if campaign in (CampaignStatus.draft, CampaignStatus.scheduled):
        return "The campaign has not started sending yet."
    if current.status is not Status.failed:
        return f"Only failed messages can be resent; this one is {LABELS[current.status]}."
    if current.failed_reason in NOT_RESENDABLE:
        return f"Messages that failed with reason {current.failed_reason!r} cannot be resent."
    return None


def on_resend(current: State, campaign: CampaignStatus) -> Change:
    """A resend that `resend_refusal` allowed: queue a fresh attempt now."""
    assert resend_refusal(current, campaign) is None
    return Change(State(Status.queued), retry=True)


def campaign_complete(in_progress: int) -> bool:
    """Complete the moment every recipient is delivered or failed."""
    return in_progress == 0
