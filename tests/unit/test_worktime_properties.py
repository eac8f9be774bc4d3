"""Property tests of complaintflow.worktime against generated calendars.

300 cases per property, and 2,000 for the agreement with the brute-force reference (21-31 s
measured on a shared two-core machine). Run more cases with
``COMPLAINTFLOW_TORTURE_EXAMPLES=20000``.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
from hypothesis import given, settings
from hypothesis import strategies as st

from complaintflow.worktime import CalendarSpec, DayOverride, WorkingCalendar, WorkInterval

EXAMPLES = int(os.environ.get("COMPLAINTFLOW_TORTURE_EXAMPLES", "300"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None)
#: the brute-force agreement runs thousands of cases in CI; the variable only adds more
BRUTE_FORCE_SETTINGS = settings(max_examples=max(2000, EXAMPLES), deadline=None)

ZONES = ["Asia/Shanghai", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "UTC"]
MINUTE = timedelta(minutes=1)
ONE_DAY = timedelta(days=1)
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
SPAN_MINUTES = 2 * 365 * 24 * 60  # 2025-01-01 .. 2026-12-31
# Brute force walks at most this many real minutes.
BRUTE_CAP = 4 * 24 * 60
# Chinese holiday blocks and year ends (UTC midnights).
CN_SPOTS = [
    datetime(y, m, d, tzinfo=UTC)
    for y, m, d in [
        (2025, 1, 28), (2025, 5, 1), (2025, 10, 1), (2025, 12, 31),
        (2026, 2, 15), (2026, 5, 1), (2026, 10, 1), (2026, 12, 28),
    ]
]  # fmt: skip


def transitions(zone: str) -> list[datetime]:
    """UTC hours in 2025-2026 at which the zone's offset changes (DST transitions)."""
    tz, out = ZoneInfo(zone), []
    t = EPOCH
    offset = t.astimezone(tz).utcoffset()
    while t.year < 2027:
        t += timedelta(hours=1)
        if t.astimezone(tz).utcoffset() != offset:
            offset = t.astimezone(tz).utcoffset()
            out.append(t)
    return out


HOT_SPOTS = {zone: transitions(zone) + CN_SPOTS for zone in ZONES}
DST_ZONES = [zone for zone in ZONES if len(HOT_SPOTS[zone]) > len(CN_SPOTS)]
# Interval boundaries: any minute of the day (1440 = 24:00) or, one time in five, 01:00-04:00
# to hit DST gaps and repeated hours (New York/Berlin 02:00-03:00, Lord Howe 01:30-02:30).
BOUNDARY = st.integers(0, 1800).map(lambda v: v if v <= 1440 else 60 + (v - 1441) % 181)
NIGHT_BOUNDARY = st.one_of(st.integers(0, 1440), st.integers(60, 240))


def minute_time(m: int) -> time:
    return time(0) if m == 1440 else time(m // 60, m % 60)


@st.composite
def day_intervals(draw: st.DrawFn, night: bool = False) -> tuple[WorkInterval, ...]:
    """1-3 disjoint intervals on minute boundaries; 1440 is written 00:00 (= 24:00).

    ``night``: boundaries fall between 01:00 and 04:00 half the time.
    """
    k = draw(st.integers(1, 3))
    boundary = NIGHT_BOUNDARY if night else BOUNDARY
    points = sorted(draw(st.lists(boundary, min_size=2 * k, max_size=2 * k, unique=True)))
    return tuple(
        WorkInterval(minute_time(points[2 * i]), minute_time(points[2 * i + 1])) for i in range(k)
    )


@st.composite
def starts(draw: st.DrawFn, zone: str) -> datetime:
    """Minute-aligned, uniform over 2025-2026 or a few days before a hot spot of the zone."""
    if draw(st.booleans()):
        return EPOCH + draw(st.integers(0, SPAN_MINUTES)) * MINUTE
    spot = draw(st.sampled_from(HOT_SPOTS[zone]))
    return spot + draw(st.integers(-4 * 1440, 1440)) * MINUTE


@dataclass(frozen=True)
class Case:
    spec: CalendarSpec
    start: datetime

    @property
    def calendar(self) -> WorkingCalendar:
        return WorkingCalendar(self.spec)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    zone = draw(st.sampled_from(ZONES))
    start = draw(starts(zone))
    country = draw(st.sampled_from([None, "CN"]))
    weekdays = draw(st.sets(st.integers(0, 6), min_size=1, max_size=7))
    if country and not weekdays & {0, 1, 2, 3, 4}:
        weekdays.add(draw(st.integers(0, 4)))  # else guessed later years may have no work
    weekly = {d: draw(day_intervals()) for d in sorted(weekdays)}
    makeup = draw(st.one_of(st.just(()), day_intervals()))
    override_dates = draw(st.sets(st.integers(-2, 8), max_size=4))
    overrides = []
    for offset in sorted(override_dates):
        kind = draw(st.sampled_from(["holiday", "workday", "hours"]))
        intervals = draw(day_intervals()) if kind == "hours" else ()
        when = start.date() + offset * ONE_DAY
        overrides.append(DayOverride(when, kind, intervals))  # type: ignore[arg-type]
    official_through = draw(st.sampled_from([None, 2025, 2026])) if country else None
    spec = CalendarSpec(
        id="generated",
        timezone=zone,
        weekly=weekly,
        country=country,
        overrides=tuple(overrides),
        official_through=official_through,
        beyond="provisional",
        makeup_hours=makeup,
    )
    return Case(spec, start)


@st.composite
def transition_cases(draw: st.DrawFn) -> Case:
    """A DST zone, a start shortly before or after a transition, the transition date worked."""
    zone = draw(st.sampled_from(DST_ZONES))
    moment = draw(st.sampled_from(HOT_SPOTS[zone][:4]))  # the zone's 2025/2026 transitions
    day = moment.astimezone(ZoneInfo(zone)).date()
    weekly = {d: draw(day_intervals()) for d in draw(st.sets(st.integers(0, 6), min_size=1))}
    overrides = (DayOverride(day, "hours", draw(day_intervals(night=True))),)
    spec = CalendarSpec("dst", zone, weekly, country=None, overrides=overrides)
    return Case(spec, moment + draw(st.integers(-1440, 600)) * MINUTE)


# --- reference implementation: walks UTC minutes ---------------------------------------------

_CN = holidays.country_holidays("CN", years=range(2024, 2029))


class Reference:
    """Independent, slow model: is each UTC minute inside a local working interval?"""

    def __init__(self, spec: CalendarSpec) -> None:
        self.spec = spec
        self.zone = ZoneInfo(spec.timezone)
        self.overrides = {ov.date: ov for ov in spec.overrides}
        self.bounds: dict[date, list[tuple[int, int]]] = {}

    def makeup(self) -> tuple[WorkInterval, ...]:
        if self.spec.makeup_hours:
            return self.spec.makeup_hours
        for weekday in range(7):
            if self.spec.weekly.get(weekday):
                return self.spec.weekly[weekday]
        raise AssertionError("no hours")

    def local_hours(self, d: date) -> tuple[WorkInterval, ...]:
        weekly = self.spec.weekly.get(d.weekday(), ())
        ov = self.overrides.get(d)
        if ov is not None:
            return {"holiday": (), "hours": ov.intervals}.get(ov.kind, weekly or self.makeup())
        through = self.spec.official_through
        if self.spec.country is None or (through is not None and d.year > through):
            return weekly
        if not _CN.is_working_day(d):
            return ()
        return self.makeup() if d.weekday() >= 5 else weekly

    def epoch_minute(self, d: date, t: time) -> int:
        local = datetime(d.year, d.month, d.day, t.hour, t.minute, tzinfo=self.zone)  # fold=0
        return int(local.timestamp()) // 60

    def day_bounds(self, d: date) -> list[tuple[int, int]]:
        if d not in self.bounds:
            out = []
            for iv in self.local_hours(d):
                end_day = d + ONE_DAY if iv.end == time(0) else d
                out.append((self.epoch_minute(d, iv.start), self.epoch_minute(end_day, iv.end)))
            self.bounds[d] = out
        return self.bounds[d]

    def provisional(self, start: datetime, result: datetime) -> bool:
        """Was any date from the day before the start to the result's date guessed?"""
        through = self.spec.official_through
        if self.spec.country is None or through is None or result == start:
            return False
        d = datetime.fromtimestamp(start.timestamp(), self.zone).date() - ONE_DAY
        last = datetime.fromtimestamp((result - MINUTE).timestamp(), self.zone).date()
        while d <= last:
            if d.year > through and d not in self.overrides:
                return True
            d += ONE_DAY
        return False

    def working_minute(self, u: int) -> bool:
        """Is the minute starting at epoch minute ``u`` working time?"""
        d = datetime.fromtimestamp(u * 60, self.zone).date()  # local wall date of the minute
        return any(
            s <= u < e for day in (d - ONE_DAY, d, d + ONE_DAY) for s, e in self.day_bounds(day)
        )

    def walk(
        self, start: datetime, minutes: int, cap: int = BRUTE_CAP
    ) -> tuple[datetime | None, int]:
        """(instant after ``minutes`` working minutes or None, working minutes in the cap)."""
        u0 = int(start.timestamp()) // 60
        count = 0
        if minutes == 0:
            return start, 0
        for u in range(u0, u0 + cap):
            if self.working_minute(u):
                count += 1
                if count == minutes:
                    return datetime.fromtimestamp((u + 1) * 60, UTC), count
        return None, count


def epoch_minute(t: datetime) -> int:
    return int(t.timestamp()) // 60


# --- properties ---------------------------------------------------------------------------------


@SETTINGS
@given(case=cases(), minutes=st.integers(0, 5000))
def test_between_inverts_add(case: Case, minutes: int) -> None:
    cal = case.calendar
    result = cal.add_working(case.start, minutes)
    assert result.instant.tzinfo is UTC
    assert result.instant >= case.start
    assert cal.between(case.start, result.instant) == minutes * MINUTE
    assert cal.between(result.instant, case.start) == -minutes * MINUTE


@SETTINGS
@given(case=cases(), a=st.integers(0, 5000), b=st.integers(0, 5000))
def test_add_is_monotonic(case: Case, a: int, b: int) -> None:
    cal = case.calendar
    a, b = sorted((a, b))
    first, second = cal.add_working(case.start, a), cal.add_working(case.start, b)
    assert first.instant <= second.instant
    if a < b:
        assert first.instant < second.instant
        assert cal.add_working(first.instant, b - a).instant == second.instant
    assert not first.provisional or second.provisional


@SETTINGS
@given(case=cases(), minutes=st.integers(0, 5000))
def test_result_is_inside_or_at_end_of_an_interval(case: Case, minutes: int) -> None:
    """d > 0: some working interval (s, e) has s < result <= e. d == 0: result == start."""
    cal = case.calendar
    x = cal.add_working(case.start, minutes).instant
    if minutes == 0:
        assert x == case.start
        return
    local = cal.to_local(x).date()
    spans = [iv for d in (local - ONE_DAY, local) for iv in cal.working_intervals(d)]
    assert any(s < x <= e for s, e in spans)
    assert cal.is_working_instant(x - MINUTE)
    opening = cal.next_working_instant(case.start)
    assert opening >= case.start
    assert cal.is_working_instant(opening)
    assert x >= opening + minutes * MINUTE


@BRUTE_FORCE_SETTINGS
@given(
    case=cases(),
    minutes=st.integers(0, 2000),
    probes=st.lists(st.integers(0, BRUTE_CAP - 1), max_size=20),
)
def test_agrees_with_brute_force(case: Case, minutes: int, probes: list[int]) -> None:
    cal = case.calendar
    ref = Reference(case.spec)
    expected, counted = ref.walk(case.start, minutes)
    result = cal.add_working(case.start, minutes)
    if expected is None:  # beyond the brute-force horizon
        horizon = case.start + BRUTE_CAP * MINUTE
        assert result.instant > horizon
        assert cal.between(case.start, horizon) == counted * MINUTE
    else:
        assert result.instant == expected
        assert result.provisional == ref.provisional(case.start, expected)
    u0 = int(case.start.timestamp()) // 60
    for p in probes:
        instant = datetime.fromtimestamp((u0 + p) * 60, UTC)
        assert cal.is_working_instant(instant) == ref.working_minute(u0 + p), instant
        if ref.working_minute(u0 + p):
            assert cal.next_working_instant(instant) == instant
    first = cal.to_local(case.start).date()
    for day in (first + k * ONE_DAY for k in range(-1, 7)):
        spans = cal.working_intervals(day)
        assert all(s < e for s, e in spans)
        assert all(e1 < s2 for (_, e1), (s2, _) in itertools.pairwise(spans))
        minutes_of = {u for s, e in spans for u in range(epoch_minute(s), epoch_minute(e))}
        assert minutes_of == {u for s, e in ref.day_bounds(day) for u in range(s, e)}
        assert cal.is_working_day(day) == bool(minutes_of)


@SETTINGS
@given(case=cases(), n=st.integers(0, 25), count_start_day=st.booleans())
def test_working_days(case: Case, n: int, count_start_day: bool) -> None:
    cal = case.calendar
    result = cal.add_working_days(case.start, n, count_start_day)
    if n == 0:
        assert result.instant == case.start
        return
    start_day = cal.to_local(case.start).date()
    end_day = cal.to_local(result.instant - MINUTE).date()
    # the deadline is the end of the last interval of a working date ...
    assert cal.working_intervals(end_day)[-1][1] == result.instant
    assert result.instant > case.start
    # ... which is the n-th working date counted as documented
    counted = 0
    d = start_day + ONE_DAY
    while d <= end_day:
        counted += cal.is_working_day(d)
        d += ONE_DAY
    intervals = cal.working_intervals(start_day)
    if count_start_day and intervals and case.start < intervals[-1][1]:
        counted += 1
    assert counted == n


@SETTINGS
@given(case=cases(), a=st.integers(0, 20000), b=st.integers(0, 20000))
def test_between_is_additive(case: Case, a: int, b: int) -> None:
    cal = case.calendar
    t0 = case.start
    t1, t2 = t0 + a * MINUTE, t0 + a * MINUTE + b * MINUTE
    assert cal.between(t0, t2) == cal.between(t0, t1) + cal.between(t1, t2)
    assert timedelta(0) <= cal.between(t0, t1) <= t1 - t0


@SETTINGS
@given(case=transition_cases(), minutes=st.integers(0, 600))
def test_dst_transition_days_agree_with_brute_force(case: Case, minutes: int) -> None:
    cal = case.calendar
    ref = Reference(case.spec)
    cap = 2 * 1440
    u0 = epoch_minute(case.start)
    working = [ref.working_minute(u) for u in range(u0, u0 + cap)]
    result = cal.add_working(case.start, minutes).instant
    counts = itertools.accumulate(working)
    done = next((i for i, c in enumerate(counts) if working[i] and c == minutes), None)
    if minutes == 0:
        assert result == case.start
    elif done is not None:
        assert result == case.start + (done + 1) * MINUTE
    else:
        assert result > case.start + cap * MINUTE
    assert cal.between(case.start, case.start + cap * MINUTE) == sum(working) * MINUTE
    day = case.spec.overrides[0].date
    spans = cal.working_intervals(day)
    assert all(s < e for s, e in spans)
    assert all(e1 < s2 for (_, e1), (s2, _) in itertools.pairwise(spans))
    minutes_of = {u for s, e in spans for u in range(epoch_minute(s), epoch_minute(e))}
    assert minutes_of == {u for s, e in ref.day_bounds(day) for u in range(s, e)}
