"""Unit tests of complaintflow.worktime: conventions, validation, overrides, errors."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from complaintflow.errors import CalendarError
from complaintflow.worktime import (
    CalendarSpec,
    CalendarSpecError,
    DayOverride,
    NaiveDatetimeError,
    NegativeDurationError,
    NoWorkingTime,
    WorkingCalendar,
    WorkInterval,
    WorkResult,
    add_elapsed,
)

SH = ZoneInfo("Asia/Shanghai")
OFFICE = (WorkInterval(time(8, 30), time(12, 0)), WorkInterval(time(13, 0), time(17, 30)))
WEEKDAYS = {d: OFFICE for d in range(5)}


def iv(a: str, b: str) -> WorkInterval:
    return WorkInterval(time.fromisoformat(a), time.fromisoformat(b))


def sh(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=SH)


def plain(**kwargs: object) -> WorkingCalendar:
    """Mon-Fri office in Shanghai without a country (no holidays)."""
    args: dict[str, object] = {"id": "plain", "timezone": "Asia/Shanghai", "weekly": WEEKDAYS}
    args.update(kwargs)
    args.setdefault("country", None)
    return WorkingCalendar(CalendarSpec(**args))  # type: ignore[arg-type]


def spec_problems(**kwargs: object) -> list[str]:
    args: dict[str, object] = {"id": "bad", "timezone": "Asia/Shanghai", "weekly": WEEKDAYS}
    args.update(kwargs)
    with pytest.raises(CalendarSpecError) as info:
        CalendarSpec(**args)  # type: ignore[arg-type]
    assert isinstance(info.value, CalendarError)
    assert info.value.calendar_id == "bad"
    return [p.code for p in info.value.problems]


# 2025-11-03 is a Monday (no Chinese holiday nearby).
MON = (2025, 11, 3)


class TestArithmetic:
    def test_lunch_break_is_skipped(self) -> None:
        cal = plain()
        assert cal.add_working(sh(*MON, 11, 30), 60).instant == sh(*MON, 13, 30)
        assert cal.between(sh(*MON, 11, 0), sh(*MON, 14, 0)) == timedelta(hours=2)
        assert not cal.is_working_instant(sh(*MON, 12, 30))
        assert cal.next_working_instant(sh(*MON, 12, 30)) == sh(*MON, 13, 0)

    def test_before_opening_counts_from_opening(self) -> None:
        cal = plain()
        assert cal.add_working(sh(*MON, 7, 0), 30).instant == sh(*MON, 9, 0)
        assert cal.next_working_instant(sh(*MON, 7, 0)) == sh(*MON, 8, 30)
        assert cal.between(sh(*MON, 7, 0), sh(*MON, 9, 0)) == timedelta(minutes=30)

    def test_after_closing_counts_from_next_opening(self) -> None:
        cal = plain()
        assert cal.add_working(sh(*MON, 18, 0), 30).instant == sh(2025, 11, 4, 9, 0)
        # Friday evening -> Monday morning
        assert cal.add_working(sh(2025, 11, 7, 20, 0), 30).instant == sh(2025, 11, 10, 9, 0)
        assert cal.between(sh(*MON, 17, 0), sh(2025, 11, 4, 9, 0)) == timedelta(minutes=60)

    def test_deadline_exactly_at_interval_end_stays(self) -> None:
        cal = plain()
        assert cal.add_working(sh(*MON, 11, 0), 60).instant == sh(*MON, 12, 0)
        assert cal.add_working(sh(*MON, 17, 0), 30).instant == sh(*MON, 17, 30)
        assert cal.add_working(sh(*MON, 8, 30), 8 * 60).instant == sh(*MON, 17, 30)
        # one more minute rolls over
        assert cal.add_working(sh(*MON, 11, 0), 61).instant == sh(*MON, 13, 1)
        # the end itself is not working time (intervals are half-open)
        assert not cal.is_working_instant(sh(*MON, 12, 0))
        assert cal.is_working_instant(sh(*MON, 11, 59))
        assert cal.is_working_instant(sh(*MON, 8, 30))
        assert cal.next_working_instant(sh(*MON, 17, 30)) == sh(2025, 11, 4, 8, 30)

    def test_zero_duration_returns_start_unchanged(self) -> None:
        cal = plain()
        for start in (sh(*MON, 10, 0), sh(*MON, 12, 30), sh(2025, 11, 8, 3, 17)):  # Sat
            result = cal.add_working(start, 0)
            assert result == WorkResult(start, provisional=False)
            assert result.instant.tzinfo is UTC
            assert cal.add_working_days(start, 0).instant == start

    def test_negative_durations_are_refused(self) -> None:
        cal = plain()
        calls: list[Callable[[], object]] = [
            lambda: cal.add_working(sh(*MON, 10), -1),
            lambda: cal.add_working_hours(sh(*MON, 10), -1),
            lambda: cal.add_working_days(sh(*MON, 10), -1),
        ]
        for call in calls:
            with pytest.raises(NegativeDurationError) as info:
                call()
            assert isinstance(info.value, CalendarError)
            assert isinstance(info.value, ValueError)

    def test_hours_are_sixty_minutes(self) -> None:
        cal = plain()
        assert cal.add_working_hours(sh(*MON, 9), 8) == cal.add_working(sh(*MON, 9), 480)
        assert cal.add_working_hours(sh(*MON, 9), 8).instant == sh(2025, 11, 4, 9, 0)

    def test_results_are_utc_and_inputs_may_use_any_offset(self) -> None:
        cal = plain()
        start = datetime(2025, 11, 3, 2, 0, tzinfo=timezone(timedelta(hours=1)))  # 09:00 CST
        result = cal.add_working(start, 30)
        assert result.instant.tzinfo is UTC
        assert result.instant == sh(*MON, 9, 30)
        assert cal.to_local(result.instant) == sh(*MON, 9, 30)
        assert cal.to_local(result.instant).tzinfo == SH
        assert cal.next_working_instant(start).tzinfo is UTC

    def test_between_is_antisymmetric(self) -> None:
        cal = plain()
        a, b = sh(*MON, 10), sh(2025, 11, 5, 15)
        assert cal.between(a, b) == timedelta(hours=6.5 + 8 + 5.5)
        assert cal.between(b, a) == -cal.between(a, b)
        assert cal.between(a, a) == timedelta(0)

    def test_many_working_days_and_minutes_agree(self) -> None:
        cal = plain()
        start = sh(*MON, 17, 30)
        by_days = cal.add_working_days(start, 30)
        by_minutes = cal.add_working(start, 30 * 8 * 60)
        assert by_days == by_minutes
        assert by_days.instant == sh(2025, 12, 15, 17, 30)

    def test_working_intervals_are_utc(self) -> None:
        cal = plain()
        assert cal.working_intervals(date(*MON)) == [
            (datetime(2025, 11, 3, 0, 30, tzinfo=UTC), datetime(2025, 11, 3, 4, 0, tzinfo=UTC)),
            (datetime(2025, 11, 3, 5, 0, tzinfo=UTC), datetime(2025, 11, 3, 9, 30, tzinfo=UTC)),
        ]
        assert cal.working_intervals(date(2025, 11, 8)) == []
        assert cal.is_working_day(date(*MON))
        assert not cal.is_working_day(date(2025, 11, 8))

    def test_end_midnight_means_end_of_day(self) -> None:
        cal = plain(weekly={0: (iv("22:00", "00:00"),), 1: (iv("00:00", "02:00"),)})
        start = sh(*MON, 23, 0)
        assert cal.add_working(start, 60).instant == sh(2025, 11, 4, 0, 0)
        # the two days touch: 22:00 Monday + 4 h is 02:00 Tuesday
        assert cal.add_working(sh(*MON, 22, 0), 240).instant == sh(2025, 11, 4, 2, 0)
        assert cal.is_working_instant(sh(2025, 11, 4, 0, 0))

    def test_whole_day_interval(self) -> None:
        cal = plain(weekly={d: (iv("00:00", "00:00"),) for d in range(7)})
        assert cal.between(sh(*MON), sh(2025, 11, 10)) == timedelta(days=7)


class TestWorkingDays:
    def test_start_day_not_counted_by_default(self) -> None:
        cal = plain()
        assert cal.add_working_days(sh(*MON, 10), 1).instant == sh(2025, 11, 4, 17, 30)
        assert cal.add_working_days(sh(*MON, 10), 5).instant == sh(2025, 11, 10, 17, 30)

    def test_count_start_day(self) -> None:
        cal = plain()
        start = sh(*MON, 10)
        assert cal.add_working_days(start, 1, count_start_day=True).instant == sh(*MON, 17, 30)
        assert cal.add_working_days(start, 2, count_start_day=True).instant == sh(
            2025, 11, 4, 17, 30
        )

    def test_count_start_day_after_closing_does_not_count(self) -> None:
        cal = plain()
        start = sh(*MON, 18)
        assert cal.add_working_days(start, 1, count_start_day=True).instant == sh(
            2025, 11, 4, 17, 30
        )

    def test_non_working_start_counts_following_days(self) -> None:
        cal = plain()
        saturday = sh(2025, 11, 8, 10)
        for flag in (False, True):
            result = cal.add_working_days(saturday, 1, count_start_day=flag)
            assert result.instant == sh(2025, 11, 10, 17, 30)
            assert cal.add_working_days(saturday, 2, count_start_day=flag).instant == sh(
                2025, 11, 11, 17, 30
            )


class TestOverrides:
    def test_holiday_override(self) -> None:
        cal = plain(overrides=(DayOverride(date(2025, 11, 4), "holiday", note="company day"),))
        assert cal.working_intervals(date(2025, 11, 4)) == []
        assert cal.add_working(sh(*MON, 17), 60).instant == sh(2025, 11, 5, 9, 0)

    def test_workday_override_on_weekend_uses_makeup_hours(self) -> None:
        cal = plain(overrides=(DayOverride(date(2025, 11, 8), "workday"),))
        assert cal.add_working(sh(2025, 11, 7, 17), 60).instant == sh(2025, 11, 8, 9, 0)
        assert cal.between(sh(2025, 11, 8), sh(2025, 11, 9)) == timedelta(hours=8)

    def test_explicit_makeup_hours(self) -> None:
        cal = plain(
            overrides=(DayOverride(date(2025, 11, 8), "workday"),),
            makeup_hours=(iv("10:00", "11:00"),),
        )
        assert cal.between(sh(2025, 11, 8), sh(2025, 11, 9)) == timedelta(hours=1)
        assert cal.between(sh(*MON), sh(2025, 11, 4)) == timedelta(hours=8)  # weekly kept

    def test_hours_override(self) -> None:
        cal = plain(overrides=(DayOverride(date(*MON), "hours", (iv("09:00", "10:00"),)),))
        assert cal.add_working(sh(*MON, 8), 61).instant == sh(2025, 11, 4, 8, 31)

    def test_makeup_day_uses_weekday_hours_with_country(self) -> None:
        # 2025-10-11 (Saturday) is an official make-up day: Monday's hours, not Saturday's.
        cal = WorkingCalendar(
            CalendarSpec("cn", "Asia/Shanghai", {**WEEKDAYS, 5: (iv("09:00", "10:00"),)})
        )
        assert cal.between(sh(2025, 10, 11), sh(2025, 10, 12)) == timedelta(hours=8)
        assert cal.between(sh(2025, 10, 18), sh(2025, 10, 19)) == timedelta(0)  # normal Sat

    def test_country_none_uses_weekly_only(self) -> None:
        cal = plain(weekly={5: (iv("09:00", "12:00"),)})
        assert cal.between(sh(2025, 10, 1), sh(2025, 10, 8)) == timedelta(hours=3)  # Sat 4th


class TestNaive:
    def test_naive_datetimes_are_refused_everywhere(self) -> None:
        cal = plain()
        naive = datetime(2025, 11, 3, 10, 0)
        calls: list[Callable[[], object]] = [
            lambda: cal.add_working(naive, 10),
            lambda: cal.add_working(naive, 0),
            lambda: cal.add_working_hours(naive, 1),
            lambda: cal.add_working_days(naive, 1),
            lambda: cal.between(naive, sh(*MON, 12)),
            lambda: cal.between(sh(*MON, 12), naive),
            lambda: cal.next_working_instant(naive),
            lambda: cal.is_working_instant(naive),
            lambda: cal.to_local(naive),
            lambda: add_elapsed(naive, timedelta(days=1)),
        ]
        for call in calls:
            with pytest.raises(NaiveDatetimeError) as info:
                call()
            assert isinstance(info.value, CalendarError)
            assert isinstance(info.value, ValueError)
            assert "naive" in str(info.value)


class TestSpecValidation:
    def test_unknown_timezone(self) -> None:
        assert spec_problems(timezone="Asia/Beijing") == ["unknown_timezone"]
        assert spec_problems(timezone="") == ["unknown_timezone"]

    def test_unknown_country(self) -> None:
        assert spec_problems(country="XX") == ["unknown_country"]

    def test_reversed_interval(self) -> None:
        assert spec_problems(weekly={0: (iv("12:00", "09:00"),)}) == ["reversed_interval"]

    def test_crossing_midnight_is_refused(self) -> None:
        with pytest.raises(CalendarSpecError) as info:
            CalendarSpec("bad", "Asia/Shanghai", {4: (iv("22:00", "02:00"),)})
        (problem,) = info.value.problems
        assert problem.code == "reversed_interval"
        assert problem.path == "weekly[4][0]"
        assert "midnight" in problem.message

    def test_zero_length_interval(self) -> None:
        assert spec_problems(weekly={0: (iv("09:00", "09:00"),)}) == ["empty_interval"]

    def test_overlapping_intervals(self) -> None:
        weekly = {2: (iv("13:00", "17:00"), iv("08:00", "13:30"))}
        with pytest.raises(CalendarSpecError) as info:
            CalendarSpec("bad", "Asia/Shanghai", weekly)
        (problem,) = info.value.problems
        assert problem.code == "overlapping_intervals"
        assert problem.path == "weekly[2][0]"

    def test_touching_intervals_are_fine(self) -> None:
        CalendarSpec("ok", "Asia/Shanghai", {0: (iv("08:00", "12:00"), iv("12:00", "13:00"))})

    def test_duplicate_override(self) -> None:
        overrides = (
            DayOverride(date(2025, 5, 6), "holiday"),
            DayOverride(date(2025, 5, 6), "workday"),
        )
        with pytest.raises(CalendarSpecError) as info:
            CalendarSpec("bad", "Asia/Shanghai", WEEKDAYS, overrides=overrides)
        (problem,) = info.value.problems
        assert (problem.code, problem.path) == ("duplicate_override", "overrides[1]")
        assert "overrides[0]" in problem.message

    def test_override_shape(self) -> None:
        assert spec_problems(overrides=(DayOverride(date(2025, 5, 6), "hours"),)) == [
            "missing_intervals"
        ]
        ov = DayOverride(date(2025, 5, 6), "holiday", (iv("09:00", "10:00"),))
        assert spec_problems(overrides=(ov,)) == ["unexpected_intervals"]
        ov = DayOverride(date(2025, 5, 6), "vacation")  # type: ignore[arg-type]
        assert spec_problems(overrides=(ov,)) == ["bad_override_kind"]
        ov = DayOverride(date(2025, 5, 6), "hours", (iv("10:00", "09:00"),))
        assert spec_problems(overrides=(ov,)) == ["reversed_interval"]

    def test_other_problems(self) -> None:
        assert spec_problems(weekly={7: OFFICE}) == ["bad_weekday"]
        assert spec_problems(weekly={}) == ["no_hours"]
        assert spec_problems(beyond="guess") == ["bad_policy"]
        assert spec_problems(makeup_hours=(iv("09:00", "08:00"),)) == ["reversed_interval"]
        aware = WorkInterval(time(9, tzinfo=UTC), time(10))
        assert spec_problems(weekly={0: (aware,)}) == ["aware_time"]

    def test_all_problems_reported_at_once(self) -> None:
        with pytest.raises(CalendarSpecError) as info:
            CalendarSpec(
                "bad",
                "Mars/Olympus",
                {0: (iv("12:00", "09:00"),), 1: (iv("09:00", "09:00"),)},
            )
        assert [p.path for p in info.value.problems] == ["timezone", "weekly[0][0]", "weekly[1][0]"]
        assert "Mars/Olympus" in str(info.value)
        assert "'bad'" in str(info.value)

    def test_spec_is_frozen_and_normalised(self) -> None:
        spec = CalendarSpec("ok", "UTC", {0: [iv("09:00", "10:00")]}, country=None)  # type: ignore[dict-item]
        assert spec.weekly[0] == (iv("09:00", "10:00"),)
        with pytest.raises(AttributeError):
            spec.id = "other"  # type: ignore[misc]


class TestMisc:
    def test_no_working_time_is_an_error_not_a_hang(self) -> None:
        # Sunday hours only: with a country, only official make-up days work (the last one
        # known is Saturday 2026-10-10); the `holidays` guesses for later years have none.
        cal = WorkingCalendar(CalendarSpec("sun", "Asia/Shanghai", {6: OFFICE}))
        assert cal.is_working_day(date(2026, 10, 10))
        assert not cal.is_working_day(date(2026, 10, 11))
        with pytest.raises(NoWorkingTime) as info:
            cal.add_working(sh(2026, 10, 11), 60)
        assert isinstance(info.value, CalendarError)

    def test_add_elapsed_is_absolute_time(self) -> None:
        start = sh(2025, 9, 30, 16, 30)
        assert add_elapsed(start, timedelta(days=3)) == sh(2025, 10, 3, 16, 30)
        assert add_elapsed(start, timedelta(days=3)).tzinfo is UTC

    def test_repr(self) -> None:
        assert "plain" in repr(plain())
