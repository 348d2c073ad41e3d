"""Backoff with jitter, the sending window and the seconds left in it
(`app.sending.schedule`), without I/O.

Expected instants are written out in UTC by hand (with the zone's offset of that day), not
computed with the module's own arithmetic.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.sending.schedule import (
    backoff_seconds,
    due_at,
    in_window,
    next_opening,
    seconds_until,
    validity_seconds,
    window_closes,
)

NEW_YORK = "America/New_York"
DAY = (time(8, 0), time(21, 0))
NIGHT = (time(22, 0), time(6, 0))  # wraps midnight


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# -- backoff ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "nominal"),
    [(0, 60), (1, 60), (2, 120), (3, 240), (4, 480), (5, 960), (6, 1920), (7, 3600), (8, 3600)],
)
def test_backoff_doubles_from_base_up_to_the_cap(attempts: int, nominal: float) -> None:
    rng = random.Random(attempts)
    delays = [backoff_seconds(attempts, 60, 3600, rng) for _ in range(2000)]
    # Equal jitter: never below half the nominal delay, never above it...
    assert all(nominal / 2 <= d <= nominal for d in delays)
    # ...and spread over that whole range.
    assert min(delays) < nominal / 2 + nominal * 0.01
    assert max(delays) > nominal - nominal * 0.01


@pytest.mark.parametrize("attempts", [31, 32, 33, 64, 10_000])
def test_backoff_stays_capped_for_any_attempt_count(attempts: int) -> None:
    rng = random.Random(7)
    for _ in range(100):
        assert 1800 <= backoff_seconds(attempts, 60, 3600, rng) <= 3600


def test_backoff_cap_below_base_wins() -> None:
    rng = random.Random(3)
    assert all(5 <= backoff_seconds(1, 60, 10, rng) <= 10 for _ in range(100))


def test_backoff_with_the_same_seed_is_the_same() -> None:
    first, second = random.Random(42), random.Random(42)
    assert [backoff_seconds(n, 60, 3600, first) for n in range(1, 10)] == [
        backoff_seconds(n, 60, 3600, second) for n in range(1, 10)
    ]


def test_jitter_uses_the_random_source_given() -> None:
    class Extremes(random.Random):
        def __init__(self, high: bool) -> None:
            super().__init__(0)
            self.high = high

        def uniform(self, a: float, b: float) -> float:
            return b if self.high else a

    assert backoff_seconds(3, 60, 3600, Extremes(high=False)) == 120
    assert backoff_seconds(3, 60, 3600, Extremes(high=True)) == 240


def test_due_at_is_now_plus_backoff_when_the_window_is_open() -> None:
    now = utc(2025, 6, 2, 16, 0)  # 12:00 in New York (EDT)
    due = due_at(
        now,
        attempts=2,
        base=60,
        cap=3600,
        timezone=NEW_YORK,
        window_start=DAY[0],
        window_end=DAY[1],
        rng=random.Random(1),
    )
    assert now + timedelta(seconds=60) <= due <= now + timedelta(seconds=120)


def test_due_at_moves_a_retry_past_the_window_to_its_next_opening() -> None:
    now = utc(2025, 6, 3, 0, 50)  # 20:50 in New York: a 16-32 minute retry is after 21:00
    due = due_at(
        now,
        attempts=6,
        base=60,
        cap=3600,
        timezone=NEW_YORK,
        window_start=DAY[0],
        window_end=DAY[1],
        rng=random.Random(1),
    )
    assert due == utc(2025, 6, 3, 12, 0)  # 08:00 EDT the next morning


# -- in_window -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clock", "inside"),
    [
        (time(7, 59, 59), False),
        (time(8, 0), True),  # start included
        (time(12, 0), True),
        (time(20, 59, 59), True),
        (time(21, 0), False),  # end excluded
        (time(23, 0), False),
        (time(0, 0), False),
    ],
)
def test_in_a_day_window(clock: time, inside: bool) -> None:
    assert in_window(clock, *DAY) is inside


@pytest.mark.parametrize(
    ("clock", "inside"),
    [
        (time(21, 59), False),
        (time(22, 0), True),
        (time(23, 59, 59), True),
        (time(0, 0), True),
        (time(5, 59, 59), True),
        (time(6, 0), False),
        (time(12, 0), False),
    ],
)
def test_in_a_window_that_wraps_midnight(clock: time, inside: bool) -> None:
    assert in_window(clock, *NIGHT) is inside


# -- next_opening ----------------------------------------------------------------------


def test_no_window_means_any_time() -> None:
    now = utc(2025, 6, 2, 3, 0)
    assert next_opening(now, NEW_YORK, None, None) == now


@pytest.mark.parametrize(
    ("now", "window", "opening"),
    [
        # June: New York is UTC-4.
        pytest.param(utc(2025, 6, 2, 16, 0), DAY, utc(2025, 6, 2, 16, 0), id="inside"),
        pytest.param(utc(2025, 6, 2, 12, 0), DAY, utc(2025, 6, 2, 12, 0), id="at-start"),
        pytest.param(utc(2025, 6, 2, 10, 30), DAY, utc(2025, 6, 2, 12, 0), id="before"),
        pytest.param(utc(2025, 6, 3, 1, 0), DAY, utc(2025, 6, 3, 12, 0), id="at-end"),
        pytest.param(utc(2025, 6, 3, 2, 30), DAY, utc(2025, 6, 3, 12, 0), id="after"),
        # Late evening local is already the next UTC day: still tomorrow's 08:00 local.
        pytest.param(utc(2025, 6, 3, 3, 59), DAY, utc(2025, 6, 3, 12, 0), id="before-midnight"),
        pytest.param(utc(2025, 6, 2, 16, 0), NIGHT, utc(2025, 6, 3, 2, 0), id="wrap-before"),
        pytest.param(utc(2025, 6, 3, 3, 0), NIGHT, utc(2025, 6, 3, 3, 0), id="wrap-evening"),
        pytest.param(utc(2025, 6, 3, 8, 0), NIGHT, utc(2025, 6, 3, 8, 0), id="wrap-morning"),
        pytest.param(utc(2025, 6, 3, 10, 0), NIGHT, utc(2025, 6, 4, 2, 0), id="wrap-after"),
    ],
)
def test_next_opening(now: datetime, window: tuple[time, time], opening: datetime) -> None:
    assert next_opening(now, NEW_YORK, *window) == opening


def test_next_opening_keeps_the_callers_time_zone() -> None:
    now = datetime(2025, 6, 2, 6, 30, tzinfo=ZoneInfo(NEW_YORK))
    opening = next_opening(now, NEW_YORK, *DAY)
    assert opening == utc(2025, 6, 2, 12, 0)
    assert opening.tzinfo is now.tzinfo


def test_a_school_in_another_zone() -> None:
    # 10:00 UTC is 15:30 in Kolkata (UTC+05:30, no DST): after a 08:00-14:00 window.
    assert next_opening(utc(2025, 6, 2, 10, 0), "Asia/Kolkata", time(8), time(14)) == utc(
        2025, 6, 3, 2, 30
    )


# -- DST days in New York --------------------------------------------------------------
# 2025-03-09: 02:00 EST (UTC-5) jumps to 03:00 EDT (UTC-4) = 07:00Z.
# 2025-11-02: 02:00 EDT (UTC-4) falls back to 01:00 EST (UTC-5) = 06:00Z.


@pytest.mark.parametrize(
    ("now", "opening"),
    [
        pytest.param(utc(2025, 3, 9, 6, 0), utc(2025, 3, 9, 12, 0), id="spring-before"),
        pytest.param(utc(2025, 3, 9, 3, 0), utc(2025, 3, 9, 12, 0), id="spring-eve-after"),
        pytest.param(utc(2025, 3, 9, 14, 0), utc(2025, 3, 9, 14, 0), id="spring-inside"),
        pytest.param(utc(2025, 3, 10, 1, 30), utc(2025, 3, 10, 12, 0), id="spring-after"),
        pytest.param(utc(2025, 11, 2, 5, 0), utc(2025, 11, 2, 13, 0), id="fall-before"),
        pytest.param(utc(2025, 11, 2, 2, 0), utc(2025, 11, 2, 13, 0), id="fall-eve-after"),
        pytest.param(utc(2025, 11, 2, 15, 0), utc(2025, 11, 2, 15, 0), id="fall-inside"),
        pytest.param(utc(2025, 11, 3, 2, 30), utc(2025, 11, 3, 13, 0), id="fall-after"),
    ],
)
def test_day_window_on_dst_days(now: datetime, opening: datetime) -> None:
    assert next_opening(now, NEW_YORK, *DAY) == opening


def test_night_window_across_spring_forward() -> None:
    # 21:00 EST on the 8th, before a 22:00-06:00 window: opens 22:00 EST = 03:00Z.
    assert next_opening(utc(2025, 3, 9, 2, 0), NEW_YORK, *NIGHT) == utc(2025, 3, 9, 3, 0)
    # 06:30 EDT on the 9th, just after it closed: 22:00 EDT that evening = 02:00Z on the 10th.
    assert next_opening(utc(2025, 3, 9, 10, 30), NEW_YORK, *NIGHT) == utc(2025, 3, 10, 2, 0)


def test_opening_in_the_spring_forward_gap() -> None:
    # 02:30 does not exist on 2025-03-09: taken as given, 02:30 EST, which the clock shows
    # as 03:30 EDT (07:30Z): inside the window, never before it.
    window = (time(2, 30), time(5, 0))
    assert next_opening(utc(2025, 3, 9, 6, 0), NEW_YORK, *window) == utc(2025, 3, 9, 7, 30)
    # 02:15-03:15 taken as given is 03:15-03:15 EDT that night: it opens the next night
    # (late, never outside the window).
    window = (time(2, 15), time(3, 15))
    assert next_opening(utc(2025, 3, 9, 6, 0), NEW_YORK, *window) == utc(2025, 3, 10, 6, 15)


def test_opening_in_the_repeated_fall_back_hour() -> None:
    window = (time(1, 30), time(5, 0))
    # 00:30 EDT: the window opens at the first 01:30 (EDT, 05:30Z).
    assert next_opening(utc(2025, 11, 2, 4, 30), NEW_YORK, *window) == utc(2025, 11, 2, 5, 30)
    # 01:15 EST, the second time the clock shows 01:15: 01:30 EDT has passed, but the
    # clock reads 01:30 again at 01:30 EST (06:30Z). Not the past, not inside the window.
    now = utc(2025, 11, 2, 6, 15)
    assert not in_window(now.astimezone(ZoneInfo(NEW_YORK)).time(), *window)
    assert next_opening(now, NEW_YORK, *window) == utc(2025, 11, 2, 6, 30)


def test_an_opening_is_never_in_the_past() -> None:
    """Every 7 minutes across both DST days, for a few windows: the opening is `now` when
    the local clock is inside the window, else a later instant whose local clock is."""
    zone = ZoneInfo(NEW_YORK)
    windows = [DAY, NIGHT, (time(1, 30), time(2, 30)), (time(2, 15), time(3, 15))]
    for start in (utc(2025, 3, 8, 12, 0), utc(2025, 11, 1, 12, 0)):
        for step in range(0, 48 * 60, 7):
            now = start + timedelta(minutes=step)
            for window in windows:
                opening = next_opening(now, NEW_YORK, *window)
                where = (now, window, opening)
                if in_window(now.astimezone(zone).time(), *window):
                    assert opening == now, where
                else:
                    assert opening > now, where
                    assert in_window(opening.astimezone(zone).time(), *window), where
                    # A day later at most, two when the opening fell in the spring gap.
                    assert opening - now <= timedelta(days=2), where


# -- the seconds left in the window (Twilio's ValidityPeriod, README, Delivery) ----------------


def test_no_window_means_no_validity_period() -> None:
    now = utc(2025, 6, 2, 3, 0)
    assert window_closes(now, NEW_YORK, None, None) is None
    assert validity_seconds(now, NEW_YORK, None, None) is None
    assert validity_seconds(now, NEW_YORK, time(8), None) is None


@pytest.mark.parametrize(
    ("now", "window", "closes", "seconds"),
    [
        # June: New York is UTC-4; 21:00 EDT is 01:00Z the next day.
        pytest.param(utc(2025, 6, 2, 16, 0), DAY, utc(2025, 6, 3, 1, 0), 32_400, id="9h-left"),
        pytest.param(utc(2025, 6, 3, 0, 59), DAY, utc(2025, 6, 3, 1, 0), 60, id="a-minute-left"),
        pytest.param(utc(2025, 6, 2, 12, 0), DAY, utc(2025, 6, 3, 1, 0), 36_000, id="13h-left"),
        # Wrapping midnight: 23:00 EDT (03:00Z) and 05:00 EDT (09:00Z) close at 06:00 EDT.
        pytest.param(utc(2025, 6, 3, 3, 0), NIGHT, utc(2025, 6, 3, 10, 0), 25_200, id="wrap-eve"),
        pytest.param(utc(2025, 6, 3, 9, 0), NIGHT, utc(2025, 6, 3, 10, 0), 3_600, id="wrap-morn"),
        pytest.param(utc(2025, 6, 3, 2, 0), NIGHT, utc(2025, 6, 3, 10, 0), 28_800, id="wrap-start"),
    ],
)
def test_seconds_left_in_the_window(
    now: datetime, window: tuple[time, time], closes: datetime, seconds: int
) -> None:
    assert window_closes(now, NEW_YORK, *window) == closes
    assert validity_seconds(now, NEW_YORK, *window) == seconds


@pytest.mark.parametrize(
    ("left", "seconds"),
    [
        (timedelta(hours=10), 36_000),
        (timedelta(hours=10, seconds=1), 36_000),
        (timedelta(hours=10) - timedelta(seconds=1), 35_999),
        (timedelta(seconds=90, milliseconds=999), 90),  # rounded down: never past the close
        (timedelta(seconds=1), 1),
        (timedelta(milliseconds=400), 1),
        (timedelta(0), 1),
        (timedelta(minutes=-5), 1),  # closed since (a send that waited past it)
    ],
)
def test_seconds_are_whole_and_within_twilios_range(left: timedelta, seconds: int) -> None:
    now = utc(2025, 6, 2, 16, 0)
    assert seconds_until(now + left, now) == seconds


def test_outside_the_window_it_has_closed() -> None:
    now = utc(2025, 6, 3, 2, 30)  # 22:30 EDT, after an 08:00-21:00 window
    assert window_closes(now, NEW_YORK, *DAY) == now
    assert validity_seconds(now, NEW_YORK, *DAY) == 1
    assert validity_seconds(now, NEW_YORK, *NIGHT) == 27_000  # 06:00 EDT is 10:00Z


def test_a_school_in_another_zone_closes_on_its_own_clock() -> None:
    # 05:00 UTC is 10:30 in Kolkata (UTC+05:30): a 08:00-14:00 window closes at 08:30Z.
    now = utc(2025, 6, 2, 5, 0)
    assert window_closes(now, "Asia/Kolkata", time(8), time(14)) == utc(2025, 6, 2, 8, 30)
    assert validity_seconds(now, "Asia/Kolkata", time(8), time(14)) == 12_600


def test_window_closes_keeps_the_callers_time_zone() -> None:
    now = datetime(2025, 6, 2, 12, 0, tzinfo=ZoneInfo(NEW_YORK))
    closes = window_closes(now, NEW_YORK, *DAY)
    assert closes == utc(2025, 6, 3, 1, 0)
    assert closes is not None and closes.tzinfo is now.tzinfo


# DST days in New York, as above: 2025-03-09 02:00 EST -> 03:00 EDT (07:00Z);
# 2025-11-02 02:00 EDT -> 01:00 EST (06:00Z).


def test_a_night_window_is_an_hour_shorter_when_the_clocks_go_forward() -> None:
    # 23:00 EST on the 8th (04:00Z): 06:00 EDT on the 9th is 10:00Z, six hours away.
    assert window_closes(utc(2025, 3, 9, 4, 0), NEW_YORK, *NIGHT) == utc(2025, 3, 9, 10, 0)
    assert validity_seconds(utc(2025, 3, 9, 4, 0), NEW_YORK, *NIGHT) == 6 * 3600


def test_a_night_window_is_an_hour_longer_when_the_clocks_go_back() -> None:
    # 23:00 EDT on the 1st (03:00Z): 06:00 EST on the 2nd is 11:00Z, eight hours away.
    assert window_closes(utc(2025, 11, 2, 3, 0), NEW_YORK, *NIGHT) == utc(2025, 11, 2, 11, 0)
    assert validity_seconds(utc(2025, 11, 2, 3, 0), NEW_YORK, *NIGHT) == 8 * 3600


def test_a_close_in_the_spring_forward_gap_is_the_clock_change() -> None:
    # 01:00-02:30: at 01:30 EST (06:30Z) the clock jumps from 02:00 EST to 03:00 EDT at
    # 07:00Z, past 02:30: the window closes then, not at "02:30 EST" (07:30Z).
    now = utc(2025, 3, 9, 6, 30)
    assert window_closes(now, NEW_YORK, time(1), time(2, 30)) == utc(2025, 3, 9, 7, 0)
    assert validity_seconds(now, NEW_YORK, time(1), time(2, 30)) == 1800


def test_falling_back_before_the_opening_closes_the_window() -> None:
    # 01:30-05:00: at 01:45 EDT (05:45Z) the clock falls back from 02:00 EDT to 01:00 EST
    # at 06:00Z, before 01:30: outside the window until 01:30 EST (06:30Z).
    now = utc(2025, 11, 2, 5, 45)
    window = (time(1, 30), time(5, 0))
    assert window_closes(now, NEW_YORK, *window) == utc(2025, 11, 2, 6, 0)
    assert next_opening(utc(2025, 11, 2, 6, 0), NEW_YORK, *window) == utc(2025, 11, 2, 6, 30)


def test_a_close_in_the_repeated_hour_is_its_first_pass() -> None:
    # 00:00-01:30 at 00:45 EDT (04:45Z): the clock reads 01:30 first at 01:30 EDT (05:30Z).
    now = utc(2025, 11, 2, 4, 45)
    assert window_closes(now, NEW_YORK, time(0), time(1, 30)) == utc(2025, 11, 2, 5, 30)


def test_the_close_is_the_first_moment_outside_the_window() -> None:
    """Every 7 minutes across both DST days, for a few windows: inside the window, the
    close is later, the local clock then reads outside it, and it reads inside at every
    whole minute before (the windows' edges and the clock changes are whole minutes)."""
    zone = ZoneInfo(NEW_YORK)
    windows = [
        DAY,
        NIGHT,
        (time(1, 30), time(2, 30)),
        (time(2, 15), time(3, 15)),
        (time(1, 30), time(5, 0)),
        (time(0, 0), time(1, 30)),
    ]
    for start in (utc(2025, 3, 8, 12, 0), utc(2025, 11, 1, 12, 0)):
        for step in range(0, 48 * 60, 7):
            now = start + timedelta(minutes=step, seconds=17)
            for window in windows:
                closes = window_closes(now, NEW_YORK, *window)
                assert closes is not None
                where = (now, window, closes)
                if not in_window(now.astimezone(zone).time(), *window):
                    assert closes == now, where
                    continue
                assert closes > now, where
                assert not in_window(closes.astimezone(zone).time(), *window), where
                minute = now.replace(second=0) + timedelta(minutes=1)
                while minute < closes:
                    assert in_window(minute.astimezone(zone).time(), *window), (where, minute)
                    minute += timedelta(minutes=1)
