"""The working-time caches answer exactly what a fresh calendar computes.

``add_working_days`` is remembered per (start date, start day counted, n) and the whole days
of ``working_days_span`` per (midnight, end): starts at other instants of the same date, in
any order, must still get the answer of a calendar that has cached nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from complaintflow.errors import CalendarError
from complaintflow.worktime import WorkingCalendar
from tests.unit.test_worktime_properties import SETTINGS, Case, cases

MINUTE = timedelta(minutes=1)


def outcome(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except CalendarError as exc:  # NoOfficialData and friends: the same error, every time
        return type(exc), str(exc)


@SETTINGS
@given(case=cases(), offsets=st.lists(st.integers(-1500, 1500), min_size=1, max_size=6),
       n=st.integers(0, 12), count_start_day=st.booleans())
def test_remembered_working_days_equal_a_fresh_calendar(
        case: Case, offsets: list[int], n: int, count_start_day: bool) -> None:
    shared = case.calendar
    for offset in offsets:  # several instants, mostly on the same few dates
        start: datetime = case.start + offset * MINUTE
        fresh = WorkingCalendar(case.spec)
        expected = outcome(fresh.add_working_days, start, n, count_start_day)
        assert outcome(shared.add_working_days, start, n, count_start_day) == expected
        span = outcome(shared.working_days_span, start, n, count_start_day)
        if isinstance(expected, tuple):
            assert span == expected
        else:
            assert span == (expected, WorkingCalendar(case.spec).between(start, expected.instant))
