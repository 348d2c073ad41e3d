"""When the next attempt may start: backoff with jitter, and the school's sending window.

Pure functions of their arguments (the random source is passed in), tested without I/O.
"""

from __future__ import annotations

import random
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


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
