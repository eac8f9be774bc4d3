"""``Engine.recompute_timers`` on both backends: a clock moves to new calendar data even when
its due instant does not move right now (paused, or the change lies after its due instant),
so that a later resume or extension counts on the new calendar; replay follows the move.
Years without official data: refused under ``beyond: error``, provisional deadlines turned
official once the year's data is added."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from complaintflow import Engine, Scheduler, SimulatedClock, parse_rules
from complaintflow.rules.loader import default_rules_text
from complaintflow.storage.tables import deadlines as D
from complaintflow.worktime import NoOfficialData
from tests.integration.test_replay_audit import assert_same
from tests.integration.test_timers import (
    CLERK,
    HOLIDAY_WEDNESDAY,
    PAUSING,
    consent,
    local,
    outbox_rows,
    parse_due,
    view,
    with_calendar_lines,
)
from tests.support import CS, complaint_fields

ANCHOR = "    official_through: 2026\n"


def pausing_rules(extra: str = "") -> str:
    if not extra:
        return PAUSING
    return PAUSING.replace(ANCHOR, "    overrides:\n" + extra + ANCHOR)


def open_engine(url: str, clock: SimulatedClock, text: str) -> Engine:
    return Engine.open(url, rules=parse_rules(text, "pausing.yaml"), clock=clock)


def with_holiday(engine: Engine, url: str, clock: SimulatedClock) -> Engine:
    """``engine`` reopened on a new rule version that makes Wednesday 03-04 a holiday."""
    engine.close()
    return open_engine(url, clock, pausing_rules(HOLIDAY_WEDNESDAY))


def assert_replay_is_live(engine: Engine, number: str, where: str) -> None:
    """Replayed as of now (remaining working time included) == what the engine shows."""
    replayed = engine.replay(number, at=engine.now(), actor=CLERK)
    assert_same(replayed, engine.get(number, CLERK), engine.timers(number), where)


# -- a clock whose due instant does not move now ---------------------------------------------


def test_a_clock_paused_during_the_recompute_resumes_on_the_new_calendar(
    db_url: str, clock: SimulatedClock
) -> None:
    engine = open_engine(db_url, clock, pausing_rules())
    try:
        number = engine.submit({"note": "x"}, CLERK).number  # Monday 09:00
        clock.set(local(3, 2, 10))
        engine.fire(number, "wait", CLERK)  # 1 of 12 working hours used
        clock.set(local(3, 2, 11))
        engine = with_holiday(engine, db_url, clock)
        report = engine.recompute_timers()
        # nothing is due while paused, but the clock now counts on the new calendar: one
        # event says so (the elapsed-time clock "reply" does not count on a calendar)
        assert [(r["number"], r["timer"], r["due_at"], r["previous_due_at"]) for r in report] == [
            (number, "answer", None, None)
        ]
        assert report[0]["calendar_version"] == engine.rules.version
        [event] = [e for e in engine.history(number) if e.type == "deadline_recomputed"]
        assert event.payload["calendar_version"] == engine.rules.version
        assert event.payload["due_at"] is None
        assert_replay_is_live(engine, number, "after the recompute")
        assert engine.recompute_timers() == []  # idempotent
        clock.set(local(3, 3, 9))  # paused 7 working hours: 11 h left from Tuesday 09:00
        engine.fire(number, "resume", CLERK)
        # Tuesday 09:00-17:30 is 7.5 h, 3.5 h more on Thursday (Wednesday is now a holiday)
        assert view(engine, number, "answer").due_at == local(3, 5, 12)
        resumed = engine.history(number)[-1].payload["timers"]["resumed"]
        assert {t["timer"]: parse_due(t["due_at"]) for t in resumed}["answer"] == local(3, 5, 12)
        assert engine.recompute_timers() == []  # nothing left to move
        assert view(engine, number, "answer").due_at == local(3, 5, 12)
        assert_replay_is_live(engine, number, "after the resume")
        deep = engine.verify(deep=True)
        assert deep.ok, deep.findings
        clock.set(local(3, 4, 10))  # on the holiday: 3.5 working hours left, none counted today
        assert view(engine, number, "answer").remaining == timedelta(hours=3, minutes=30)
        assert_replay_is_live(engine, number, "on the holiday")
    finally:
        engine.close()


def test_a_running_clock_extended_after_the_recompute_counts_on_the_new_calendar(
    db_url: str, clock: SimulatedClock
) -> None:
    engine = open_engine(db_url, clock, pausing_rules())
    try:
        number = engine.submit({"note": "x"}, CLERK).number  # Monday 09:00
        assert view(engine, number, "answer").due_at == local(3, 3, 14)
        clock.set(local(3, 2, 10))
        # the holiday lies after the due instant: the deadline stays, the calendar moves
        engine = with_holiday(engine, db_url, clock)
        report = engine.recompute_timers()
        assert [(r["timer"], parse_due(r["due_at"])) for r in report] == [
            ("answer", local(3, 3, 14))
        ]
        assert report[0]["previous_due_at"] == report[0]["due_at"]
        assert view(engine, number, "answer").due_at == local(3, 3, 14)
        assert_replay_is_live(engine, number, "after the recompute")
        clock.set(local(3, 2, 11))
        engine.extend_timer(
            number, "answer", CLERK, 8, consent(local(3, 2, 10, 30)), reason="等待客户样品"
        )
        # Tuesday 14:00 + 8 working hours: 3.5 h on Tuesday, Wednesday off, 4.5 h on Thursday
        # (the old calendar would give Wednesday 14:00)
        assert view(engine, number, "answer").due_at == local(3, 5, 14)
        assert_replay_is_live(engine, number, "after the extension")
        deep = engine.verify(deep=True)
        assert deep.ok, deep.findings
    finally:
        engine.close()


def test_a_running_clock_paused_after_the_recompute_resumes_on_the_new_calendar(
    db_url: str, clock: SimulatedClock
) -> None:
    engine = open_engine(db_url, clock, pausing_rules())
    try:
        number = engine.submit({"note": "x"}, CLERK).number  # Monday 09:00, due Tuesday 14:00
        clock.set(local(3, 2, 9, 30))
        engine = with_holiday(engine, db_url, clock)
        assert [r["timer"] for r in engine.recompute_timers()] == ["answer"]
        clock.set(local(3, 2, 10))
        engine.fire(number, "wait", CLERK)
        clock.set(local(3, 3, 9))
        engine.fire(number, "resume", CLERK)  # 11 h left: Tuesday 7.5 h, Thursday 3.5 h
        assert view(engine, number, "answer").due_at == local(3, 5, 12)
        assert_replay_is_live(engine, number, "after the resume")
    finally:
        engine.close()


# -- years without official data ------------------------------------------------------------

#: the office closes from Monday 2026-12-21 to the end of the year
YEAR_END_CLOSED = "".join(
    f"      - {{date: 2026-12-{day}, kind: holiday, note: 年末停工}}\n"
    for day in (21, 22, 23, 24, 25, 28, 29, 30, 31)
)


def stored(engine: Engine, numbers: list[str]) -> tuple[Any, ...]:
    """Everything a recompute could change: complaints, histories, clocks, deadlines."""
    with engine.database.connect() as conn:
        deadlines = list(conn.execute(sa.select(D).order_by(D.c.id)).all())
    return (
        [engine.get(n) for n in numbers],
        [engine.history(n) for n in numbers],
        [engine.timers(n) for n in numbers],
        deadlines,
        outbox_rows(engine),
    )


def test_a_recompute_needing_a_year_without_data_under_beyond_error_changes_nothing(
    db_url: str, clock: SimulatedClock
) -> None:
    strict = default_rules_text().replace("beyond: provisional", "beyond: error")
    clock.set(local(11, 16, 9))
    engine = Engine.open(db_url, rules=parse_rules(strict, "strict.yaml"), clock=clock)
    try:
        early = engine.submit(complaint_fields(), CS).number  # all clocks end in 2026
        clock.set(local(12, 1, 9))
        late = engine.submit(complaint_fields(), CS).number
        assert view(engine, late, "whole_complaint").due_at == local(12, 22, 17, 30)
        numbers = [early, late]
        clock.set(local(12, 2, 9))
        Scheduler(engine).tick()  # the short clocks of both have breached
        engine.close()
        closed = strict.replace(ANCHOR, "    overrides:\n" + YEAR_END_CLOSED + ANCHOR)
        engine = Engine.open(db_url, rules=parse_rules(closed, "closed.yaml"), clock=clock)
        before = stored(engine, numbers)
        # the first complaint's working-time clocks would move (processed first); the second
        # one's 15th working day now lies in 2027, a year without official data
        with pytest.raises(NoOfficialData) as info:
            engine.recompute_timers()
        assert (info.value.year, info.value.official_through) == (2027, 2026)
        assert info.value.calendar_id == "office"
        assert stored(engine, numbers) == before
        deep = engine.verify(deep=True)
        assert deep.ok, deep.findings
    finally:
        engine.close()


def test_a_provisional_deadline_becomes_official_when_the_years_data_is_added(
    engine: Engine, db_url: str, clock: SimulatedClock
) -> None:
    clock.set(local(12, 21, 9))
    number = engine.submit(complaint_fields(), CS).number
    whole = view(engine, number, "whole_complaint")
    # weekdays only in 2027: 2027-01-01 counts as a working day
    assert (whole.due_at, whole.provisional) == (local(1, 11, 17, 30, year=2027), True)
    events = len(engine.history(number))
    clock.set(local(12, 22, 9))
    new_year = "      - {date: 2027-01-01, kind: holiday, note: 元旦 (国务院办公厅通知)}\n"
    text = with_calendar_lines("    overrides:\n" + new_year).replace(
        "official_through: 2026", "official_through: 2027"
    )
    engine.close()
    with Engine.open(db_url, rules=parse_rules(text, "2027.yaml"), clock=clock) as second:
        report = second.recompute_timers()
        [change] = [r for r in report if r["timer"] == "whole_complaint"]
        assert parse_due(change["previous_due_at"]) == local(1, 11, 17, 30, year=2027)
        assert parse_due(change["due_at"]) == local(1, 12, 17, 30, year=2027)
        assert (change["previous_provisional"], change["provisional"]) == (True, False)
        whole = view(second, number, "whole_complaint")
        assert (whole.due_at, whole.provisional) == (local(1, 12, 17, 30, year=2027), False)
        recomputed = [
            e
            for e in second.history(number)[events:]
            if e.type == "deadline_recomputed" and e.payload["timer"] == "whole_complaint"
        ]
        assert len(recomputed) == 1
        assert recomputed[0].payload["provisional"] is False
        assert recomputed[0].payload["previous_provisional"] is True
        assert recomputed[0].payload["calendar_version"] == second.rules.version
        replayed = second.replay(number, at=second.now(), actor=CS)
        assert_same(replayed, second.get(number, CS), second.timers(number), "recomputed")
        assert second.recompute_timers() == []
        Scheduler(second).tick()  # the registration clock (Monday 11:00) has breached
        deep = second.verify(deep=True)
        assert deep.ok, deep.findings
