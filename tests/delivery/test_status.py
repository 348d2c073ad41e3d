"""The recipient status rules (`app.sending.status`), exhaustively, without a database.

Each matrix below crosses every recipient status with every campaign status and every
variant of one event, and compares the module with `expected_*`: the rules (the module's
docstring; README, Delivery and Webhooks) restated here from the text, not from the module's
code.
"""

from __future__ import annotations

import ast
import inspect
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from app.models.campaign import CampaignStatus
from app.sending import reasons, status
from app.sending.outcomes import Classification, Outcome
from app.sending.state import STATE_COLUMNS, apply_change, bulk_values, state_of, state_values
from app.sending.status import (
    Change,
    Phase,
    State,
    Status,
    advance,
    campaign_complete,
    launch_state,
    on_claim,
    on_opt_out,
    on_receipt,
    on_receipt_overdue,
    on_resend,
    on_retry_expired,
    on_send_result,
    phase_of,
    resend_refusal,
)

C = CampaignStatus
S = Status
CODE = "30450"
SOFT = Classification("blocked", soft=True)  # e.g. Twilio 30450, a soft code
HARD = Classification("unreachable_number", soft=False, definition_index=1)  # e.g. 30006

# Delivered, confirmed by the carrier or taken as delivered without a confirmation (§5.3).
CONFIRMED = State(S.delivered, delivery_confirmed=True)
UNCONFIRMED = State(S.delivered, delivery_confirmed=False)
# One recipient state per status, with what a recipient in it really carries.
STATES: tuple[State, ...] = (
    State(S.queued),
    State(S.pending),
    State(S.scheduled, "reattempting", "30001"),
    CONFIRMED,
    UNCONFIRMED,
    State(S.failed, "unknown", "30008"),
    State(S.failed, "opted_out"),
)
CAMPAIGNS = tuple(CampaignStatus)
FINAL_REASONS = tuple(r.code for r in reasons.CATALOG if r.resendable is not None)
FAILURES = {Outcome.soft: SOFT, Outcome.hard: HARD}


def case(*values: Any, id: str) -> Any:
    return pytest.param(*values, id=id)


def name(state: State) -> str:
    if state.status is S.delivered:
        return f"{state.status}/{'confirmed' if state.delivery_confirmed else 'unconfirmed'}"
    return f"{state.status}/{state.failed_reason}" if state.failed_reason else str(state.status)


# -- the rules, restated -------------------------------------------------------------------


def frozen(current: State, campaign: CampaignStatus) -> bool:
    """Archive freezes every status; delivered is final and best."""
    return campaign is C.archived or current.status is S.delivered


def failure(classification: Classification, retry: bool) -> Change:
    """Soft and retrying → scheduled/reattempting; otherwise failed with its reason
    and the definition that fits; either way the provider's error code is kept."""
    if classification.soft and retry:
        return Change(State(S.scheduled, "reattempting", CODE), retry=True)
    return Change(State(S.failed, classification.reason, CODE, classification.definition_index))


def expected_claim(current: State, campaign: CampaignStatus) -> Change | None:
    """Attempts start only on an active campaign, for a recipient waiting for one."""
    if campaign is C.active and current.status in (S.queued, S.scheduled):
        return Change(State(S.queued))
    return None


def expected_send_result(
    current: State, campaign: CampaignStatus, outcome: Outcome, retry_allowed: bool
) -> Change | None:
    if frozen(current, campaign) or current.status is S.failed:
        return None  # e.g. opted out while the message was in flight
    if outcome is Outcome.accepted:
        return None if current.status is S.pending else Change(State(S.queued))
    return failure(FAILURES[outcome], retry_allowed and campaign is C.active)


def expected_receipt(
    current: State,
    campaign: CampaignStatus,
    receipt: Phase,
    classification: Classification | None,
    latest: bool,
    retry_allowed: bool,
) -> Change | None:
    if campaign is C.archived:
        return None
    if receipt in (Phase.unconfirmed, Phase.delivered):
        # From any attempt (the retry is cancelled); once delivered, only a confirmation
        # changes it, from unconfirmed to confirmed (§5.3).
        confirmed = receipt is Phase.delivered
        if current.status is S.delivered and (current.delivery_confirmed or not confirmed):
            return None
        return Change(State(S.delivered, delivery_confirmed=confirmed))
    if current.status is S.delivered:
        return None  # final: nothing undoes a delivery
    if not latest or current.status is S.failed:
        return None  # a recipient follows its latest attempt; failed is final
    if receipt is Phase.queued:
        return None if current.status in (S.queued, S.pending) else Change(State(S.queued))
    if receipt is Phase.sent:
        return Change(State(S.pending))
    assert classification is not None
    return failure(classification, retry_allowed and campaign is C.active)


def expected_opt_out(current: State, campaign: CampaignStatus) -> Change | None:
    """Opt-out (README, Webhooks): cancels queued and scheduled messages; archive freeze wins."""
    if campaign is not C.archived and current.status in (S.queued, S.scheduled):
        return Change(State(S.failed, "opted_out"))
    return None


def expected_resend_allowed(current: State, campaign: CampaignStatus) -> bool:
    """Resend: failed, reason resendable, campaign sending (not closed or archived; a draft
    or a scheduled campaign has not started sending)."""
    return (
        campaign in (C.active, C.complete)
        and current.status is S.failed
        and current.failed_reason
        not in ("unreachable_number", "opted_out", "invalid_number", "international_number")
    )


# -- launch --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opted_out", "country_allowed", "expected"),
    [
        (False, True, State(S.queued)),
        (True, True, State(S.failed, "opted_out")),
        (False, False, State(S.failed, "international_number")),
        (True, False, State(S.failed, "opted_out")),  # the number's own choice comes first
    ],
)
def test_launch(opted_out: bool, country_allowed: bool, expected: State) -> None:
    assert launch_state(opted_out=opted_out, country_allowed=country_allowed) == expected


# -- claim ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "campaign"),
    [
        case(current, campaign, id=f"{name(current)}-{campaign}")
        for current, campaign in itertools.product(STATES, CAMPAIGNS)
    ],
)
def test_claim_matrix(current: State, campaign: CampaignStatus) -> None:
    assert on_claim(current, campaign) == expected_claim(current, campaign)


# -- send result ---------------------------------------------------------------------------


def send_result_cases() -> Iterator[Any]:
    for current, campaign, outcome, retry_allowed in itertools.product(
        STATES, CAMPAIGNS, Outcome, (True, False)
    ):
        retry = "retry" if retry_allowed else "no-retry"
        yield case(
            current,
            campaign,
            outcome,
            retry_allowed,
            id=f"{name(current)}-{campaign}-{outcome}-{retry}",
        )


@pytest.mark.parametrize(
    ("current", "campaign", "outcome", "retry_allowed"), list(send_result_cases())
)
def test_send_result_matrix(
    current: State, campaign: CampaignStatus, outcome: Outcome, retry_allowed: bool
) -> None:
    classification = FAILURES.get(outcome)
    code = CODE if classification else None
    change = on_send_result(
        current, campaign, outcome, classification, code, retry_allowed=retry_allowed
    )
    assert change == expected_send_result(current, campaign, outcome, retry_allowed)


# -- receipts ------------------------------------------------------------------------------


def receipt_cases() -> Iterator[Any]:
    variants: list[tuple[Phase, Classification | None]] = [
        (Phase.queued, None),
        (Phase.sent, None),
        (Phase.failed, SOFT),
        (Phase.failed, HARD),
        (Phase.unconfirmed, None),
        (Phase.delivered, None),
    ]
    for current, campaign, (receipt, classification), latest, retry_allowed in itertools.product(
        STATES, CAMPAIGNS, variants, (True, False), (True, False)
    ):
        kind = receipt.name + ("" if classification is None else f"-{classification.reason}")
        attempt = "latest" if latest else "earlier"
        retry = "retry" if retry_allowed else "no-retry"
        yield case(
            current,
            campaign,
            receipt,
            classification,
            latest,
            retry_allowed,
            id=f"{name(current)}-{campaign}-{kind}-{attempt}-{retry}",
        )


@pytest.mark.parametrize(
    ("current", "campaign", "receipt", "classification", "latest", "retry_allowed"),
    list(receipt_cases()),
)
def test_receipt_matrix(
    current: State,
    campaign: CampaignStatus,
    receipt: Phase,
    classification: Classification | None,
    latest: bool,
    retry_allowed: bool,
) -> None:
    code = CODE if classification else None
    change = on_receipt(
        current,
        campaign,
        receipt,
        classification,
        code,
        latest_attempt=latest,
        retry_allowed=retry_allowed,
    )
    assert change == expected_receipt(
        current, campaign, receipt, classification, latest, retry_allowed
    )


@pytest.mark.parametrize(
    ("attempt", "receipt"),
    list(itertools.product([None, *Phase], Phase)),
    ids=lambda p: "none" if p is None else p.name,
)
def test_advance_matrix(attempt: Phase | None, receipt: Phase) -> None:
    order = [Phase.queued, Phase.sent, Phase.failed, Phase.unconfirmed, Phase.delivered]
    moves = attempt is None or order.index(receipt) > order.index(attempt)
    assert advance(attempt, receipt) is moves


# -- retry expiry, opt-out, resend ---------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "last_reason"),
    list(itertools.product(STATES, [*FINAL_REASONS, None])),
    ids=lambda v: name(v) if isinstance(v, State) else str(v),
)
def test_retry_expiry_matrix(current: State, last_reason: str | None) -> None:
    expected = (
        Change(State(S.failed, last_reason or "unknown", current.provider_error_code))
        if current.status is S.scheduled
        else None
    )
    assert on_retry_expired(current, last_reason) == expected


@pytest.mark.parametrize(
    ("current", "campaign"),
    [
        case(current, campaign, id=f"{name(current)}-{campaign}")
        for current, campaign in itertools.product(STATES, CAMPAIGNS)
    ],
)
def test_opt_out_matrix(current: State, campaign: CampaignStatus) -> None:
    assert on_opt_out(current, campaign) == expected_opt_out(current, campaign)


RESEND_STATES = (
    State(S.queued),
    State(S.pending),
    State(S.scheduled, "reattempting", "30001"),
    CONFIRMED,
    UNCONFIRMED,
    *(State(S.failed, code, "21211") for code in FINAL_REASONS),
)


@pytest.mark.parametrize(
    ("current", "campaign"),
    [
        case(current, campaign, id=f"{name(current)}-{campaign}")
        for current, campaign in itertools.product(RESEND_STATES, CAMPAIGNS)
    ],
)
def test_resend_matrix(current: State, campaign: CampaignStatus) -> None:
    refusal = resend_refusal(current, campaign)
    if expected_resend_allowed(current, campaign):
        assert refusal is None
        assert on_resend(current, campaign) == Change(State(S.queued), retry=True)
    else:
        assert isinstance(refusal, str) and refusal
        with pytest.raises(AssertionError):
            on_resend(current, campaign)


# -- the rules a person would notice -------------------------------------------------------


def test_sent_after_delivered_changes_nothing() -> None:
    # The same attempt: a late `sent` does not move it (nor does anything else).
    for receipt in Phase:
        assert not advance(Phase.delivered, receipt)
    # Another attempt's `sent` (or any receipt) cannot undo a delivered recipient.
    for receipt, latest in itertools.product(Phase, (True, False)):
        change = on_receipt(
            CONFIRMED,
            C.active,
            receipt,
            SOFT if receipt is Phase.failed else None,
            CODE if receipt is Phase.failed else None,
            latest_attempt=latest,
            retry_allowed=True,
        )
        assert change is None


def apply_receipts(
    receipts: list[Phase],
    *,
    start: State = State(S.queued),
    campaign: CampaignStatus = C.active,
    classification: Classification = SOFT,
    latest: bool = True,
    retry_allowed: bool = True,
) -> tuple[State, bool | None, Phase | None, int]:
    """Receipts for one attempt, as the webhook path applies them: `advance`, then
    `on_receipt`. Answers the state, the last retry decision, the attempt's phase and how
    many changes were made."""
    state, retry, phase, changes = start, None, None, 0
    for receipt in receipts:
        if not advance(phase, receipt):
            continue
        phase = receipt
        failed = receipt is Phase.failed
        change = on_receipt(
            state,
            campaign,
            receipt,
            classification if failed else None,
            CODE if failed else None,
            latest_attempt=latest,
            retry_allowed=retry_allowed,
        )
        if change is not None:
            state, retry, changes = change.state, change.retry, changes + 1
    return state, retry, phase, changes


@pytest.mark.parametrize("receipt", list(Phase), ids=lambda p: p.name)
def test_the_same_receipt_twice_is_applied_once(receipt: Phase) -> None:
    assert advance(None, receipt)
    assert not advance(receipt, receipt)
    start = State(S.queued) if receipt is Phase.queued else State(S.pending)
    once = apply_receipts([receipt], start=start, classification=HARD)
    twice = apply_receipts([receipt, receipt], start=start, classification=HARD)
    assert twice == once
    assert once[3] <= 1


@pytest.mark.parametrize(
    "current",
    [
        State(S.queued),
        State(S.pending),
        State(S.scheduled, "reattempting", "30001"),
        *(State(S.failed, code, "30003") for code in FINAL_REASONS),
    ],
    ids=name,
)
@pytest.mark.parametrize("campaign", [C.active, C.closed, C.complete])
def test_late_delivered_for_an_earlier_attempt_wins(
    current: State, campaign: CampaignStatus
) -> None:
    change = on_receipt(
        current,
        campaign,
        Phase.delivered,
        None,
        None,
        latest_attempt=False,
        retry_allowed=True,
    )
    assert change == Change(CONFIRMED, retry=False)  # the retry is cancelled


def test_delivered_beats_a_failure_reported_for_the_same_attempt() -> None:
    assert advance(Phase.failed, Phase.delivered)
    assert not advance(Phase.delivered, Phase.failed)
    for order in itertools.permutations([Phase.failed, Phase.delivered]):
        state, retry, _, _ = apply_receipts(list(order))
        assert (state, retry) == (CONFIRMED, False)


@pytest.mark.parametrize("current", STATES, ids=name)
def test_archived_campaign_freezes_every_status(current: State) -> None:
    archived = C.archived
    assert on_claim(current, archived) is None
    assert on_opt_out(current, archived) is None
    assert resend_refusal(current, archived) is not None
    for outcome, retry_allowed in itertools.product(Outcome, (True, False)):
        classification = FAILURES.get(outcome)
        change = on_send_result(
            current, archived, outcome, classification, CODE, retry_allowed=retry_allowed
        )
        assert change is None
    for receipt, latest, retry_allowed in itertools.product(Phase, (True, False), (True, False)):
        change = on_receipt(
            current,
            archived,
            receipt,
            SOFT if receipt is Phase.failed else None,
            CODE if receipt is Phase.failed else None,
            latest_attempt=latest,
            retry_allowed=retry_allowed,
        )
        assert change is None


def test_pending_stays_pending_after_archive() -> None:
    # Archive freezes the status (`app.sending.status`): even a delivered receipt leaves it Pending.
    assert apply_receipts(list(Phase), start=State(S.pending), campaign=C.archived) == (
        State(S.pending),
        None,
        Phase.delivered,
        0,
    )


def test_closed_campaign_soft_bounce_fails_with_its_reason() -> None:
    pending = State(S.pending)
    expected = Change(State(S.failed, "blocked", CODE), retry=False)
    assert (
        on_receipt(
            pending, C.closed, Phase.failed, SOFT, CODE, latest_attempt=True, retry_allowed=False
        )
        == expected
    )
    assert (
        on_send_result(State(S.queued), C.closed, Outcome.soft, SOFT, CODE, retry_allowed=False)
        == expected
    )


def test_closed_campaign_soft_bounce_fails_even_when_the_policy_would_retry() -> None:
    change = on_receipt(
        State(S.pending),
        C.closed,
        Phase.failed,
        SOFT,
        CODE,
        latest_attempt=True,
        retry_allowed=True,
    )
    assert change == Change(State(S.failed, "blocked", CODE), retry=False)


def test_closed_campaign_still_takes_receipts() -> None:
    # README, Delivery: receipts for messages already handed to the provider still update them.
    for current in (State(S.queued), State(S.pending)):
        assert on_receipt(
            current,
            C.closed,
            Phase.delivered,
            None,
            None,
            latest_attempt=True,
            retry_allowed=False,
        ) == Change(CONFIRMED)
    assert on_receipt(
        State(S.queued),
        C.closed,
        Phase.sent,
        None,
        None,
        latest_attempt=True,
        retry_allowed=False,
    ) == Change(State(S.pending))
    assert on_claim(State(S.scheduled, "reattempting", "30001"), C.closed) is None


def test_soft_bounce_with_retry_allowed_is_scheduled_and_keeps_the_error_code() -> None:
    expected = Change(State(S.scheduled, "reattempting", "30001"), retry=True)
    assert (
        on_send_result(State(S.queued), C.active, Outcome.soft, SOFT, "30001", retry_allowed=True)
        == expected
    )
    for current in (State(S.queued), State(S.pending)):
        assert (
            on_receipt(
                current,
                C.active,
                Phase.failed,
                SOFT,
                "30001",
                latest_attempt=True,
                retry_allowed=True,
            )
            == expected
        )


def test_hard_failure_fails_at_once_without_retry() -> None:
    # The definition that fits the error (30006: a landline) travels with the reason.
    expected = Change(State(S.failed, "unreachable_number", "30006", 1), retry=False)
    assert (
        on_send_result(State(S.queued), C.active, Outcome.hard, HARD, "30006", retry_allowed=True)
        == expected
    )
    assert (
        on_receipt(
            State(S.pending),
            C.active,
            Phase.failed,
            HARD,
            "30006",
            latest_attempt=True,
            retry_allowed=True,
        )
        == expected
    )


def test_retry_expiry_fails_with_the_last_reason_and_code() -> None:
    scheduled = State(S.scheduled, "reattempting", "30001")
    assert on_retry_expired(scheduled, "blocked") == Change(State(S.failed, "blocked", "30001"))
    assert on_retry_expired(scheduled, None) == Change(State(S.failed, "unknown", "30001"))


def test_retry_expiry_never_fails_with_a_non_final_reason() -> None:
    scheduled = State(S.scheduled, "reattempting", "30001")
    change = on_retry_expired(scheduled, scheduled.failed_reason)
    assert change is not None
    assert reasons.get(change.state.failed_reason or "unknown").resendable is not None


@pytest.mark.parametrize(
    "reason", ["unreachable_number", "opted_out", "invalid_number", "international_number"]
)
@pytest.mark.parametrize("campaign", [C.active, C.complete])
def test_resend_refused_for_reasons_that_never_deliver(
    reason: str, campaign: CampaignStatus
) -> None:
    refusal = resend_refusal(State(S.failed, reason, "30003"), campaign)
    assert refusal is not None
    assert reason in refusal  # the 409 says why


@pytest.mark.parametrize("campaign", [C.closed, C.archived])
@pytest.mark.parametrize("reason", FINAL_REASONS)
def test_resend_refused_on_closed_and_archived_campaigns(
    campaign: CampaignStatus, reason: str
) -> None:
    refusal = resend_refusal(State(S.failed, reason), campaign)
    assert refusal is not None
    assert campaign.value in refusal


@pytest.mark.parametrize(
    "reason", ["blocked", "sending_error", "unknown", "partial_failure", "failed_to_create"]
)
@pytest.mark.parametrize("campaign", [C.active, C.complete])
def test_resend_allowed_for_resendable_reasons(reason: str, campaign: CampaignStatus) -> None:
    current = State(S.failed, reason, "30008")
    assert resend_refusal(current, campaign) is None
    assert on_resend(current, campaign) == Change(State(S.queued), retry=True)


def test_not_resendable_reasons_are_the_catalogs() -> None:
    refused = {r.code for r in reasons.CATALOG if r.resendable is False}
    assert set(status.NOT_RESENDABLE) == refused
    assert refused == {"unreachable_number", "opted_out", "invalid_number", "international_number"}


@pytest.mark.parametrize("campaign", [c for c in CAMPAIGNS if c is not C.archived])
def test_opt_out_cancels_queued_and_scheduled_only(campaign: CampaignStatus) -> None:
    cancelled = Change(State(S.failed, "opted_out"), retry=False)
    assert on_opt_out(State(S.queued), campaign) == cancelled
    assert on_opt_out(State(S.scheduled, "reattempting", "30001"), campaign) == cancelled
    for untouched in (State(S.pending), CONFIRMED, UNCONFIRMED, State(S.failed, "blocked", "1")):
        assert on_opt_out(untouched, campaign) is None


def test_opted_out_in_flight_ignores_the_send_result_and_later_receipts() -> None:
    opted_out = State(S.failed, "opted_out")
    for outcome in Outcome:
        assert (
            on_send_result(
                opted_out, C.active, outcome, FAILURES.get(outcome), CODE, retry_allowed=True
            )
            is None
        )
    assert apply_receipts([Phase.queued, Phase.sent, Phase.failed], start=opted_out)[0] == opted_out


@pytest.mark.parametrize("size", range(4))
def test_campaign_completes_when_nothing_is_in_progress(size: int) -> None:
    for statuses in itertools.product(Status, repeat=size):
        in_progress = sum(s in (S.queued, S.pending, S.scheduled) for s in statuses)
        done = all(s in (S.delivered, S.failed) for s in statuses)
        assert campaign_complete(in_progress) is done


def test_labels_and_groups_are_the_spec_table() -> None:
    # The status table (labels and groups), column by column.
    table = {
        "queued": ("Still in Queue", "in_progress"),
        "pending": ("Pending", "in_progress"),
        "scheduled": ("Scheduled", "in_progress"),
        "delivered": ("Delivered", "delivered"),
        "failed": ("Failed", "failed"),
    }
    assert [s.value for s in Status] == list(table)
    assert {s.value: (status.LABELS[s], status.GROUPS[s].value) for s in Status} == table
    assert {g.value for g in status.Group} == {"in_progress", "delivered", "failed"}
    assert {S.queued, S.pending, S.scheduled} == status.IN_PROGRESS
    assert {S.delivered, S.failed} == status.FINAL
    assert {S.queued, S.scheduled} == status.WAITING


def reasons_named_in_the_source() -> set[str]:
    """Reason codes written in status.py: `State(status, "<reason>")`, `x or "<reason>"`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(status))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "State":
            found |= {
                arg.value
                for arg in node.args[1:2]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            }
        if isinstance(node, ast.IfExp) and isinstance(node.orelse, ast.Constant):
            found.add(str(node.orelse.value))
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            found |= {
                v.value
                for v in node.values
                if isinstance(v, ast.Constant) and isinstance(v.value, str)
            }
    return found


def reasons_produced() -> set[str]:
    """Every reason any rule gives, over all the inputs the matrices use."""
    changes: list[Change | None] = []
    for opted_out, allowed in itertools.product((True, False), repeat=2):
        changes.append(Change(launch_state(opted_out=opted_out, country_allowed=allowed)))
    for current, campaign in itertools.product(STATES, CAMPAIGNS):
        changes += [on_claim(current, campaign), on_opt_out(current, campaign)]
        changes += [on_retry_expired(current, None)]
        if resend_refusal(current, campaign) is None:
            changes.append(on_resend(current, campaign))
        for outcome, retry in itertools.product(Outcome, (True, False)):
            changes.append(
                on_send_result(
                    current, campaign, outcome, FAILURES.get(outcome), CODE, retry_allowed=retry
                )
            )
        for receipt, latest, retry in itertools.product(Phase, (True, False), (True, False)):
            for classification in (SOFT, HARD):
                changes.append(
                    on_receipt(
                        current,
                        campaign,
                        receipt,
                        classification,
                        CODE,
                        latest_attempt=latest,
                        retry_allowed=retry,
                    )
                )
    return {c.state.failed_reason for c in changes if c and c.state.failed_reason}


def test_every_reason_the_module_uses_is_in_the_catalog() -> None:
    named = reasons_named_in_the_source() | set(status.NOT_RESENDABLE)
    assert named >= {"opted_out", "international_number", "reattempting", "unknown"}
    assert named <= set(reasons.CODES)
    produced = reasons_produced()
    assert produced <= set(reasons.CODES)
    assert "reattempting" in produced and "opted_out" in produced


@pytest.mark.parametrize(
    ("word", "phase"),
    [
        ("accepted", Phase.queued),
        ("scheduled", Phase.queued),
        ("queued", Phase.queued),
        ("sending", Phase.queued),
        ("sent", Phase.sent),
        ("delivered", Phase.delivered),
        ("read", Phase.delivered),
        ("undelivered", Phase.failed),
        ("failed", Phase.failed),
        ("canceled", Phase.failed),
        ("sending_failed", Phase.failed),
        ("delivery_failed", Phase.failed),
        # docs/providers.md §2.2: Telnyx `expired` is a (soft) failure,
        # `delivery_unconfirmed` a delivery the carrier did not confirm.
        ("expired", Phase.failed),
        ("delivery_unconfirmed", Phase.unconfirmed),
        ("DELIVERED", Phase.delivered),
        ("Sent", Phase.sent),
        ("receiving", None),
        ("partially_delivered", None),
        ("", None),
    ],
)
def test_provider_status_words(word: str, phase: Phase | None) -> None:
    assert phase_of(word) is phase


def test_phases_only_move_up_in_spec_order() -> None:
    assert Phase.queued < Phase.sent < Phase.failed < Phase.unconfirmed < Phase.delivered


# -- order does not matter: every sequence of receipts for one attempt ---------------------

# All sequences of up to five receipts (duplicates included) over the four phases: every
# shuffle of every multiset of that size, so this covers all a property-based test could
# sample for one attempt (hypothesis is not a dependency of the project).
SEQUENCES = [
    list(seq) for length in range(1, 6) for seq in itertools.product(list(Phase), repeat=length)
]
STARTS = [
    (State(S.queued), True),  # the latest attempt, just handed over
    (State(S.queued), False),  # an earlier attempt's receipts after a resend
    (State(S.scheduled, "reattempting", "30001"), False),  # ... while a retry is due
    (State(S.failed, "unknown", "30008"), False),  # ... after the recipient failed
    (UNCONFIRMED, True),  # taken as delivered unconfirmed (overdue), its receipts late
]


@pytest.mark.parametrize(
    ("start", "latest"),
    STARTS,
    ids=lambda v: name(v) if isinstance(v, State) else ("latest" if v else "earlier"),
)
@pytest.mark.parametrize("campaign", CAMPAIGNS)
def test_receipts_in_any_order_end_in_the_same_state(
    start: State, latest: bool, campaign: CampaignStatus
) -> None:
    for classification, retry_allowed in itertools.product((SOFT, HARD), (True, False)):
        options: dict[str, Any] = {
            "start": start,
            "campaign": campaign,
            "classification": classification,
            "latest": latest,
            "retry_allowed": retry_allowed,
        }
        for receipts in SEQUENCES:
            in_order = sorted(set(receipts))
            *shuffled, changes = apply_receipts(receipts, **options)
            *ordered, _ = apply_receipts(in_order, **options)
            assert shuffled == ordered, (receipts, options)
            assert shuffled[2] is max(receipts)
            assert changes <= len(in_order)


# -- delivery_confirmed (README, Webhooks) --------------------------------------------------------


def every_change() -> Iterator[Change]:
    """Every change any rule makes, over all the inputs the matrices use."""
    for opted_out, allowed in itertools.product((True, False), repeat=2):
        yield Change(launch_state(opted_out=opted_out, country_allowed=allowed))
    for current, campaign in itertools.product(STATES, CAMPAIGNS):
        found: list[Change | None] = [on_claim(current, campaign), on_opt_out(current, campaign)]
        found.append(on_retry_expired(current, "blocked"))
        if resend_refusal(current, campaign) is None:
            found.append(on_resend(current, campaign))
        for outcome, retry in itertools.product(Outcome, (True, False)):
            classification = FAILURES.get(outcome)
            found.append(
                on_send_result(
                    current, campaign, outcome, classification, CODE, retry_allowed=retry
                )
            )
        for (receipt, classification), latest, retry in itertools.product(
            [(p, SOFT if p is Phase.failed else None) for p in Phase], (True, False), (True, False)
        ):
            found.append(
                on_receipt(
                    current,
                    campaign,
                    receipt,
                    classification,
                    CODE if classification else None,
                    latest_attempt=latest,
                    retry_allowed=retry,
                )
            )
        for attempt in (None, *Phase):
            found.append(overdue(current, campaign, attempt, HANDED_OVER + THREE_DAYS))
        yield from (c for c in found if c is not None)


def test_every_state_a_rule_gives_is_confirmed_or_not_exactly_when_delivered() -> None:
    """`true`/`false` for delivered, `null` for any other status: each rule's state says
    so, and `app.sending.state` writes it with the status (so a recipient that leaves
    delivered, if one ever did, would be `null` again)."""
    changes = list(every_change())
    assert {c.state.delivery_confirmed for c in changes} == {True, False, None}
    for change in changes:
        delivered = change.state.status is S.delivered
        assert (change.state.delivery_confirmed is not None) is delivered, change


@pytest.mark.parametrize("latest", [True, False], ids=["latest", "earlier"])
@pytest.mark.parametrize(
    "current",
    [State(S.queued), State(S.pending), State(S.scheduled, "reattempting", "30001")],
    ids=name,
)
def test_telnyx_delivery_unconfirmed_is_delivered_unconfirmed(current: State, latest: bool) -> None:
    """Not a failure (docs/providers.md §2.2): Delivered, `delivery_confirmed` false, no
    retry; from an earlier attempt too, as a late delivered is."""
    assert phase_of("delivery_unconfirmed") is Phase.unconfirmed
    change = on_receipt(
        current, C.active, Phase.unconfirmed, None, None, latest_attempt=latest, retry_allowed=True
    )
    assert change == Change(UNCONFIRMED, retry=False)


def test_a_confirmation_after_an_unconfirmed_delivery_upgrades_it() -> None:
    # The same attempt: delivery_unconfirmed, then delivered (or the other way round).
    for order in itertools.permutations([Phase.unconfirmed, Phase.delivered]):
        state, retry, phase, _ = apply_receipts([Phase.sent, *order])
        assert (state, retry, phase) == (CONFIRMED, False, Phase.delivered)
    # Taken as delivered by the overdue rule, then the carrier's late `delivered` comes.
    assert on_receipt(
        UNCONFIRMED, C.active, Phase.delivered, None, None, latest_attempt=True, retry_allowed=True
    ) == Change(CONFIRMED)
    assert on_receipt(
        UNCONFIRMED,
        C.complete,
        Phase.delivered,
        None,
        None,
        latest_attempt=False,
        retry_allowed=True,
    ) == Change(CONFIRMED)


def test_nothing_downgrades_a_delivery() -> None:
    for current, receipt, latest in itertools.product(
        (CONFIRMED, UNCONFIRMED), [p for p in Phase if p is not Phase.delivered], (True, False)
    ):
        failed = receipt is Phase.failed
        change = on_receipt(
            current,
            C.active,
            receipt,
            HARD if failed else None,
            CODE if failed else None,
            latest_attempt=latest,
            retry_allowed=True,
        )
        assert change is None, (current, receipt)
    assert (
        on_receipt(
            CONFIRMED,
            C.active,
            Phase.delivered,
            None,
            None,
            latest_attempt=True,
            retry_allowed=True,
        )
        is None
    )  # applied once


def test_an_archived_campaign_keeps_an_unconfirmed_delivery_as_it_is() -> None:
    assert (
        on_receipt(
            UNCONFIRMED,
            C.archived,
            Phase.delivered,
            None,
            None,
            latest_attempt=True,
            retry_allowed=True,
        )
        is None
    )


# -- the overdue rule: the carrier accepted, no final receipt came -------------------------

HANDED_OVER = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
AFTER = 259_200  # UNCONFIRMED_AFTER_SECONDS' default
THREE_DAYS = timedelta(seconds=AFTER)


def overdue(
    current: State, campaign: CampaignStatus, attempt: Phase | None, now: datetime
) -> Change | None:
    return on_receipt_overdue(
        current, campaign, attempt, HANDED_OVER, now, unconfirmed_after_seconds=AFTER
    )


@pytest.mark.parametrize("campaign", [C.active, C.closed, C.complete])
def test_sent_and_silent_for_unconfirmed_after_seconds_is_delivered_unconfirmed(
    campaign: CampaignStatus,
) -> None:
    pending = State(S.pending)
    assert overdue(pending, campaign, Phase.sent, HANDED_OVER + THREE_DAYS) == Change(UNCONFIRMED)
    later = HANDED_OVER + THREE_DAYS + timedelta(days=30)
    assert overdue(pending, campaign, Phase.sent, later) == Change(UNCONFIRMED)


def test_not_overdue_before_unconfirmed_after_seconds() -> None:
    for now in (HANDED_OVER, HANDED_OVER + THREE_DAYS - timedelta(microseconds=1)):
        assert overdue(State(S.pending), C.active, Phase.sent, now) is None


@pytest.mark.parametrize("attempt", [None, *Phase], ids=lambda p: "none" if p is None else p.name)
@pytest.mark.parametrize("campaign", CAMPAIGNS)
@pytest.mark.parametrize("current", STATES, ids=name)
def test_overdue_matrix(current: State, campaign: CampaignStatus, attempt: Phase | None) -> None:
    """Only a Pending recipient whose latest attempt the carrier accepted (`sent`), on a
    campaign that is not archived. A message still queued at the provider was never accepted
    by a carrier; a final receipt (or a failure, a retry) has said what became of it; a
    delivered recipient stays as it is (only a receipt confirms it)."""
    accepted = current.status is S.pending and attempt is Phase.sent
    expected = Change(UNCONFIRMED) if accepted and campaign is not C.archived else None
    assert overdue(current, campaign, attempt, HANDED_OVER + THREE_DAYS) == expected


def test_the_overdue_rule_reads_the_setting() -> None:
    pending, an_hour = State(S.pending), timedelta(hours=1)
    now = HANDED_OVER + an_hour
    for seconds, expected in ((3600, Change(UNCONFIRMED)), (3601, None)):
        change = on_receipt_overdue(
            pending, C.active, Phase.sent, HANDED_OVER, now, unconfirmed_after_seconds=seconds
        )
        assert change == expected


# -- writing it: app.sending.state -------------------------------------------------------


def columns_of(state: State, **others: Any) -> SimpleNamespace:
    """A recipient's status columns (a plain row, as the worker's)."""
    return SimpleNamespace(
        **state_values(state),
        next_attempt_at=None,
        claimed_at=None,
        updated_at=HANDED_OVER,
        **others,
    )


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (State(S.pending), CONFIRMED),
        (State(S.pending), UNCONFIRMED),
        (UNCONFIRMED, CONFIRMED),
        # Resend cannot start from delivered, but a change out of it would clear the column.
        (CONFIRMED, State(S.queued)),
        (UNCONFIRMED, State(S.failed, "unknown", "30008")),
    ],
    ids=lambda s: name(s),
)
def test_apply_change_writes_delivery_confirmed_with_the_status(
    before: State, after: State
) -> None:
    row = columns_of(before)
    apply_change(row, Change(after), now=HANDED_OVER)
    assert state_of(row) == after
    assert row.delivery_confirmed is after.delivery_confirmed
    assert set(STATE_COLUMNS) == set(state_values(after))


def test_bulk_values_clear_delivery_confirmed() -> None:
    values = bulk_values(on_resend(State(S.failed, "unknown"), C.active), "now()")
    assert values["delivery_confirmed"] is None
    assert set(values) == {*STATE_COLUMNS, "next_attempt_at"}
