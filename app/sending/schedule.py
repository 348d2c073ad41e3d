"""When the next attempt may start: backoff with jitter, and the school's sending window;
and how long a message handed over now may wait at the provider before the window closes.

Pure functions of their arguments (the random source is passed in), tested without I/O.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

# Twilio's `ValidityPeriod`: whole seconds from 1 to 36,000 (10 hours, also its default).
# twilio-oai spec/json/twilio_api_v2010.json (Messages create, `ValidityPeriod`),
# https://github.com/twilio/twilio-oai ; https://www.twilio.com/docs/api/errors/21624
VALIDITY_MIN_SECONDS = 1
VALIDITY_MAX_SECONDS = 36_000


def backoff_seconds(attempts: int, base: int, cap: int, rng: random.Random | None = None) -> float:
    """Exponential backoff from the attempt count, doubling from `base` up to `cap`, with
    "equal jitter": half the delay fixed, half random, so retries of one campaign spread out
    but never come back sooner than half the nominal delay."""
    exponent = max(attempts - 1, 0)
    nominal = float(cap) if exponent >= 32 else min(float(cap), base * 2.0**exponent)
    return nominal / 2 + (rng or random).uniform(0, nominal / 2)


def in_window(local: time, start: time, end: time) -> bool:
    """Whether a local time is inside [start, end); a window may wrap midnight (22:00-06:00)."""
    if start < end:
        return start <= local < end
    return local >= start or local < end


def next_opening(now: datetime, timezone: str, start: time | None, end: time | None) -> datetime:
    """`now` if an attempt may start now, else the next moment the window opens (UTC-aware)."""
    if start is None or end is None:
        return now
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    if in_window(local.time(), start, end):
        return now
    day = local.date()
    for offset in (0, 1, 2):
        # The day the clocks go back, the opening's wall time may come twice (fold 0, then
        # 1): the first one still ahead is the opening. One that does not exist (the spring
        # gap) is taken as given, e.g. 02:30 EST, which the clock shows as 03:30 EDT.
        for fold in (0, 1):
            wall = datetime.combine(day + timedelta(days=offset), start, tzinfo=zone)
            opening = wall.replace(fold=fold).astimezone(now.tzinfo)
            # Compared as instants (datetimes in one zone compare by wall time alone), and
            # only where the clock then shows a time inside the window: never early.
            if opening > now and in_window(opening.astimezone(zone).time(), start, end):
                return opening
    raise AssertionError("a daily window opens within two days")


def window_closes(
    now: datetime, timezone: str, start: time | None, end: time | None
) -> datetime | None:
    """When the window that contains `now` closes: the first later instant whose local clock
    reads outside it (as `in_window` tells). `now` itself when it is outside the window;
    None without a window (or with start == end, which `in_window` reads as any time).

    The clock leaves the window either by reaching `end` (a wall time met on `now`'s local
    day or a later one; twice the day the clocks go back) or by a jump of the clock itself:
    the spring gap can skip `end` (a 01:00-02:30 window closes at 02:00 EST, when the clock
    jumps to 03:00 EDT), and going back can land before `start` (01:59 EDT to 01:00 EST
    leaves a 01:30-05:00 window). Every instant the clock reads `end` is a candidate, and
    so is the clock change when there is one before the first candidate outside the window;
    the earliest candidate outside the window is the close.
    """
    if start is None or end is None or start == end:
        return None
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    if not in_window(local.time(), start, end):
        return now
    closes: datetime | None = None
    for offset in (-1, 0, 1, 2):
        day = local.date() + timedelta(days=offset)
        for fold in (0, 1):
            # A wall time in the spring gap is taken as given (as in next_opening): an
            # instant the clock shows otherwise, harmless here: a candidate outside the
            # window is never earlier than the close, and one inside is not a candidate.
            candidate = datetime.combine(day, end, tzinfo=zone).replace(fold=fold)
            instant = candidate.astimezone(UTC)
            later = instant > now and (closes is None or instant < closes)
            if later and not in_window(instant.astimezone(zone).time(), start, end):
                closes = instant
    assert closes is not None, "a daily window closes within a day"
    change = _clock_change(zone, now, closes)
    if change is not None and not in_window(change.astimezone(zone).time(), start, end):
        closes = change
    return closes.astimezone(now.tzinfo)


def _clock_change(zone: ZoneInfo, after: datetime, before: datetime) -> datetime | None:
    """The instant `zone`'s UTC offset changes between two instants (a day apart at most),
    to the second, found by halving (some 17 look-ups, on the days the clocks change only);
    None when the offset is the same at both. One change a day at most is assumed: two
    that cancel out within a day would go unseen."""
    low = math.floor(after.timestamp())
    high = math.ceil(before.timestamp())
    offset = datetime.fromtimestamp(low, zone).utcoffset()
    if datetime.fromtimestamp(high, zone).utcoffset() == offset:
        return None
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


def seconds_until(closes: datetime, now: datetime) -> int:
    """Whole seconds from `now` to `closes` (rounded down, so a message given them never
    outlives the window), within Twilio's `ValidityPeriod` range: 1 when the window has
    closed already (or closes within the second), 36,000 when it closes more than ten
    hours away."""
    left = math.floor((closes - now).total_seconds())
    return min(max(left, VALIDITY_MIN_SECONDS), VALIDITY_MAX_SECONDS)


def validity_seconds(
    now: datetime, timezone: str, start: time | None, end: time | None
) -> int | None:
    """The seconds a message handed over at `now` may wait at the provider: those left
    until the window that contains `now` closes, 1 to 36,000 (`seconds_until`); None
    without a window (the provider's own limit applies)."""
    closes = window_closes(now, timezone, start, end)
    return None if closes is None else seconds_until(closes, now)


def due_at(
    now: datetime,
    *,
    attempts: int,
    base: int,
    cap: int,
    timezone: str,
    window_start: time | None,
    window_end: time | None,
    rng: random.Random | None = None,
) -> datetime:
    """When a soft-bounced message should be tried again."""
    earliest = now + timedelta(seconds=backoff_seconds(attempts, base, cap, rng))
    return next_opening(earliest, timezone, window_start, window_end)
