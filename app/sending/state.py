"""The one place a recipient's status is written: a status-rules decision (`Change`) onto
its columns, whoever decided it (API actions, the claim, the record, the receipt applier,
opt-outs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from app.kit.clock import utcnow
from app.sending import status as rules
from app.sending.status import Status


class StatusColumns(Protocol):
    """A recipient's status columns: the ORM entity, or a plain row that the delivery engine
    reads and writes back in bulk itself (hundreds at a time, without an identity map)."""

    status: str
    failed_reason: str | None
    failed_definition: int
    provider_error_code: str | None
    delivery_confirmed: bool | None
    next_attempt_at: datetime | None
    claimed_at: datetime | None
    updated_at: datetime


# The columns that hold a `rules.State`, as `state_values` names them: what every writer of a
# recipient's status writes (the worker's SQL takes its column lists from here).
STATE_COLUMNS = (
    "status",
    "failed_reason",
    "failed_definition",
    "provider_error_code",
    "delivery_confirmed",
)


def state_of(recipient: StatusColumns) -> rules.State:
    return rules.State(
        Status(recipient.status),
        recipient.failed_reason,
        recipient.provider_error_code,
        recipient.failed_definition,
        recipient.delivery_confirmed,
    )


def state_values(state: rules.State) -> dict[str, Any]:
    """A state as its columns' values (`STATE_COLUMNS`): `delivery_confirmed` is the
    state's, so it is null again whenever a recipient is not delivered."""
    return {
        "status": state.status.value,
        "failed_reason": state.failed_reason,
        "failed_definition": state.definition,
        "provider_error_code": state.provider_error_code,
        "delivery_confirmed": state.delivery_confirmed,
    }


def apply_change(
    recipient: StatusColumns,
    change: rules.Change,
    due_at: datetime | None = None,
    now: datetime | None = None,
) -> None:
    """Write a status-rules decision onto a recipient (`due_at`: its next attempt, if any;
    `now`: the time of the change, when the caller has it for hundreds of recipients).
    Nothing is due after a change without a retry, except that a hand-over already begun
    (`claimed_at`) keeps its lease: its worker records it, or if that worker dies, the
    lease's end lets another find out whether the message went out."""
    state = change.state
    recipient.status = state.status.value
    recipient.failed_reason = state.failed_reason
    recipient.failed_definition = state.definition
    recipient.provider_error_code = state.provider_error_code
    recipient.delivery_confirmed = state.delivery_confirmed
    if change.retry:
        recipient.next_attempt_at = due_at
    elif recipient.claimed_at is None:
        recipient.next_attempt_at = None
    recipient.updated_at = now or utcnow()


def bulk_values(change: rules.Change, due_at: Any) -> dict[str, Any]:
    """`apply_change` for many recipients that all take one change with a retry (a bulk
    resend), as the values of one UPDATE: the state's columns and the next attempt at
    `due_at` (a value or an SQL expression)."""
    assert change.retry, "without a retry, each recipient's lease decides (apply_change)"
    return {**state_values(change.state), "next_attempt_at": due_at}
