"""``TimerSet.derive`` against the formulas of the ``timers`` module docstring, worked out
here the long way for every unit, with pauses, extensions and each kind of warning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from complaintflow.compiled import Compiled
from complaintflow.rules.loader import load_rules
from complaintflow.rules.model import WarningDef
from complaintflow.storage.hashing import iso
from complaintflow.timers import CompiledTimer, Ledger

COMPILED = Compiled.build(load_rules(None))
TIMERS = COMPILED.timers
CALENDAR = COMPILED.calendars[TIMERS.default_calendar or ""]
START = datetime(2026, 3, 2, 1, 7, 30, 250, tzinfo=UTC)  # a Monday morning, local
PAUSE = [iso(START + timedelta(hours=2)), iso(START + timedelta(hours=27)), "state:x"]
WARNINGS = [WarningDef(fraction=0.5), WarningDef(fraction=1.0),
            WarningDef(before={"minutes": 15}), WarningDef(fraction=0.8)]


def timer(count_start_day: bool = False) -> CompiledTimer:
    base = TIMERS.by_id["whole_complaint"]
    definition = base.definition.model_copy(
        update={"id": f"derived_{count_start_day}", "warnings": WARNINGS,
                "count_start_day": count_start_day})
    return CompiledTimer(definition, None, (), base.unit, base.amount)


def expected(unit: str, total: int, paused: bool, count_start_day: bool
             ) -> tuple[datetime, list[tuple[int, datetime]]]:
    """The breach and the warnings, from the documented conventions."""
    if unit in ("minutes", "hours", "days"):
        span = {"minutes": timedelta(minutes=1), "hours": timedelta(hours=1),
                "days": timedelta(days=1)}[unit]
        pause = timedelta(hours=25) if paused else timedelta()

        def at(scale: float) -> datetime:
            return START + span * (total * scale) + pause
    else:
        pause_min = int(CALENDAR.between(START + timedelta(hours=2),
                                         START + timedelta(hours=27)).total_seconds() // 60) \
            if paused else 0

        def at(scale: float) -> datetime:
            if unit == "working_days":
                end = CALENDAR.add_working_days(START, total, count_start_day).instant
                if scale == 1.0:
                    return CALENDAR.add_working(end, pause_min).instant
                minutes = CALENDAR.between(START, end).total_seconds()
                return CALENDAR.add_working(START, int(minutes * scale // 60)
                                            + pause_min).instant
            per = 60 if unit == "working_hours" else 1
            return CALENDAR.add_working(START, int(total * scale * per) + pause_min).instant
    breach = at(1.0)
    warnings = [(1, at(0.5)), (2, breach), (3, breach - timedelta(minutes=15)), (4, at(0.8))]
    return breach, [(i, w) for i, w in warnings if w >= START]


@pytest.mark.parametrize("unit", ["minutes", "hours", "days", "working_minutes",
                                  "working_hours", "working_days"])
@pytest.mark.parametrize("paused", [False, True])
@pytest.mark.parametrize("extended", [False, True])
@pytest.mark.parametrize("count_start_day", [False, True])
def test_derive_follows_the_documented_formulas(unit: str, paused: bool, extended: bool,
                                                count_start_day: bool) -> None:
    amount = 7
    ledger = Ledger(START, unit, amount, TIMERS.default_calendar, "v",
                    [list(PAUSE)] if paused else [],
                    [{"amount": 2}] if extended else [])
    due = TIMERS.derive(timer(count_start_day), ledger, CALENDAR)
    breach, warnings = expected(unit, amount + (2 if extended else 0), paused,
                                count_start_day)
    assert (due.breach, list(due.warnings)) == (breach, warnings)


def test_a_paused_ledger_has_nothing_due() -> None:
    ledger = Ledger(START, "hours", 3, None, "v", [[iso(START), None, "state:x"]])
    due = TIMERS.derive(timer(), ledger, None)
    assert (due.breach, due.warnings) == (None, ())


def test_the_local_date_of_the_last_instant_is_remembered_exactly() -> None:
    """``_local_date`` keeps the last instant asked for: another one is converted
    afresh."""
    late = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)  # already 3 March in Shanghai
    assert CALENDAR._local_date(late).isoformat() == "2026-03-03"
    assert CALENDAR._local_date(START).isoformat() == "2026-03-02"
    assert CALENDAR._local_date(late).isoformat() == "2026-03-03"
