"""shared.business_hours: parsing every way a spec can be wrong, and is_open /
opens_at at the edges: range ends, midnight, the week's wrap, closed dates, a
week that never opens, and the 2026 DST changes of Europe/Berlin and
America/New_York (plus America/Santiago, which changes at midnight). Pure: no
clock, no I/O; hypothesis checks the rules that hold at every instant.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.business_hours import DAYS, BusinessHours, parse_hours

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SANTIAGO = ZoneInfo("America/Santiago")
OFFICE = {
    "time_zone": "Europe/Berlin",
    "weekly": {
        "mon": ["08:00-12:00", "13:00-18:00"],
        "tue": ["08:00-12:00", "13:00-18:00"],
        "wed": ["08:00-12:00", "13:00-18:00"],
        "thu": ["08:00-12:00", "13:00-18:00"],
        "fri": ["08:00-16:00"],
        "sat": [],
        "sun": [],
    },
    "closed_dates": ["2026-12-24", "2026-12-25"],
}


def hours(weekly: dict[str, list[str]], zone: str = "Europe/Berlin", **extra) -> BusinessHours:
    return parse_hours({"time_zone": zone, "weekly": weekly, **extra})


def at(zone: ZoneInfo, *parts: int, fold: int = 0) -> datetime:
    """A wall time in `zone` (fold 1: the second of a repeated hour)."""
    return datetime(*parts, tzinfo=zone, fold=fold)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def same_instant(a: datetime | None, b: datetime) -> bool:
    """`==` across zones, minding PEP 495: an aware datetime with fold=1 (the second
    pass of a repeated hour) never equals one in another zone."""
    return a is not None and a.astimezone(UTC) == b.astimezone(UTC)


def open_minutes(spec: BusinessHours, start: datetime, end: datetime) -> list[tuple[str, str]]:
    """Every stretch of open time between two instants, minute by minute, as
    (first open minute, first closed minute) in UTC: how often it opened, and for how long."""
    stretches, opened, moment = [], None, start
    while moment < end:
        if spec.is_open(moment) and opened is None:
            opened = moment
        elif not spec.is_open(moment) and opened is not None:
            stretches.append((opened.strftime("%m-%d %H:%M"), moment.strftime("%m-%d %H:%M")))
            opened = None
        moment += timedelta(minutes=1)
    assert opened is None, "still open at the end of the scan"
    return stretches


# --- parsing ------------------------------------------------------------------------------


def test_a_full_spec_is_read():
    spec = parse_hours(OFFICE)
    assert spec.time_zone == "Europe/Berlin"
    assert spec.weekly[0] == ((8 * 60, 12 * 60), (13 * 60, 18 * 60))
    assert spec.weekly[4] == ((8 * 60, 16 * 60),)
    assert spec.weekly[5] == spec.weekly[6] == ()
    assert spec.closed_dates == {date(2026, 12, 24), date(2026, 12, 25)}


def test_ranges_are_sorted_a_day_left_out_is_closed_and_ranges_may_touch():
    spec = hours({"wed": ["13:00-24:00", "00:00-13:00"]})
    assert spec.weekly[2] == ((0, 780), (780, 1440))
    assert spec.weekly[0] == () and spec.closed_dates == frozenset()
    assert spec.is_open(at(BERLIN, 2026, 3, 4, 13, 0))  # where they touch


@pytest.mark.parametrize(
    "spec, says",
    [
        ([], "must be a JSON object such as"),
        ({"time_zone": "UTC", "weekly": {}, "holidays": []}, "has unknown keys: holidays"),
        ({"weekly": {}}, "needs time_zone, an IANA time zone name"),
        ({"time_zone": 1, "weekly": {}}, "needs time_zone"),
        ({"time_zone": "Europe/Berln", "weekly": {}}, "'Europe/Berln' is not a known IANA"),
        ({"time_zone": "europe/berlin", "weekly": {}}, "is not a known IANA time zone"),
        ({"time_zone": "../../etc/passwd", "weekly": {}}, "is not a known IANA time zone"),
        ({"time_zone": "Europe", "weekly": {}}, "is not a known IANA time zone"),
        ({"time_zone": "localtime", "weekly": {}}, "is not an IANA time zone name"),
        ({"time_zone": "UTC"}, "needs weekly, a JSON object of day"),
        ({"time_zone": "UTC", "weekly": ["mon"]}, "needs weekly"),
        ({"time_zone": "UTC", "weekly": {"monday": []}}, "weekly has unknown days: 'monday'"),
        ({"time_zone": "UTC", "weekly": {"mon": "08:00-12:00"}}, "weekly mon must be a list"),
        ({"time_zone": "UTC", "weekly": {"mon": ["8:00-12:00"]}}, "must be 'HH:MM-HH:MM'"),
        ({"time_zone": "UTC", "weekly": {"mon": ["08:00 - 12:00"]}}, "must be 'HH:MM-HH:MM'"),
        ({"time_zone": "UTC", "weekly": {"mon": ["08:00-12:00:00"]}}, "must be 'HH:MM-HH:MM'"),
        ({"time_zone": "UTC", "weekly": {"mon": [800]}}, "range 800 must be 'HH:MM-HH:MM'"),
        ({"time_zone": "UTC", "weekly": {"mon": ["24:00-24:00"]}}, "starts at no time of day"),
        ({"time_zone": "UTC", "weekly": {"mon": ["08:60-12:00"]}}, "starts at no time of day"),
        ({"time_zone": "UTC", "weekly": {"mon": ["08:00-24:30"]}}, "ends at no time of day"),
        ({"time_zone": "UTC", "weekly": {"mon": ["08:00-25:00"]}}, "ends at no time of day"),
        ({"time_zone": "UTC", "weekly": {"mon": ["08:00-08:00"]}}, "'08:00-08:00' is empty"),
        (
            {"time_zone": "UTC", "weekly": {"sun": ["22:00-02:00"]}},
            "crosses midnight: write it as '22:00-24:00' on sun and '00:00-02:00' on mon",
        ),
        (
            {"time_zone": "UTC", "weekly": {"tue": ["13:00-18:00", "08:00-13:30"]}},
            "weekly tue ranges '08:00-13:30' and '13:00-18:00' overlap",
        ),
        (
            {"time_zone": "UTC", "weekly": {"tue": ["08:00-12:00", "08:00-12:00"]}},
            "overlap",
        ),
        ({"time_zone": "UTC", "weekly": {}, "closed_dates": "2026-12-25"}, "must be a list"),
        (
            {"time_zone": "UTC", "weekly": {}, "closed_dates": ["2026-02-30"]},
            "closed_dates entry '2026-02-30' must be a date 'YYYY-MM-DD'",
        ),
        ({"time_zone": "UTC", "weekly": {}, "closed_dates": ["20261225"]}, "must be a date"),
        ({"time_zone": "UTC", "weekly": {}, "closed_dates": [20261225]}, "must be a date"),
    ],
)
def test_a_bad_spec_says_what_to_fix(spec, says):
    with pytest.raises(ValueError) as raised:
        parse_hours(spec)
    assert says in str(raised.value)


def test_a_naive_datetime_is_refused():
    with pytest.raises(ValueError, match="time-zone-aware"):
        parse_hours(OFFICE).is_open(datetime(2026, 3, 2, 9))


# --- a week in one zone -------------------------------------------------------------------


def test_ranges_are_open_at_their_start_and_closed_at_their_end():
    spec = parse_hours(OFFICE)
    monday = (2026, 3, 2)
    assert not spec.is_open(at(BERLIN, *monday, 7, 59, 59, 999999))
    assert spec.is_open(at(BERLIN, *monday, 8, 0))
    assert spec.is_open(at(BERLIN, *monday, 11, 59, 59, 999999))
    assert not spec.is_open(at(BERLIN, *monday, 12, 0))
    assert spec.is_open(at(BERLIN, *monday, 13, 0))
    assert not spec.is_open(at(BERLIN, *monday, 18, 0))


def test_opens_at_is_the_next_opening_instant_in_the_targets_zone():
    spec = parse_hours(OFFICE)
    lunch = spec.opens_at(at(BERLIN, 2026, 3, 2, 12, 30))
    assert lunch == at(BERLIN, 2026, 3, 2, 13, 0)
    assert lunch is not None and lunch.tzinfo == BERLIN
    assert lunch.isoformat() == "2026-03-02T13:00:00+01:00"
    # Asked in another zone, answered in the target's.
    evening = spec.opens_at(utc(2026, 3, 2, 20, 0))
    assert evening is not None and evening.isoformat() == "2026-03-03T08:00:00+01:00"


def test_open_now_opens_at_now():
    spec = parse_hours(OFFICE)
    now = utc(2026, 3, 2, 9, 30, 15, 123)
    assert same_instant(spec.opens_at(now), now) and spec.opens_at(now).tzinfo == BERLIN


def test_the_weekend_wraps_to_monday():
    spec = parse_hours(OFFICE)
    friday_closing = at(BERLIN, 2026, 3, 6, 16, 0)
    assert spec.opens_at(friday_closing) == at(BERLIN, 2026, 3, 9, 8, 0)
    assert spec.opens_at(at(BERLIN, 2026, 3, 8, 23, 59)) == at(BERLIN, 2026, 3, 9, 8, 0)


def test_sunday_wraps_to_monday_of_the_next_week():
    spec = hours({"sun": ["10:00-11:00"]})
    assert spec.opens_at(at(BERLIN, 2026, 3, 1, 11, 0)) == at(BERLIN, 2026, 3, 8, 10, 0)
    assert spec.opens_at(at(BERLIN, 2026, 3, 2, 0, 0)) == at(BERLIN, 2026, 3, 8, 10, 0)


def test_a_night_shift_is_two_ranges_that_meet_at_midnight():
    spec = hours({"mon": ["22:00-24:00"], "tue": ["00:00-02:00"]})
    assert spec.is_open(at(BERLIN, 2026, 3, 2, 23, 59, 59))
    assert spec.is_open(at(BERLIN, 2026, 3, 3, 0, 0))
    assert spec.is_open(at(BERLIN, 2026, 3, 3, 1, 59))
    assert not spec.is_open(at(BERLIN, 2026, 3, 3, 2, 0))
    assert open_minutes(spec, utc(2026, 3, 2, 12), utc(2026, 3, 3, 12)) == [
        ("03-02 21:00", "03-03 01:00")
    ]


def test_24_00_ends_at_the_next_midnight():
    spec = hours({"fri": ["20:00-24:00"]})
    assert spec.is_open(at(BERLIN, 2026, 3, 6, 23, 59, 59, 999999))
    assert not spec.is_open(at(BERLIN, 2026, 3, 7, 0, 0))


def test_closed_dates_close_the_whole_local_day():
    spec = parse_hours(OFFICE)
    christmas_eve = at(BERLIN, 2026, 12, 24, 10, 0)  # a Thursday
    assert not spec.is_open(christmas_eve)
    # 24th and 25th closed, then the weekend: Monday the 28th.
    assert spec.opens_at(christmas_eve) == at(BERLIN, 2026, 12, 28, 8, 0)
    assert spec.is_open(at(BERLIN, 2026, 12, 23, 10, 0))


def test_a_closed_date_does_not_close_the_night_shift_that_began_the_day_before():
    spec = hours(
        {"mon": ["22:00-24:00"], "tue": ["00:00-02:00"]}, closed_dates=["2026-03-03"]
    )  # the Tuesday: its own 00:00-02:00 is closed, Monday's range ends at midnight
    assert spec.is_open(at(BERLIN, 2026, 3, 2, 23, 30))
    assert not spec.is_open(at(BERLIN, 2026, 3, 3, 0, 30))


def test_weeks_of_closed_dates_are_skipped():
    closed = [str(date(2026, 7, 1) + timedelta(days=n)) for n in range(60)]
    spec = hours({day: ["09:00-10:00"] for day in DAYS}, closed_dates=closed)
    assert spec.opens_at(at(BERLIN, 2026, 7, 1, 9, 30)) == at(BERLIN, 2026, 8, 30, 9, 0)


@pytest.mark.parametrize(
    "weekly", [{}, {key: [] for key in DAYS}], ids=["no days", "seven empty days"]
)
def test_a_week_without_any_opening_never_opens(weekly):
    spec = hours(weekly)
    assert not spec.ever_open
    assert not spec.is_open(utc(2026, 3, 2, 9))
    assert spec.opens_at(utc(2026, 3, 2, 9)) is None


def test_every_day_closed_for_good_never_opens_past_the_horizon():
    """Only the dates listed are closed: after them it opens again."""
    spec = hours({"mon": ["09:00-10:00"]}, closed_dates=["2026-03-02"])
    assert spec.opens_at(at(BERLIN, 2026, 3, 2, 8, 0)) == at(BERLIN, 2026, 3, 9, 9, 0)


# --- daylight saving time -----------------------------------------------------------------
# Europe/Berlin: 2026-03-29 02:00 → 03:00 (at 01:00 UTC), 2026-10-25 03:00 → 02:00 (at 01:00 UTC).
# America/New_York: 2026-03-08 02:00 → 03:00 (07:00 UTC), 2026-11-01 02:00 → 01:00 (06:00 UTC).


def test_berlin_spring_an_opening_inside_the_gap_opens_at_the_first_instant_after_it():
    spec = hours({"sun": ["02:30-05:00"]})
    opened = spec.opens_at(at(BERLIN, 2026, 3, 28, 12, 0))
    assert opened is not None and opened.isoformat() == "2026-03-29T03:00:00+02:00"
    assert opened == utc(2026, 3, 29, 1, 0)
    assert not spec.is_open(utc(2026, 3, 29, 0, 59, 59, 999999))
    assert spec.is_open(utc(2026, 3, 29, 1, 0))


def test_berlin_spring_a_closing_inside_the_gap_closes_when_the_gap_ends():
    spec = hours({"sun": ["01:00-02:30"]})
    assert open_minutes(spec, utc(2026, 3, 28, 22), utc(2026, 3, 29, 4)) == [
        ("03-29 00:00", "03-29 01:00")  # 01:00 CET to 03:00 CEST: one real hour
    ]


def test_berlin_spring_a_range_wholly_inside_the_gap_is_not_open_that_day():
    spec = hours({"sun": ["02:00-02:30"]})
    assert open_minutes(spec, utc(2026, 3, 28, 22), utc(2026, 3, 29, 4)) == []
    opened = spec.opens_at(at(BERLIN, 2026, 3, 28, 12, 0))
    assert opened is not None and opened.isoformat() == "2026-04-05T02:00:00+02:00"


def test_berlin_spring_a_whole_day_is_23_hours():
    spec = hours({"sun": ["00:00-24:00"]})
    assert open_minutes(spec, utc(2026, 3, 28, 12), utc(2026, 3, 30, 0)) == [
        ("03-28 23:00", "03-29 22:00")
    ]


def test_berlin_autumn_the_repeated_hour_is_not_opened_twice():
    spec = hours({"sun": ["02:00-02:30"]})
    # The first 02:00-02:30 (CEST) only; the clock shows it again at 01:00 UTC, closed.
    assert open_minutes(spec, utc(2026, 10, 24, 22), utc(2026, 10, 25, 4)) == [
        ("10-25 00:00", "10-25 00:30")
    ]
    assert not spec.is_open(at(BERLIN, 2026, 10, 25, 2, 15, fold=1))
    # Asked between the two, it opens next week, not at the second 02:00.
    between = at(BERLIN, 2026, 10, 25, 2, 45)  # the first 02:45, CEST
    opened = spec.opens_at(between)
    assert opened is not None and opened.isoformat() == "2026-11-01T02:00:00+01:00"


def test_berlin_autumn_a_closing_in_the_repeated_hour_is_its_first_occurrence():
    spec = hours({"sun": ["00:00-02:30"]})
    assert open_minutes(spec, utc(2026, 10, 24, 20), utc(2026, 10, 25, 4)) == [
        ("10-24 22:00", "10-25 00:30")
    ]


def test_berlin_autumn_a_range_across_the_repeated_hour_is_one_stretch():
    spec = hours({"sun": ["02:30-03:00"]})
    # From the first 02:30 (CEST) until the clock shows 03:00 (CET): 90 real minutes.
    assert open_minutes(spec, utc(2026, 10, 24, 22), utc(2026, 10, 25, 4)) == [
        ("10-25 00:30", "10-25 02:00")
    ]


def test_berlin_autumn_a_whole_day_is_25_hours():
    spec = hours({"sun": ["00:00-24:00"]})
    assert open_minutes(spec, utc(2026, 10, 24, 12), utc(2026, 10, 26, 0)) == [
        ("10-24 22:00", "10-25 23:00")
    ]


def test_new_york_spring_opening_in_the_gap():
    spec = hours({"sun": ["02:30-04:00"]}, zone="America/New_York")
    opened = spec.opens_at(at(NEW_YORK, 2026, 3, 7, 12, 0))
    assert opened is not None and opened.isoformat() == "2026-03-08T03:00:00-04:00"
    assert opened == utc(2026, 3, 8, 7, 0)
    assert open_minutes(spec, utc(2026, 3, 8, 4), utc(2026, 3, 8, 10)) == [
        ("03-08 07:00", "03-08 08:00")
    ]


def test_new_york_autumn_the_repeated_hour_once():
    spec = hours({"sun": ["01:00-01:30"]}, zone="America/New_York")
    assert open_minutes(spec, utc(2026, 11, 1, 3), utc(2026, 11, 1, 9)) == [
        ("11-01 05:00", "11-01 05:30")  # EDT; the EST 01:00-01:30 (06:00 UTC) stays closed
    ]
    assert not spec.is_open(at(NEW_YORK, 2026, 11, 1, 1, 15, fold=1))


def test_new_york_office_hours_across_the_autumn_change():
    spec = hours(
        {day: ["09:00-17:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
        zone="America/New_York",
    )
    friday_evening = at(NEW_YORK, 2026, 10, 30, 18, 0)  # EDT
    opened = spec.opens_at(friday_evening)
    assert opened is not None and opened.isoformat() == "2026-11-02T09:00:00-05:00"
    assert spec.is_open(utc(2026, 11, 2, 14, 0)) and not spec.is_open(utc(2026, 11, 2, 13, 59))


def test_santiago_a_gap_at_midnight_opens_the_day_at_one():
    spec = hours({"sat": ["20:00-24:00"], "sun": ["00:00-08:00"]}, zone="America/Santiago")
    # 2026-09-06 00:00 does not exist (→ 01:00 -03): Saturday's range ends, Sunday's
    # begins there, with nothing between.
    assert open_minutes(spec, utc(2026, 9, 5, 20), utc(2026, 9, 6, 14)) == [
        ("09-06 00:00", "09-06 11:00")
    ]
    sunday = hours({"sun": ["00:00-08:00"]}, zone="America/Santiago")
    opened = sunday.opens_at(at(SANTIAGO, 2026, 9, 5, 12, 0))
    assert opened is not None and opened.isoformat() == "2026-09-06T01:00:00-03:00"


def test_santiago_a_fold_before_midnight_keeps_the_evening_open_through_both_passes():
    spec = hours({"sat": ["22:00-24:00"]}, zone="America/Santiago")
    # 2026-04-04 23:00-24:00 happens twice; the range ends at the one midnight.
    assert open_minutes(spec, utc(2026, 4, 4, 20), utc(2026, 4, 5, 8)) == [
        ("04-05 01:00", "04-05 04:00")
    ]


# --- properties ---------------------------------------------------------------------------

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "America/Santiago",  # changes at midnight
    "Australia/Lord_Howe",  # a 30-minute change
    "Asia/Kolkata",  # no DST, a half-hour offset
    "UTC",
]


def _transitions(zone: ZoneInfo) -> list[datetime]:
    """The instants of 2026 when the zone's offset changes (to the half hour)."""
    found, moment = [], utc(2026, 1, 1)
    offset = moment.astimezone(zone).utcoffset()
    while moment.year == 2026:
        moment += timedelta(minutes=30)
        if (new := moment.astimezone(zone).utcoffset()) != offset:
            found.append(moment)
            offset = new
    return found


TRANSITIONS = [t for name in ZONES for t in _transitions(ZoneInfo(name))]
assert len(TRANSITIONS) == 8  # Berlin, New York, Santiago, Lord Howe: two each

minutes = st.integers(0, 96).map(lambda n: n * 15)  # a quarter-hour grid, 0 … 24:00


@st.composite
def day_ranges(draw) -> list[str]:
    points = sorted(draw(st.sets(minutes, max_size=6)))
    if len(points) % 2:
        points = points[:-1]
    return [
        f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
        for start, end in zip(points[::2], points[1::2], strict=True)
    ]


instants = st.one_of(
    st.integers(int(utc(2026, 1, 1).timestamp() * 1e6), int(utc(2027, 1, 1).timestamp() * 1e6)).map(
        lambda micros: datetime.fromtimestamp(micros / 1e6, UTC)
    ),
    # Near a DST change, where the rules bend.
    st.tuples(st.sampled_from(TRANSITIONS), st.integers(-36 * 3600, 36 * 3600)).map(
        lambda pair: pair[0] + timedelta(seconds=pair[1])
    ),
)


@st.composite
def specs_and_instants(draw) -> tuple[BusinessHours, datetime]:
    moment = draw(instants)
    weekly = {day: draw(day_ranges()) for day in draw(st.sets(st.sampled_from(DAYS)))}
    zone = draw(st.sampled_from(ZONES))
    local_day = moment.astimezone(ZoneInfo(zone)).date()
    closed = draw(st.sets(st.integers(-3, 10), max_size=5))
    closed_dates = [str(local_day + timedelta(days=n)) for n in closed]
    return hours(weekly, zone=zone, closed_dates=closed_dates), moment


PROPERTIES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@given(specs_and_instants())
@PROPERTIES
def test_opens_at_is_the_first_open_instant_at_or_after(case):
    spec, moment = case
    opened = spec.opens_at(moment)
    assert same_instant(opened, moment) == spec.is_open(moment)
    if opened is None:
        # A spec whose every range lies inside DST gaps could do this too; random
        # quarter-hour ranges never do, so None means a week without any range.
        assert not spec.ever_open
        return
    assert opened.tzinfo == spec.zone
    assert opened >= moment and spec.is_open(opened)
    if opened > moment:
        # In UTC: arithmetic on an aware datetime of its own zone is wall-clock
        # arithmetic, which lands inside a DST gap instead of just before it.
        assert not spec.is_open(opened.astimezone(UTC) - timedelta(microseconds=1))
        for fraction in (0.25, 0.5, 0.75):
            point = moment + (opened - moment) * fraction
            if point < opened:  # a gap of a few microseconds rounds onto the opening
                assert not spec.is_open(point)


def _same_offset_around(zone: ZoneInfo, day: date) -> bool:
    offsets = {
        datetime.combine(day + timedelta(days=n), datetime.min.time(), zone).utcoffset()
        for n in (-1, 0, 1, 2)
    }
    return len(offsets) == 1


@given(specs_and_instants())
@PROPERTIES
def test_away_from_a_dst_change_it_is_the_wall_clock_and_the_calendar(case):
    spec, moment = case
    local = moment.astimezone(spec.zone)
    if not _same_offset_around(spec.zone, local.date()):
        return
    seconds = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    expected = local.date() not in spec.closed_dates and any(
        start * 60 <= seconds < end * 60 for start, end in spec.weekly[local.weekday()]
    )
    assert spec.is_open(moment) == expected


def test_a_range_starting_inside_the_spring_gap_is_closed_just_before_the_gap_ends():
    """Found by the property above: 02:00-04:00 on the Sunday Berlin skips 02:00-03:00."""
    spec = hours({"sun": ["02:00-04:00"]}, zone="Europe/Berlin")
    before_gap = utc(2026, 3, 29, 0, 59, 59)  # 01:59:59 CET, the gap's last instant before
    opened = spec.opens_at(before_gap)
    assert opened.isoformat() == "2026-03-29T03:00:00+02:00"
    assert not spec.is_open(opened.astimezone(UTC) - timedelta(microseconds=1))
    assert spec.is_open(opened)
