"""A school's retry policy and sending window applied to one recipient (pure)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Protocol

from app.models import School
from app.sending import schedule


class Retried(Protocol):
    """What the policy reads of a recipient: the ORM entity, or the delivery engine's row."""

    @property
    def attempts(self) -> int: ...

    @property
    def first_attempt_at(self) -> datetime | None: ...


def retry_allowed(school: School, recipient: Retried, now: datetime) -> bool:
    """Retries go on indefinitely unless the school sets max_retry_age_seconds."""
    if school.max_retry_age_seconds is None or recipient.first_attempt_at is None:
        return True
    age = (now - recipient.first_attempt_at).total_seconds()
    return age < school.max_retry_age_seconds


def retry_due(
    school: School,
    recipient: Retried,
    now: datetime,
    retry_after_seconds: float | None = None,
    rng: random.Random | None = None,
) -> datetime:
    """When the next attempt of a soft-bounced recipient is due: backoff from its attempt
    count, or what the provider asked for (Retry-After) when that is later, moved into the
    sending window. The provider's ask is capped at the school's max_delay_seconds, the
    longest pause the school accepts between two attempts: a huge or bogus Retry-After
    (1e12 seconds, a date in the year 9999) neither parks the recipient for ages nor
    overflows the date arithmetic. Asked too early, the provider throttles again: one more
    soft bounce, nothing lost."""
    due = schedule.due_at(
        now,
        attempts=max(recipient.attempts, 1),
        base=school.retry_base_delay_seconds,
        cap=school.retry_max_delay_seconds,
        timezone=school.timezone,
        window_start=school.sending_window_start,
        window_end=school.sending_window_end,
        rng=rng,
    )
    if (
        retry_after_seconds is not None
    ):  # (a number of seconds: `providers.http_answers.retry_after`)
        wait = min(retry_after_seconds, float(school.retry_max_delay_seconds))
        asked = now + timedelta(seconds=wait)
        if asked > due:
            due = schedule.next_opening(
                asked, school.timezone, school.sending_window_start, school.sending_window_end
            )
    return due


def window_opening(school: School, now: datetime) -> datetime:
    """`now` inside the school's sending window, else when it next opens."""
    return schedule.next_opening(
        now, school.timezone, school.sending_window_start, school.sending_window_end
    )


def window_closes(school: School, now: datetime) -> datetime | None:
    """When the school's sending window that contains `now` closes (`now` outside it);
    None when the school has no window."""
    return schedule.window_closes(
        now, school.timezone, school.sending_window_start, school.sending_window_end
    )
