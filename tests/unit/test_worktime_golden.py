"""Golden cases: official Chinese schedules 2025/2026, official_through policies, DST zones."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest

from complaintflow.worktime import (
    CalendarSpec,
    DayOverride,
    NoOfficialData,
    WorkingCalendar,
    WorkInterval,
    WorkResult,
)

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = (WorkInterval(time(8, 30), time(12, 0)), WorkInterval(time(13, 0), time(17, 30)))
WEEKDAYS = {d: OFFICE for d in range(5)}
CN = holidays.country_holidays("CN", years=range(2024, 2028))


def iv(a: str, b: str) -> WorkInterval:
    return WorkInterval(time.fromisoformat(a), time.fromisoformat(b))


def sh(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=SH)


def utc(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=UTC)


def days(first: str, last: str) -> list[date]:
    d, end, out = date.fromisoformat(first), date.fromisoformat(last), []
    while d <= end:
        out.append(d)
        d += timedelta(days=1)
    return out


@pytest.fixture(scope="module")
def cn() -> WorkingCalendar:
    return WorkingCalendar(
        CalendarSpec("cn-office", "Asia/Shanghai", WEEKDAYS, official_through=2026)
    )


class TestNationalDay2025:
    def test_holidays_data_is_the_official_schedule(self) -> None:
        assert CN.is_working_day(date(2025, 9, 28))  # Sunday, make-up
        assert CN.is_working_day(date(2025, 10, 11))  # Saturday, make-up
        assert not any(CN.is_working_day(d) for d in days("2025-10-01", "2025-10-08"))

    def test_two_hours_across_the_block(self, cn: WorkingCalendar) -> None:
        result = cn.add_working(sh(2025, 9, 30, 16, 30), 120)
        assert result == WorkResult(sh(2025, 10, 9, 9, 30), provisional=False)
        assert cn.to_local(result.instant) == sh(2025, 10, 9, 9, 30)
        assert cn.between(sh(2025, 9, 30, 16, 30), sh(2025, 10, 9, 9, 30)) == timedelta(hours=2)

    def test_makeup_sunday_and_saturday_are_worked(self, cn: WorkingCalendar) -> None:
        # Friday 17:00 + 1 h -> Sunday 2025-09-28 09:00
        assert cn.add_working(sh(2025, 9, 26, 17), 60).instant == sh(2025, 9, 28, 9, 0)
        # Friday 2025-10-10 17:00 + 1 h -> Saturday 2025-10-11 09:00
        assert cn.add_working(sh(2025, 10, 10, 17), 60).instant == sh(2025, 10, 11, 9, 0)
        assert cn.between(sh(2025, 9, 27), sh(2025, 9, 29)) == timedelta(hours=8)
        assert cn.between(sh(2025, 10, 11), sh(2025, 10, 13)) == timedelta(hours=8)
        # the next Saturday is an ordinary weekend day
        assert cn.working_intervals(date(2025, 10, 18)) == []

    def test_working_days_across_the_block(self, cn: WorkingCalendar) -> None:
        start = sh(2025, 9, 30, 10)
        assert cn.add_working_days(start, 1).instant == sh(2025, 10, 9, 17, 30)
        assert cn.add_working_days(start, 2).instant == sh(2025, 10, 10, 17, 30)
        assert cn.add_working_days(start, 3).instant == sh(2025, 10, 11, 17, 30)  # Saturday
        assert cn.add_working_days(start, 4).instant == sh(2025, 10, 13, 17, 30)
        assert cn.add_working_days(start, 1, count_start_day=True).instant == sh(
            2025, 9, 30, 17, 30
        )
        # started inside the block: the following working days count 1..N
        assert cn.add_working_days(sh(2025, 10, 3, 10), 1).instant == sh(2025, 10, 9, 17, 30)


class TestSpringFestival2026:
    def test_holidays_data(self) -> None:
        assert CN.is_working_day(date(2026, 2, 14))  # Saturday, make-up
        assert CN.is_working_day(date(2026, 2, 28))  # Saturday, make-up
        assert not any(CN.is_working_day(d) for d in days("2026-02-15", "2026-02-23"))
        # the trap: a Sunday inside the block is not itself in the holiday dict
        assert date(2026, 2, 15) not in CN

    def test_calendar(self, cn: WorkingCalendar) -> None:
        assert cn.is_working_day(date(2026, 2, 14))
        assert not cn.is_working_day(date(2026, 2, 15))
        assert cn.is_working_day(date(2026, 2, 28))
        assert cn.add_working(sh(2026, 2, 13, 17), 60).instant == sh(2026, 2, 14, 9, 0)
        assert cn.add_working(sh(2026, 2, 14, 17), 60).instant == sh(2026, 2, 24, 9, 0)
        assert cn.add_working(sh(2026, 2, 27, 17), 60).instant == sh(2026, 2, 28, 9, 0)

    def test_working_days_across_the_block(self, cn: WorkingCalendar) -> None:
        start = sh(2026, 2, 13, 11)
        assert cn.add_working_days(start, 1).instant == sh(2026, 2, 14, 17, 30)
        assert cn.add_working_days(start, 2).instant == sh(2026, 2, 24, 17, 30)
        assert cn.add_working_days(start, 6).instant == sh(2026, 2, 28, 17, 30)
        assert cn.add_working_days(start, 7).instant == sh(2026, 3, 2, 17, 30)
        # 15 working days in minutes equal 15 working days
        assert cn.add_working(sh(2026, 2, 13, 17, 30), 15 * 480) == cn.add_working_days(start, 15)


class TestNewYear2026:
    def test_holidays_data(self) -> None:
        # verified against `holidays`: Jan 1-3 off, Sunday Jan 4 is a make-up working day
        assert CN.is_working_day(date(2025, 12, 31))
        assert [CN.is_working_day(d) for d in days("2026-01-01", "2026-01-05")] == [
            False,
            False,
            False,
            True,
            True,
        ]

    def test_year_end(self, cn: WorkingCalendar) -> None:
        result = cn.add_working(sh(2025, 12, 31, 17), 60)
        assert result == WorkResult(sh(2026, 1, 4, 9, 0), provisional=False)
        assert cn.add_working_days(sh(2025, 12, 31, 10), 1).instant == sh(2026, 1, 4, 17, 30)
        assert cn.add_working_days(sh(2025, 12, 31, 10), 2).instant == sh(2026, 1, 5, 17, 30)
        assert cn.between(sh(2025, 12, 31, 17), sh(2026, 1, 5)) == timedelta(hours=8.5)


class TestBeyondOfficialData:
    def test_error_names_the_year(self, cn: WorkingCalendar) -> None:
        # inside 2026 is fine, even on its last evening
        assert cn.add_working(sh(2026, 12, 31, 17), 30).instant == sh(2026, 12, 31, 17, 30)
        assert cn.between(sh(2026, 12, 31, 18), sh(2026, 12, 31, 20)) == timedelta(0)
        with pytest.raises(NoOfficialData) as info:
            cn.add_working(sh(2026, 12, 31, 17), 60)
        assert (info.value.year, info.value.official_through) == (2027, 2026)
        assert info.value.country == "CN"
        assert "2027" in str(info.value)
        with pytest.raises(NoOfficialData):
            cn.working_intervals(date(2027, 3, 1))
        with pytest.raises(NoOfficialData):
            cn.add_working_days(sh(2026, 12, 30, 10), 2)

    def test_override_dates_need_no_official_data(self) -> None:
        cal = WorkingCalendar(
            CalendarSpec(
                "cn",
                "Asia/Shanghai",
                WEEKDAYS,
                official_through=2026,
                overrides=(DayOverride(date(2027, 1, 4), "workday", note="confirmed"),),
            )
        )
        assert len(cal.working_intervals(date(2027, 1, 4))) == 2
        assert not cal.is_provisional(date(2027, 1, 4))

    def test_provisional_uses_weekdays_only(self) -> None:
        cal = WorkingCalendar(
            CalendarSpec(
                "cn",
                "Asia/Shanghai",
                WEEKDAYS,
                official_through=2026,
                beyond="provisional",
                overrides=(DayOverride(date(2027, 1, 4), "holiday"),),
            )
        )
        # 2027-01-01 (New Year's Day, a Friday) counts as a plain weekday
        result = cal.add_working(sh(2026, 12, 31, 17), 60)
        assert result == WorkResult(sh(2027, 1, 1, 9, 0), provisional=True)
        assert cal.is_provisional(date(2027, 1, 1))
        assert not cal.is_provisional(date(2026, 12, 31))
        # the weekend stays off, the override still applies: Friday -> Tuesday
        assert cal.add_working_days(sh(2027, 1, 1, 10), 1) == WorkResult(
            sh(2027, 1, 5, 17, 30), provisional=True
        )
        # a result wholly inside official years is not provisional
        assert cal.add_working(sh(2026, 12, 31, 9), 60) == WorkResult(
            sh(2026, 12, 31, 10, 0), provisional=False
        )

    def test_provisional_ignores_makeup_days_of_guessed_years(self) -> None:
        cal = WorkingCalendar(
            CalendarSpec(
                "cn", "Asia/Shanghai", WEEKDAYS, official_through=2025, beyond="provisional"
            )
        )
        assert not cal.is_working_day(date(2026, 2, 14))  # official make-up day, unknown here
        assert cal.is_working_day(date(2026, 2, 16))  # official holiday, unknown here
        assert cal.add_working(sh(2026, 2, 13, 17), 60) == WorkResult(
            sh(2026, 2, 16, 9, 0), provisional=True
        )


# --- DST ------------------------------------------------------------------------------------


def night_shift(zone: str) -> WorkingCalendar:
    """Works only Sundays 00:00-06:00 local: covers the DST transition hour."""
    return WorkingCalendar(CalendarSpec("night", zone, {6: (iv("00:00", "06:00"),)}, country=None))


def office(zone: str) -> WorkingCalendar:
    nine_to_five = (iv("09:00", "17:00"),)
    return WorkingCalendar(
        CalendarSpec("office", zone, {d: nine_to_five for d in range(5)}, country=None)
    )


class TestDstNewYork:
    def test_spring_forward_sunday_has_five_real_hours(self) -> None:
        cal = night_shift("America/New_York")
        assert cal.working_intervals(date(2026, 3, 8)) == [
            (utc(2026, 3, 8, 5), utc(2026, 3, 8, 10))
        ]
        start = datetime(2026, 3, 8, 0, 0, tzinfo=NY)
        assert cal.add_working(start, 5 * 60).instant == datetime(2026, 3, 8, 6, 0, tzinfo=NY)
        assert cal.add_working(start, 150).instant == datetime(2026, 3, 8, 3, 30, tzinfo=NY)
        assert cal.between(
            datetime(2026, 3, 7, 12, tzinfo=NY), datetime(2026, 3, 8, 12, tzinfo=NY)
        ) == timedelta(hours=5)
        # a full hour more is needed: it lands in the next Sunday
        assert cal.add_working(start, 6 * 60).instant == datetime(2026, 3, 15, 1, 0, tzinfo=NY)

    def test_fall_back_sunday_has_seven_real_hours(self) -> None:
        cal = night_shift("America/New_York")
        assert cal.working_intervals(date(2026, 11, 1)) == [
            (utc(2026, 11, 1, 4), utc(2026, 11, 1, 11))
        ]
        start = datetime(2026, 11, 1, 0, 0, tzinfo=NY)
        assert cal.add_working(start, 7 * 60).instant == utc(2026, 11, 1, 11)
        # 01:30 happens twice; 90 and 150 minutes in are the first and second 01:30
        first = cal.add_working(start, 90).instant
        second = cal.add_working(start, 150).instant
        assert (first, second) == (utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30))
        assert cal.to_local(first).replace(tzinfo=None) == cal.to_local(second).replace(tzinfo=None)
        assert cal.between(start, datetime(2026, 11, 2, tzinfo=NY)) == timedelta(hours=7)

    def test_normal_weekdays_either_side(self) -> None:
        cal = office("America/New_York")
        friday = datetime(2026, 3, 6, 16, 0, tzinfo=NY)  # EST
        assert cal.add_working(friday, 120).instant == datetime(2026, 3, 9, 10, 0, tzinfo=NY)
        assert cal.add_working(friday, 120).instant == utc(2026, 3, 9, 14)  # EDT
        assert cal.between(
            datetime(2026, 3, 6, 9, tzinfo=NY), datetime(2026, 3, 9, 17, tzinfo=NY)
        ) == timedelta(hours=16)
        friday = datetime(2026, 10, 30, 16, 30, tzinfo=NY)  # EDT
        assert cal.add_working(friday, 60).instant == utc(2026, 11, 2, 14, 30)  # 09:30 EST

    def test_boundary_in_the_gap_moves_forward(self) -> None:
        # 02:30 does not exist on 2026-03-08; fold=0 reads it with the old offset: 03:30 EDT
        cal = WorkingCalendar(
            CalendarSpec("gap", "America/New_York", {6: (iv("01:00", "02:30"),)}, country=None)
        )
        assert cal.working_intervals(date(2026, 3, 8)) == [
            (utc(2026, 3, 8, 6), utc(2026, 3, 8, 7, 30))
        ]
        assert cal.is_working_instant(datetime(2026, 3, 8, 3, 15, tzinfo=NY))
        assert not cal.is_working_instant(datetime(2026, 3, 8, 3, 30, tzinfo=NY))
        # a week later the same interval is 1.5 h of plain wall time
        assert cal.working_intervals(date(2026, 3, 15)) == [
            (utc(2026, 3, 15, 5), utc(2026, 3, 15, 6, 30))
        ]

    def test_interval_swallowed_by_the_gap_and_overlap_after_shift(self) -> None:
        weekly = {6: (iv("01:00", "02:30"), iv("03:00", "04:00"), iv("05:00", "05:30"))}
        cal = WorkingCalendar(CalendarSpec("gap", "America/New_York", weekly, country=None))
        # 01:00-02:30 becomes 06:00Z-07:30Z and overlaps 03:00-04:00 EDT (07:00Z-08:00Z)
        assert cal.working_intervals(date(2026, 3, 8)) == [
            (utc(2026, 3, 8, 6), utc(2026, 3, 8, 8)),
            (utc(2026, 3, 8, 9), utc(2026, 3, 8, 9, 30)),
        ]
        cal = WorkingCalendar(
            CalendarSpec("gap", "America/New_York", {6: (iv("02:30", "03:15"),)}, country=None)
        )
        # 02:30 -> 03:30 EDT is after 03:15 EDT: nothing is left
        assert cal.working_intervals(date(2026, 3, 8)) == []
        assert len(cal.working_intervals(date(2026, 3, 15))) == 1

    def test_boundary_in_the_repeated_hour_is_its_first_occurrence(self) -> None:
        cal = WorkingCalendar(
            CalendarSpec("fold", "America/New_York", {6: (iv("01:30", "01:45"),)}, country=None)
        )
        assert cal.working_intervals(date(2026, 11, 1)) == [
            (utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 5, 45))
        ]
        assert cal.is_working_instant(utc(2026, 11, 1, 5, 40))  # 01:40 EDT
        assert not cal.is_working_instant(utc(2026, 11, 1, 6, 40))  # 01:40 EST


class TestDstBerlin:
    def test_spring_forward(self) -> None:
        cal = night_shift("Europe/Berlin")
        assert cal.working_intervals(date(2026, 3, 29)) == [
            (utc(2026, 3, 28, 23), utc(2026, 3, 29, 4))
        ]
        start = datetime(2026, 3, 29, 1, 30, tzinfo=BERLIN)
        assert cal.add_working(start, 60).instant == datetime(2026, 3, 29, 3, 30, tzinfo=BERLIN)

    def test_fall_back(self) -> None:
        cal = night_shift("Europe/Berlin")
        assert cal.working_intervals(date(2026, 10, 25)) == [
            (utc(2026, 10, 24, 22), utc(2026, 10, 25, 5))
        ]
        start = datetime(2026, 10, 25, 0, 0, tzinfo=BERLIN)
        assert cal.add_working(start, 7 * 60).instant == datetime(2026, 10, 25, 6, 0, tzinfo=BERLIN)
        assert cal.add_working(start, 150).instant == utc(2026, 10, 25, 0, 30)  # 02:30 CEST
        assert cal.add_working(start, 210).instant == utc(2026, 10, 25, 1, 30)  # 02:30 CET

    def test_gap_boundary(self) -> None:
        cal = WorkingCalendar(
            CalendarSpec("gap", "Europe/Berlin", {6: (iv("02:30", "05:00"),)}, country=None)
        )
        # 02:30 does not exist: it becomes 03:30 CEST (01:30Z)
        assert cal.working_intervals(date(2026, 3, 29)) == [
            (utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 3))
        ]

    def test_normal_weekdays_either_side(self) -> None:
        cal = office("Europe/Berlin")
        friday = datetime(2026, 3, 27, 16, 0, tzinfo=BERLIN)  # CET
        assert cal.add_working(friday, 120).instant == utc(2026, 3, 30, 8)  # 10:00 CEST
        friday = datetime(2026, 10, 23, 16, 0, tzinfo=BERLIN)  # CEST
        assert cal.add_working(friday, 120).instant == utc(2026, 10, 26, 9)  # 10:00 CET
        assert cal.add_working_days(friday, 1).instant == datetime(
            2026, 10, 26, 17, 0, tzinfo=BERLIN
        )
