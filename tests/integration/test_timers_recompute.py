"""``Engine.recompute_timers`` on both backends: a clock moves to new calendar data even when
its due instant does not move right now (paused, or the change lies after its due instant),
so that a later resume or extension counts on the new calendar; replay follows the move.
Years without official data: refused under ``beyond: error``, provisional deadlines turned
official once the year's data is added."""

from __future__ import annotations

from datetime import timedelta

from complaintflow import Engine, SimulatedClock, parse_rules
from tests.integration.test_replay_audit import assert_same
from tests.integration.test_timers import (
    CLERK,
    HOLIDAY_WEDNESDAY,
    PAUSING,
    consent,
    local,
    parse_due,
    view,
)

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
