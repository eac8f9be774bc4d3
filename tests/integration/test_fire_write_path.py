"""The write path of a transition, both backends: the complaint row's UPDATE under the
version check and the event's INSERT (one statement on PostgreSQL) either both happen or
neither does; stopping clocks (one statement on PostgreSQL) removes only their future
deadlines."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from complaintflow import ConcurrentUpdate, Engine, SimulatedClock
from complaintflow.storage import db
from complaintflow.storage.tables import complaints as C
from complaintflow.storage.tables import deadlines as D
from complaintflow.storage.tables import events as E
from complaintflow.storage.tables import timers as T
from tests.support import CS, complaint_fields


def test_a_row_changed_since_it_was_read_writes_nothing(engine: Engine) -> None:
    number = engine.submit(complaint_fields(), CS).number
    with engine.database.connect() as conn:
        stale = conn.execute(sa.select(C).where(C.c.number == number)).one()
    engine.fire(number, "record", CS, {"readback_confirmed": True})  # version 1 -> 2
    with pytest.raises(ConcurrentUpdate), db.write(engine.database, number) as conn:
        engine.transition(conn, stale, "record", CS, {"readback_confirmed": True},
                          engine.now())
    with engine.database.connect() as conn:
        row = conn.execute(sa.select(C.c.id, C.c.version, C.c.state)
                           .where(C.c.number == number)).one()
        seqs = conn.execute(sa.select(E.c.seq).where(E.c.complaint_id == row.id)
                            .order_by(E.c.seq)).scalars().all()
    assert (row.version, row.state, seqs) == (2, "recorded", [1, 2])
    assert engine.verify().ok


def test_the_written_row_and_event_agree(engine: Engine) -> None:
    number = engine.submit(complaint_fields(), CS).number
    done = engine.fire(number, "record", CS, {"readback_confirmed": True}, comment="已登记")
    event = engine.history(number, CS)[-1]
    with engine.database.connect() as conn:
        row = conn.execute(sa.select(C).where(C.c.number == number)).one()
    assert (row.state, row.version, row.head_seq, row.head_hash) == (
        done.state, done.version, event.seq, event.hash)
    assert (event.trigger, event.from_state, event.to_state, event.payload["comment"]) == (
        "record", "received", "recorded", "已登记")
    assert row.updated_at == event.occurred_at == engine.now()


def test_stopped_clocks_lose_their_pending_deadlines_only(
    engine: Engine, clock: SimulatedClock
) -> None:
    number = engine.submit(complaint_fields(), CS).number
    clock.advance(timedelta(hours=3))  # registration (2 h) is due: it fires late, once
    engine.fire(number, "record", CS, {"readback_confirmed": True})  # stops registration
    with engine.database.connect() as conn:
        cid = conn.execute(sa.select(C.c.id).where(C.c.number == number)).scalar_one()
        timers = conn.execute(sa.select(T.c.id, T.c.timer, T.c.status, T.c.stopped_at)
                              .where(T.c.complaint_id == cid)).all()
        pending = conn.execute(sa.select(D.c.timer_id, D.c.due_at)
                               .where(D.c.complaint_id == cid, D.c.fired_at.is_(None))).all()
    stopped = {t.id for t in timers if t.status == "stopped"}
    assert "registration" in {t.timer for t in timers if t.id in stopped}
    assert all(t.stopped_at == engine.now() for t in timers if t.id in stopped)
    # only deadlines already past stay (they fire late, once); the future ones are gone
    assert all(p.due_at <= engine.now() for p in pending if p.timer_id in stopped)
    assert any(p.timer_id in stopped for p in pending)
    assert any(p.timer_id not in stopped and p.due_at > engine.now() for p in pending)
