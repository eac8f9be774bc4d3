"""Working-time arithmetic: deadlines counted in working minutes and working days.

A calendar is declared by a :class:`CalendarSpec` (plain frozen dataclasses; the YAML layer
builds them) and answered by a :class:`WorkingCalendar`. All arithmetic is our own: it walks
days and intervals (never minutes) and caches the working intervals of each date.

Which dates are working dates, and with which hours
---------------------------------------------------
1. An override for the date wins: ``holiday`` = no work; ``hours`` = exactly its intervals;
   ``workday`` = the weekday's weekly hours, or the make-up hours if that weekday has none.
2. With ``country`` (default ``"CN"``) the ``holidays`` package decides, through
   ``is_working_day(date)`` (never ``date in holidays``, which is wrong for weekend days
   inside a holiday block, e.g. 2026-02-15). A working date that is a weekend day of the
   country is an official make-up day (调休, e.g. Saturday 2025-10-11) and uses the make-up
   hours; any other working date uses the weekly hours of its weekday (none = no work).
   Consequence: with a country, weekly Saturday/Sunday hours are never used.
3. Without a country a date works the weekly hours of its weekday.
4. Make-up hours are ``makeup_hours`` or, if empty, the intervals of the first weekday
   (Monday first) that has intervals.
5. ``official_through``: for dates in a later year ``holidays`` silently guesses (no make-up
   days), so ``beyond="error"`` raises :class:`NoOfficialData`, ``beyond="provisional"``
   computes with rule 3 (weekly hours, overrides still apply) and flags results
   ``provisional``. Only consulted when a country is set; override dates never need it.
   Dates are looked up lazily, so the error comes only if an answer needs such a date. A
   result is provisional if any date from the day before the start through the date of
   the result was computed this way.

Intervals and time zones
------------------------
* ``WorkInterval(start, end)`` is local wall time, half-open ``[start, end)``. ``end=00:00``
  means 24:00 (end of the day); ``00:00-00:00`` is the whole day. An interval may not cross
  midnight (``22:00-02:00`` is refused as reversed: split it over two weekdays).
* Each boundary is turned into an instant with ``zoneinfo`` and ``fold=0``: a boundary in a
  spring-forward gap moves forward by the gap (New York 2026-03-08 02:30 -> 03:30 EDT); a
  repeated fall-back time means its first occurrence. Intervals are then compared in UTC,
  so an interval spanning a transition holds the real elapsed time (00:00-06:00 is 5 h on
  spring-forward day, 7 h on fall-back day). An interval left empty by the gap is dropped;
  intervals overlapping after conversion are merged.

Conventions
-----------
* Every datetime argument must be aware (naive -> :class:`NaiveDatetimeError`); results
  are UTC (use :meth:`WorkingCalendar.to_local` for display).
* A deadline landing exactly at the end of an interval stays there (no roll to next opening).
* Adding zero (minutes or days) returns the start itself, unchanged (same instant, in UTC),
  even outside working time; nothing is looked up, so it is never provisional.
* A start outside working time counts from the next opening.
* Negative durations raise :class:`NegativeDurationError`.
* ``between(a, b)`` is the working time in ``[a, b)``; if ``b < a`` it is ``-between(b, a)``.
* N working days: the deadline is the end of the last interval of the Nth working date after
  the start date. The start date counts as day 1 only with ``count_start_day=True`` and only
  if it is a working date with working time left after the start. From a non-working start,
  the following working dates count 1..N.
* A working date is a date with at least one working interval.
* Plain calendar budgets (``days: 3`` of elapsed time): :func:`add_elapsed`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from types import MappingProxyType
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

from complaintflow.errors import CalendarError

__all__ = [
    "CalendarSpec",
    "CalendarSpecError",
    "DayOverride",
    "NaiveDatetimeError",
    "NegativeDurationError",
    "NoOfficialData",
    "NoWorkingTime",
    "SpecProblem",
    "WorkInterval",
    "WorkResult",
    "WorkingCalendar",
    "add_elapsed",
]

ONE_DAY = timedelta(days=1)
MIDNIGHT = time(0, 0)
#: Consecutive dates without working time after which a search gives up.
MAX_IDLE_DAYS = 1100

OverrideKind = Literal["holiday", "workday", "hours"]
BeyondPolicy = Literal["error", "provisional"]


# --- errors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecProblem:
    """One problem in a calendar spec; ``path`` is e.g. ``weekly[0][1]`` or ``overrides[2]``."""

    path: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class CalendarSpecError(CalendarError):
    """The calendar spec is invalid; ``problems`` lists every problem found."""

    def __init__(self, calendar_id: str, problems: Sequence[SpecProblem]) -> None:
        self.calendar_id = calendar_id
        self.problems: tuple[SpecProblem, ...] = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"invalid calendar {calendar_id!r}:\n{lines}")


class NoOfficialData(CalendarError):
    """A date lies in a year after the last year with an official schedule."""

    def __init__(self, calendar_id: str, country: str, year: int, official_through: int) -> None:
        self.calendar_id = calendar_id
        self.country = country
        self.year = year
        self.official_through = official_through
        super().__init__(
            f"calendar {calendar_id!r}: no official {country} working-day schedule for {year} "
            f"(known through {official_through}); add overrides or use beyond='provisional'"
        )


class NoWorkingTime(CalendarError):
    """No working time was found within ``MAX_IDLE_DAYS`` consecutive dates."""

    def __init__(self, calendar_id: str, since: date) -> None:
        self.calendar_id = calendar_id
        self.since = since
        super().__init__(
            f"calendar {calendar_id!r}: no working time in {MAX_IDLE_DAYS} days from {since}"
        )


class NaiveDatetimeError(CalendarError, ValueError):
    """A datetime without time zone was given; working time needs real instants."""

    def __init__(self, argument: str, value: datetime) -> None:
        self.argument = argument
        self.value = value
        super().__init__(f"{argument}={value.isoformat()} is naive; give an aware datetime")


class NegativeDurationError(CalendarError, ValueError):
    """A negative number of working minutes or days was requested."""

    def __init__(self, amount: int, unit: str) -> None:
        self.amount = amount
        self.unit = unit
        super().__init__(f"cannot add {amount} working {unit}: must be >= 0")


# --- spec -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkInterval:
    """Local wall-time interval ``[start, end)``; ``end=00:00`` means 24:00."""

    start: time
    end: time

    @property
    def start_minute(self) -> float:
        return _minute_of_day(self.start)

    @property
    def end_minute(self) -> float:
        return 24 * 60 if self.end == MIDNIGHT else _minute_of_day(self.end)

    def __str__(self) -> str:
        end = "24:00" if self.end == MIDNIGHT else self.end.isoformat("minutes")
        return f"{self.start.isoformat('minutes')}-{end}"


@dataclass(frozen=True)
class DayOverride:
    """Replace what a single date would otherwise be (see module docstring, rule 1)."""

    date: _dt.date
    kind: OverrideKind
    intervals: tuple[WorkInterval, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class CalendarSpec:
    """A working calendar. ``weekly`` maps weekday (0=Monday .. 6=Sunday) to intervals.

    Validated on construction: every problem is reported at once in a
    :class:`CalendarSpecError`.
    """

    id: str
    timezone: str
    weekly: Mapping[int, tuple[WorkInterval, ...]]
    country: str | None = "CN"
    overrides: tuple[DayOverride, ...] = ()
    official_through: int | None = None
    beyond: BeyondPolicy = "error"
    makeup_hours: tuple[WorkInterval, ...] = ()

    def __post_init__(self) -> None:
        weekly = {day: tuple(ivs) for day, ivs in self.weekly.items()}
        object.__setattr__(self, "weekly", MappingProxyType(weekly))
        object.__setattr__(self, "overrides", tuple(self.overrides))
        object.__setattr__(self, "makeup_hours", tuple(self.makeup_hours))
        problems = list(self._problems())
        if problems:
            raise CalendarSpecError(self.id, problems)

    def _problems(self) -> Iterator[SpecProblem]:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            yield SpecProblem(
                "timezone", "unknown_timezone", f"unknown time zone {self.timezone!r}"
            )
        if self.country is not None and not _known_country(self.country):
            yield SpecProblem(
                "country", "unknown_country", f"no holiday data for country {self.country!r}"
            )
        if self.beyond not in ("error", "provisional"):
            msg = f"beyond must be 'error' or 'provisional', not {self.beyond!r}"
            yield SpecProblem("beyond", "bad_policy", msg)
        for day, intervals in self.weekly.items():
            if day not in range(7):
                msg = f"weekday must be 0 (Monday) .. 6 (Sunday), not {day!r}"
                yield SpecProblem(f"weekly[{day}]", "bad_weekday", msg)
            yield from _interval_problems(f"weekly[{day}]", intervals)
        yield from _interval_problems("makeup_hours", self.makeup_hours)
        if not self.makeup_hours and not any(self.weekly.values()):
            yield SpecProblem("weekly", "no_hours", "no weekday has working intervals")
        seen: dict[date, int] = {}
        for i, ov in enumerate(self.overrides):
            path = f"overrides[{i}]"
            if ov.date in seen:
                msg = f"second override for {ov.date} (first is overrides[{seen[ov.date]}])"
                yield SpecProblem(path, "duplicate_override", msg)
            seen.setdefault(ov.date, i)
            if ov.kind not in ("holiday", "workday", "hours"):
                msg = f"kind must be 'holiday', 'workday' or 'hours', not {ov.kind!r}"
                yield SpecProblem(path, "bad_override_kind", msg)
            elif ov.kind == "hours" and not ov.intervals:
                msg = "kind 'hours' needs intervals (use kind 'holiday' for no work)"
                yield SpecProblem(path, "missing_intervals", msg)
            elif ov.kind != "hours" and ov.intervals:
                msg = f"kind {ov.kind!r} takes no intervals (use kind 'hours')"
                yield SpecProblem(path, "unexpected_intervals", msg)
            yield from _interval_problems(f"{path}.intervals", ov.intervals)


def _minute_of_day(t: time) -> float:
    return t.hour * 60 + t.minute + (t.second + t.microsecond / 1e6) / 60


def _interval_problems(path: str, intervals: Sequence[WorkInterval]) -> Iterator[SpecProblem]:
    valid: list[tuple[int, WorkInterval]] = []
    for i, iv in enumerate(intervals):
        where = f"{path}[{i}]"
        if iv.start.tzinfo is not None or iv.end.tzinfo is not None:
            yield SpecProblem(where, "aware_time", f"{iv}: times must be local wall times")
        elif iv.start_minute == iv.end_minute:
            yield SpecProblem(where, "empty_interval", f"{iv} is empty (start equals end)")
        elif iv.end_minute < iv.start_minute:
            msg = (
                f"{iv}: end is before start; intervals may not cross midnight "
                "(split it and use end 00:00 for 24:00)"
            )
            yield SpecProblem(where, "reversed_interval", msg)
        else:
            valid.append((i, iv))
    valid.sort(key=lambda item: item[1].start_minute)
    for (i, a), (j, b) in itertools.pairwise(valid):
        if b.start_minute < a.end_minute:
            msg = f"{b} overlaps {a} ({path}[{i}])"
            yield SpecProblem(f"{path}[{j}]", "overlapping_intervals", msg)


# --- country data ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _known_country(country: str) -> bool:
    try:
        holidays.country_holidays(country)
    except NotImplementedError:
        return False
    return True


@functools.lru_cache(maxsize=128)
def _country_year(country: str, year: int) -> tuple[frozenset[date], frozenset[date]]:
    """(working dates, make-up dates) of ``year`` per the ``holidays`` package.

    Neighbouring years are loaded too: a make-up day may belong to the next year's holiday.
    """
    cal = holidays.country_holidays(country, years=range(year - 1, year + 2))
    weekend = frozenset(int(w) for w in cal.weekend)
    working: set[date] = set()
    makeup: set[date] = set()
    d = date(year, 1, 1)
    while d.year == year:
        if bool(cal.is_working_day(d)):
            working.add(d)
            if d.weekday() in weekend:
                makeup.add(d)
        d += ONE_DAY
    return frozenset(working), frozenset(makeup)


# --- calendar -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkResult:
    """A computed instant (UTC) and whether it rests on guessed (provisional) dates."""

    instant: datetime
    provisional: bool = False


@dataclass(frozen=True)
class _Day:
    intervals: tuple[tuple[datetime, datetime], ...]  # UTC, sorted, disjoint, non-empty
    provisional: bool
    total: timedelta  # the working time of all its intervals


class WorkingCalendar:
    """Answers working-time questions for one :class:`CalendarSpec`.

    Per-date interval lists, and the ends of N working days from a date, are cached on the
    instance (plain dicts: safe to share between threads in CPython; a race only computes
    a date twice).
    """

    def __init__(self, spec: CalendarSpec) -> None:
        self.spec = spec
        self._zone = ZoneInfo(spec.timezone)
        self._overrides = {ov.date: ov for ov in spec.overrides}
        first = next((spec.weekly[d] for d in range(7) if spec.weekly.get(d)), ())
        self._makeup: tuple[WorkInterval, ...] = spec.makeup_hours or first
        self._days: dict[date, _Day] = {}
        self._midnights: dict[date, datetime] = {}
        #: add_working_days by (start date, start day counted, n)
        self._ends: dict[tuple[date, int, int], WorkResult] = {}
        #: working time from a midnight to the end of a working day (working_days_span)
        self._spans: dict[tuple[datetime, datetime], timedelta] = {}
        #: the last instant _local_date converted, and its date: a deadline and its warnings,
        #: and the clocks one event starts, ask for the same instant several times
        self._last_local: tuple[datetime | None, date | None] = (None, None)

    def __repr__(self) -> str:
        return f"WorkingCalendar({self.spec.id!r}, {self.spec.timezone!r})"

    # -- public API --

    @property
    def zone(self) -> ZoneInfo:
        return self._zone

    def to_local(self, t: datetime) -> datetime:
        """The same instant in the calendar's time zone, for display."""
        return _aware(t, "t").astimezone(self._zone)

    def working_intervals(self, d: date) -> list[tuple[datetime, datetime]]:
        """Working intervals of local date ``d`` as UTC ``[start, end)`` pairs."""
        return list(self._day(d).intervals)

    def is_working_day(self, d: date) -> bool:
        return bool(self._day(d).intervals)

    def is_provisional(self, d: date) -> bool:
        """True if ``d`` is computed without official data (``beyond='provisional'``)."""
        return self._day(d).provisional

    def is_working_instant(self, t: datetime) -> bool:
        t = _aware(t, "t")
        d = self._local_date(t)
        return any(s <= t < e for day in (d - ONE_DAY, d) for s, e in self._day(day).intervals)

    def next_working_instant(self, t: datetime) -> datetime:
        """``t`` itself (in UTC) if it is working time, else the next opening."""
        start, _, _ = next(self._stream(_aware(t, "t")))
        return start

    def add_working(self, start: datetime, minutes: int) -> WorkResult:
        """The instant after ``minutes`` working minutes counted from ``start``."""
        start = _aware(start, "start")
        if minutes < 0:
            raise NegativeDurationError(minutes, "minutes")
        remaining = timedelta(minutes=minutes)
        if not remaining:
            return WorkResult(start)
        # _stream inlined (this is the hot path of every working-time deadline)
        d = self._local_date(start) - ONE_DAY
        last_end, provisional, idle = start, False, 0
        while True:
            day = self._day(d)
            provisional = provisional or day.provisional
            intervals = day.intervals
            if intervals and remaining > day.total and intervals[0][0] >= last_end:
                # a whole day after the start, not the day the count ends in: its intervals
                # all count, none ends it
                remaining -= day.total
                idle, last_end = 0, intervals[-1][1]
                d += ONE_DAY
                continue
            idle += 1
            for s, e in intervals:
                if s < last_end:
                    s = last_end
                if s < e:
                    idle, last_end = 0, e
                    if remaining <= e - s:
                        return WorkResult(s + remaining, provisional)
                    remaining -= e - s
            if idle > MAX_IDLE_DAYS:
                raise NoWorkingTime(self.spec.id, d - (idle - 1) * ONE_DAY)
            d += ONE_DAY

    def add_working_hours(self, start: datetime, hours: int) -> WorkResult:
        if hours < 0:
            raise NegativeDurationError(hours, "hours")
        return self.add_working(start, hours * 60)

    def add_working_days(
        self, start: datetime, n: int, count_start_day: bool = False
    ) -> WorkResult:
        """End of the ``n``-th working date after the start date (see module docstring)."""
        start = _aware(start, "start")
        if n < 0:
            raise NegativeDurationError(n, "days")
        if n == 0:
            return WorkResult(start)
        d = self._local_date(start)
        day = self._day(d)
        counted = 0
        if count_start_day and day.intervals and start < day.intervals[-1][1]:
            counted = 1
        # the answer depends on the start's date, not its instant: every clock started on
        # that date with the same count shares it (a deadline and each of its warnings,
        # the clocks one event starts, all complaints received that day)
        key = (d, counted, n)
        found = self._ends.get(key)
        if found is not None:
            return found
        provisional = day.provisional
        idle = 0
        while counted < n:
            d += ONE_DAY
            day = self._day(d)
            provisional = provisional or day.provisional
            if day.intervals:
                counted, idle = counted + 1, 0
            else:
                idle += 1
                if idle > MAX_IDLE_DAYS:
                    raise NoWorkingTime(self.spec.id, d - idle * ONE_DAY)
        found = self._ends[key] = WorkResult(day.intervals[-1][1], provisional)
        return found

    def working_days_span(
        self, start: datetime, n: int, count_start_day: bool = False
    ) -> tuple[WorkResult, timedelta]:
        """``add_working_days(start, n, count_start_day)`` and the working time from
        ``start`` to it (``between(start, end)``), the whole days of which are computed once
        per start date."""
        end = self.add_working_days(start, n, count_start_day)
        start = _aware(start, "start")
        d = self._local_date(start)
        next_midnight = self._midnight(d + ONE_DAY)
        if end.instant <= next_midnight:
            return end, self.between(start, end.instant)
        key = (next_midnight, end.instant)
        whole = self._spans.get(key)
        if whole is None:
            whole = self._spans[key] = self.between(next_midnight, end.instant)
        return end, self.between(start, next_midnight) + whole

    def between(self, a: datetime, b: datetime) -> timedelta:
        """Working time in ``[a, b)``; negative (``-between(b, a)``) if ``b < a``."""
        a, b = _aware(a, "a"), _aware(b, "b")
        if b < a:
            return -self.between(b, a)
        total = timedelta(0)
        # _stream(a, until=b) inlined
        d = self._local_date(a) - ONE_DAY
        last_end, idle = a, 0
        while self._midnight(d) < b:
            day = self._day(d)
            intervals = day.intervals
            if intervals and intervals[0][0] >= last_end and intervals[-1][1] <= b:
                # a whole day inside [a, b)
                total += day.total
                idle, last_end = 0, intervals[-1][1]
                d += ONE_DAY
                continue
            idle += 1
            for s, e in intervals:
                if s < last_end:
                    s = last_end
                if s < e:
                    idle, last_end = 0, e
                    if s >= b:
                        return total
                    total += (e if e < b else b) - s
            if idle > MAX_IDLE_DAYS:
                raise NoWorkingTime(self.spec.id, d - (idle - 1) * ONE_DAY)
            d += ONE_DAY
        return total

    # -- internals --

    def _local_date(self, t: datetime) -> date:
        last, found = self._last_local
        if last is t and found is not None:
            return found
        d = t.astimezone(self._zone).date()
        self._last_local = (t, d)
        return d

    def _instant(self, d: date, t: time) -> datetime:
        return datetime.combine(d, t.replace(fold=0), tzinfo=self._zone).astimezone(UTC)

    def _stream(
        self, t: datetime, until: datetime | None = None
    ) -> Iterator[tuple[datetime, datetime, bool]]:
        """Working intervals after ``t``, clipped to start at ``t`` or later, in order.

        Each comes with a flag: was any date consulted so far provisional. Stops (only)
        when ``until`` is given and a date starts at or after it.
        """
        d = self._local_date(t) - ONE_DAY
        last_end, provisional, idle = t, False, 0
        while until is None or self._midnight(d) < until:
            day = self._day(d)
            provisional = provisional or day.provisional
            idle += 1
            for s, e in day.intervals:
                s = max(s, last_end)
                if s < e:
                    idle, last_end = 0, e
                    yield s, e, provisional
            if idle > MAX_IDLE_DAYS:
                raise NoWorkingTime(self.spec.id, d - (idle - 1) * ONE_DAY)
            d += ONE_DAY

    def _midnight(self, d: date) -> datetime:
        """The instant (UTC) local date ``d`` begins, cached like the days."""
        found = self._midnights.get(d)
        if found is None:
            found = self._midnights[d] = self._instant(d, MIDNIGHT)
        return found

    def _day(self, d: date) -> _Day:
        cached = self._days.get(d)
        if cached is None:
            local, provisional = self._local_intervals(d)
            intervals = self._to_utc(d, local)
            cached = _Day(intervals, provisional, sum((e - s for s, e in intervals), timedelta()))
            self._days[d] = cached
        return cached

    def _local_intervals(self, d: date) -> tuple[tuple[WorkInterval, ...], bool]:
        spec = self.spec
        weekly = spec.weekly.get(d.weekday(), ())
        override = self._overrides.get(d)
        if override is not None:
            if override.kind == "holiday":
                return (), False
            if override.kind == "hours":
                return override.intervals, False
            return weekly or self._makeup, False
        if spec.country is None:
            return weekly, False
        if spec.official_through is not None and d.year > spec.official_through:
            if spec.beyond == "provisional":
                return weekly, True
            raise NoOfficialData(spec.id, spec.country, d.year, spec.official_through)
        working, makeup = _country_year(spec.country, d.year)
        if d not in working:
            return (), False
        return (self._makeup if d in makeup else weekly), False

    def _to_utc(
        self, d: date, intervals: Sequence[WorkInterval]
    ) -> tuple[tuple[datetime, datetime], ...]:
        spans: list[tuple[datetime, datetime]] = []
        for iv in intervals:
            start = self._instant(d, iv.start)
            if iv.end == MIDNIGHT:
                end = self._instant(d + ONE_DAY, MIDNIGHT)
            else:
                end = self._instant(d, iv.end)
            if start < end:  # a gap can swallow an interval whole
                spans.append((start, end))
        spans.sort()
        merged: list[tuple[datetime, datetime]] = []
        for s, e in spans:
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
            else:
                merged.append((s, e))
        return tuple(merged)


def _aware(t: datetime, argument: str) -> datetime:
    """``t`` in UTC; refuses naive datetimes."""
    if t.tzinfo is UTC:  # already UTC (every stored or derived instant): nothing to convert
        return t
    if t.tzinfo is None or t.utcoffset() is None:
        raise NaiveDatetimeError(argument, t)
    return t.astimezone(UTC)


def add_elapsed(start: datetime, duration: timedelta) -> datetime:
    """Plain calendar budget: ``start + duration`` in absolute (elapsed) time, in UTC."""
    return _aware(start, "start") + duration
