"""Extensions are agreed in advance: refused once the clock's due instant has come, also when
the scheduler has not yet recorded the breach (it was down, or has not ticked yet), and
nothing is stored. Both backends."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from complaintflow import Engine, SimulatedClock, TimerRefused, parse_rules
from complaintflow.storage.tables import deadlines as D
from tests.integration.test_timers import (
    CLERK,
    PAUSING,
    consent,
    local,
    outbox_rows,
    view,
)
from tests.support import CS, complaint_fields


def everything(engine: Engine, number: str) -> tuple[Any, ...]:
    """What an extension could change: history, clocks, deadlines, outbox."""
    with engine.database.connect() as conn:
        deadlines = list(conn.execute(sa.select(D).order_by(D.c.id)).all())
    return engine.history(number), engine.timers(number), deadlines, outbox_rows(engine)


def refused(engine: Engine, number: str, timer: str, given_at: datetime) -> TimerRefused:
    before = everything(engine, number)
    with pytest.raises(TimerRefused) as info:
        engine.extend_timer(number, timer, CS, 1, consent(given_at), reason="客户同意延期")
    assert everything(engine, number) == before
    assert info.value.timer == timer
    assert "advance" in info.value.reason
    return info.value


@pytest.mark.parametrize("late", [timedelta(0), timedelta(minutes=30), timedelta(days=3)])
def test_no_extension_once_the_due_instant_has_come_breach_recorded_or_not(
    engine: Engine, clock: SimulatedClock, late: timedelta
) -> None:
    number = engine.submit(complaint_fields(), CS).number  # Monday 09:00
    due = view(engine, number, "first_response").due_at
    assert due == local(3, 2, 10)
    clock.set(due + late)  # no scheduler has run: the breach is not recorded
    assert view(engine, number, "first_response").breached_at is None
    refused(engine, number, "first_response", local(3, 2, 9, 30))


def test_an_extension_just_before_the_due_instant_is_accepted(
    engine: Engine, clock: SimulatedClock
) -> None:
    number = engine.submit(complaint_fields(), CS).number  # first_response due 10:00
    clock.set(local(3, 2, 9, 59, 59))
    engine.extend_timer(
        number, "first_response", CS, 1, consent(local(3, 2, 9, 59)), reason="客户稍后回电"
    )
    assert view(engine, number, "first_response").due_at == local(3, 2, 11)


def test_no_extension_of_a_clock_paused_after_its_due_instant(
    db_url: str, clock: SimulatedClock
) -> None:
    """Paused after its deadline passed (the scheduler not having fired it): the clock has no
    due instant while paused, but its breach is still pending and will fire late."""
    engine = Engine.open(db_url, rules=parse_rules(PAUSING, "pausing.yaml"), clock=clock)
    try:
        number = engine.submit({"note": "x"}, CLERK).number  # Monday 09:00
        assert view(engine, number, "reply").due_at == local(3, 2, 15)  # 6 hours
        clock.set(local(3, 2, 15, 30))
        engine.fire(number, "wait", CLERK)
        assert view(engine, number, "reply").status == "paused"
        before = everything(engine, number)
        with pytest.raises(TimerRefused) as info:
            engine.extend_timer(
                number, "reply", CLERK, 2, consent(local(3, 2, 14)), reason="客户同意延期"
            )
        assert "advance" in info.value.reason
        assert everything(engine, number) == before
    finally:
        engine.close()
