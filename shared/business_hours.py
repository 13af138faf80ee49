"""A target's business hours: when its agents work, in the target's own time zone.

Pure (no I/O, no clock): the API asks `is_open(at)` and `opens_at(at)` with the
instant it read from its own clock, so tests pass any instant they like.

Opening times are wall-clock times in `zone`. A wall time `L` on a day means the
first instant at which that day's clock shows `L` or later. That one rule settles
the two days a year the clock is not a straight line:
- spring forward (a gap): an opening or closing time inside the skipped hour
  takes effect at the first instant after the gap (Berlin, 2026-03-29, "02:30"
  is 03:00 CEST); a range wholly inside the gap is never open;
- fall back (a fold): a time that occurs twice means its first occurrence, so a
  range is one stretch of real time and the repeated hour is not opened twice
  (Berlin, 2026-10-25, "00:00-02:30" closes at the first 02:30 and stays closed
  while the clock shows 02:00-02:30 again).
Ranges are half-open (`08:00-12:00` is open at 08:00, closed at 12:00); `24:00`
ends a range at the next midnight, and a range may not cross midnight: it is
written as two (`22:00-24:00` one day, `00:00-02:00` the next), which meet
without a gap. A closed date closes that local calendar day's ranges.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""The `weekly` keys, in `date.weekday()` order."""
MINUTES_A_DAY = 24 * 60
_KEYS = frozenset({"time_zone", "weekly", "closed_dates"})
_RANGE = re.compile(r"(\d\d):(\d\d)-(\d\d):(\d\d)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ONE_DAY = timedelta(days=1)
EXAMPLE = '{"time_zone": "Europe/Berlin", "weekly": {"mon": ["08:00-12:00", "13:00-18:00"]}}'

Range = tuple[int, int]
"""Minutes after local midnight, [start, end), 0 <= start < end <= 1440."""


@dataclass(frozen=True)
class BusinessHours:
    """Weekly opening ranges in a time zone, minus closed dates."""

    zone: ZoneInfo
    weekly: tuple[tuple[Range, ...], ...]
    """Seven entries, Monday first; each day's ranges sorted, apart or touching."""
    closed_dates: frozenset[date] = frozenset()

    @property
    def time_zone(self) -> str:
        return self.zone.key

    @property
    def ever_open(self) -> bool:
        return any(self.weekly)

    def is_open(self, at: datetime) -> bool:
        """Whether `at` (tz-aware) falls in an opening range."""
        moment = _aware(at)
        today = moment.astimezone(self.zone).date()
        # A day's ranges lie between its midnight and the next one; a fold that
        # went back across midnight shows the day before again: three days, to be sure.
        return any(
            start <= moment < end
            for day in (today - _ONE_DAY, today, today + _ONE_DAY)
            for start, end in self._intervals(day)
        )

    def opens_at(self, at: datetime) -> datetime | None:
        """The earliest instant at or after `at` when it is open, in `zone`
        (`at` itself when open); None when no range ever opens again."""
        moment = _aware(at)
        if self.is_open(moment):
            return moment.astimezone(self.zone)
        if not self.ever_open:
            return None
        today = moment.astimezone(self.zone).date()
        last_closed = max(self.closed_dates, default=today)
        # Past the last closed date every weekday comes round within a week; two
        # more weeks cover ranges a DST gap swallowed on one particular day.
        days = max(0, (last_closed - today).days) + 16
        for offset in range(-1, days):
            for start, _end in self._intervals(today + timedelta(days=offset)):
                if start > moment:
                    return start.astimezone(self.zone)
        return None

    def _intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        """The day's ranges as instants (UTC), empty ones (inside a gap) left out."""
        if day in self.closed_dates:
            return []
        intervals = []
        for start_minute, end_minute in self.weekly[day.weekday()]:
            start = self._instant(day, start_minute)
            end = self._instant(day, end_minute)
            if end > start:
                intervals.append((start, end))
        return intervals

    def _instant(self, day: date, minute: int) -> datetime:
        """The first instant at which the clock shows `minute` on `day`, or later."""
        if minute == MINUTES_A_DAY:
            day, minute = day + _ONE_DAY, 0
        wall = datetime.combine(day, time(minute // 60, minute % 60))
        shown = []
        for fold in (0, 1):
            instant = wall.replace(tzinfo=self.zone, fold=fold).astimezone(UTC)
            if _wall(instant, self.zone) == wall:
                shown.append(instant)
        if shown:
            return min(shown)  # in a fold, the first occurrence
        # In a gap: fold=1 reads the wall time with the offset after the change,
        # an instant before the gap; fold=0 with the one before, an instant
        # after it. The change lies between: find its first second.
        before = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        after = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        low, high = int(before.timestamp()), int(after.timestamp())
        while high - low > 1:
            middle = (low + high) // 2
            if _wall(datetime.fromtimestamp(middle, UTC), self.zone) >= wall:
                high = middle
            else:
                low = middle
        return datetime.fromtimestamp(high, UTC)


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("business hours need a time-zone-aware datetime")
    return at


# --------------------------------------------------------------------------
# Parsing: a target's `hours` (JSON) in, BusinessHours out, or a ValueError
# whose message follows "hours: " (shared.settings adds the target's name).
# --------------------------------------------------------------------------


def parse_hours(spec: Any) -> BusinessHours:
    """`{"time_zone": "Europe/Berlin", "weekly": {"mon": ["08:00-12:00", …], …},
    "closed_dates": ["2026-12-25"]}`: every problem is a ValueError saying what to fix."""
    if not isinstance(spec, dict):
        raise ValueError(f"must be a JSON object such as {EXAMPLE}")
    unknown = set(spec) - _KEYS
    if unknown:
        raise ValueError(f"has unknown keys: {', '.join(sorted(unknown))}")
    zone = _zone(spec.get("time_zone"))
    weekly = spec.get("weekly")
    if not isinstance(weekly, dict):
        raise ValueError(
            'needs weekly, a JSON object of day → ranges such as {"mon": ["08:00-18:00"]} '
            "(a day left out is closed)"
        )
    return BusinessHours(zone, _weekly(weekly), _closed_dates(spec.get("closed_dates", [])))


def _zone(name: Any) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ValueError("needs time_zone, an IANA time zone name such as 'Europe/Berlin'")
    shown = repr(name) if len(name) <= 64 else f"{name[:60]!r}…"
    if name == "localtime":  # the host's /etc/localtime, not a zone name
        raise ValueError(f"time_zone {shown} is not an IANA time zone name such as 'Europe/Berlin'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"time_zone {shown} is not a known IANA time zone (such as 'Europe/Berlin' or "
            "'America/New_York')"
        ) from None


def _weekly(weekly: Mapping[str, Any]) -> tuple[tuple[Range, ...], ...]:
    unknown = set(weekly) - set(DAYS)
    if unknown:
        raise ValueError(
            f"weekly has unknown days: {', '.join(sorted(map(repr, unknown)))} "
            f"(days are {', '.join(DAYS)})"
        )
    days = []
    for day in DAYS:
        texts = weekly.get(day, [])
        if not isinstance(texts, list):
            raise ValueError(f'weekly {day} must be a list of ranges such as ["08:00-12:00"]')
        ranges = sorted(_range(day, text) for text in texts)
        for (start, end), (next_start, next_end) in pairwise(ranges):
            if next_start < end:
                raise ValueError(
                    f"weekly {day} ranges {_text(start, end)!r} and "
                    f"{_text(next_start, next_end)!r} overlap"
                )
        days.append(tuple(ranges))
    return tuple(days)


def _range(day: str, text: Any) -> Range:
    match = _RANGE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"weekly {day} range {text!r} must be 'HH:MM-HH:MM', 24-hour, such as '08:00-12:30'"
        )
    start_hour, start_minute, end_hour, end_minute = map(int, match.groups())
    if start_hour > 23 or start_minute > 59:
        raise ValueError(f"weekly {day} range {text!r} starts at no time of day (00:00 to 23:59)")
    if end_hour > 24 or end_minute > 59 or (end_hour == 24 and end_minute):
        raise ValueError(f"weekly {day} range {text!r} ends at no time of day (00:01 to 24:00)")
    start, end = start_hour * 60 + start_minute, end_hour * 60 + end_minute
    if end == start:
        raise ValueError(f"weekly {day} range {text!r} is empty")
    if end < start:
        following = DAYS[(DAYS.index(day) + 1) % 7]
        raise ValueError(
            f"weekly {day} range {text!r} crosses midnight: write it as "
            f"'{_clock(start)}-24:00' on {day} and '00:00-{_clock(end)}' on {following}"
        )
    return start, end


def _closed_dates(values: Any) -> frozenset[date]:
    if not isinstance(values, list):
        raise ValueError('closed_dates must be a list of dates such as ["2026-12-25"]')
    dates = set()
    for value in values:
        try:
            if not isinstance(value, str) or not _DATE.fullmatch(value):
                raise ValueError
            dates.add(date.fromisoformat(value))
        except ValueError:
            raise ValueError(
                f"closed_dates entry {value!r} must be a date 'YYYY-MM-DD' such as '2026-12-25'"
            ) from None
    return frozenset(dates)


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _text(start: int, end: int) -> str:
    return f"{_clock(start)}-{_clock(end)}"
