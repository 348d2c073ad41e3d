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
        opening = datetime.combine(day + timedelta(days=offset), start, tzinfo=zone)
        # fold/gap: a wall-clock opening that does not exist (DST jump) is taken as given;
        # converting to UTC and back places it on the next valid instant.
        if opening > local:
            return opening.astimezone(now.tzinfo)
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
