"""The write path of a transition, both backends: the complaint row's UPDATE under the
version check and the event's INSERT (one statement on PostgreSQL) either both happen or
neither does."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from complaintflow import ConcurrentUpdate, Engine
from complaintflow.storage import db
from complaintflow.storage.tables import complaints as C
from complaintflow.storage.tables import events as E
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
