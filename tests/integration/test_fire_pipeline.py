"""The two write paths of a transition store the same rows, on both backends: ``fire`` (on
PostgreSQL: the row read in autocommit, every write in one pipelined implicit transaction;
on SQLite: one BEGIN IMMEDIATE transaction, every statement straight through the driver)
and ``transition`` inside a caller's transaction (the scheduler's path, SQLAlchemy
statements). A race lost between the read and the pipelined write stores nothing and
leaves the connection usable, however often it happens."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from complaintflow import ConcurrentUpdate, Engine, SimulatedClock, StorageError, parse_rules
from complaintflow.actor import Actor
from complaintflow.storage import db
from complaintflow.storage.tables import complaints as C
from complaintflow.storage.tables import deadlines as D
from complaintflow.storage.tables import events as E
from complaintflow.storage.tables import timers as T
from tests.integration.test_timers import CLERK, PAUSING
from tests.support import AFTER, ASSIGN, CS, GM, QA, REPORT, complaint_fields

Step = tuple[str, Actor, dict[str, Any], timedelta]


def _stored(engine: Engine, number: str) -> tuple[Any, ...]:
    """What a complaint's transitions wrote, without ids, numbers and hashes."""
    with engine.database.connect() as conn:
        row = conn.execute(sa.select(C).where(C.c.number == number)).one()
        events = conn.execute(
            sa.select(E.c.seq, E.c.type, E.c.trigger, E.c.from_state, E.c.to_state,
                      E.c.payload, E.c.occurred_at)
            .where(E.c.complaint_id == row.id).order_by(E.c.seq)).all()
        timers = conn.execute(
            sa.select(T.c.timer, T.c.run, T.c.status, T.c.ledger, T.c.due_at, T.c.provisional,
                      T.c.warned, T.c.breached_at, T.c.stopped_at)
            .where(T.c.complaint_id == row.id).order_by(T.c.timer, T.c.run)).all()
        deadlines = conn.execute(
            sa.select(T.c.timer, T.c.run, D.c.kind, D.c.idx, D.c.due_at, D.c.fired_at)
            .join(T, T.c.id == D.c.timer_id).where(D.c.complaint_id == row.id)
            .order_by(T.c.timer, T.c.run, D.c.kind, D.c.idx)).all()
    return ((row.state, row.version, row.severity, row.fields, row.facts, row.updated_at),
            [(*e[:5], {k: v for k, v in json.loads(e.payload).items() if k != "number"},
              e.occurred_at) for e in events],
            [tuple(t) for t in timers],
            [tuple(d) for d in deadlines])


def _in_a_transaction(engine: Engine, number: str, trigger: str, actor: Actor,
                      data: dict[str, Any]) -> None:
    with db.write(engine.database, number) as conn:
        row = conn.execute(sa.select(C).where(C.c.number == number)).one()  # no timer runs
        engine.transition(conn, row, trigger, actor, data, engine.now())


def _both_paths(engine: Engine, clock: SimulatedClock, submit: Callable[[], str],
                steps: list[Step]) -> None:
    fired, transitioned = submit(), submit()
    for trigger, actor, data, wait in steps:
        clock.advance(wait)
        engine.fire(fired, trigger, actor, data)
        _in_a_transaction(engine, transitioned, trigger, actor, data)
        assert _stored(engine, fired) == _stored(engine, transitioned), trigger
    assert engine.verify().ok


def test_both_write_paths_store_the_same_clocks_and_deadlines(
    db_url: str, clock: SimulatedClock
) -> None:
    """The default procedure: clocks stopped (their future deadlines go, a past-due one
    stays to fire late), started with warnings, and a stop trigger."""
    engine = Engine.open(db_url, clock=clock)
    try:
        _both_paths(engine, clock, lambda: engine.submit(complaint_fields(), CS).number, [
            ("record", CS, {"readback_confirmed": True}, timedelta(hours=3)),
            ("confirm", CS, ASSIGN, timedelta(minutes=20)),
            ("submit_report", QA, REPORT, timedelta(days=1)),
            ("propose_plan", QA, {"disposal_plan": "更换电机", "disposal_measures": ["replace"]},
             timedelta(hours=1)),
        ])
    finally:
        engine.close()


def test_both_write_paths_pause_and_resume_alike(db_url: str, clock: SimulatedClock) -> None:
    """Paused: the pending deadlines still ahead go, one already due stays; resumed: the
    re-derived ones come back, the kept row is not duplicated."""
    engine = Engine.open(db_url, rules=parse_rules(PAUSING, "pausing.yaml"), clock=clock)
    try:
        _both_paths(engine, clock, lambda: engine.submit({"note": "x"}, CLERK).number, [
            # Monday 16:00: reply (6 h) is past due, unfired; answer's warning too
            ("wait", CLERK, {}, timedelta(hours=7)),
            ("resume", CLERK, {}, timedelta(hours=17)),
            ("close", CLERK, {}, timedelta(hours=1)),
        ])
    finally:
        engine.close()


@pytest.fixture
def pg_url(pg_base_url: str) -> Iterator[str]:
    from tests.conftest import new_pg_schema_url

    url, drop = new_pg_schema_url(pg_base_url)
    try:
        yield url
    finally:
        drop()


@pytest.mark.postgres
def test_a_race_lost_after_the_read_stores_nothing_and_the_engine_goes_on(
    pg_url: str, clock: SimulatedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process moves the complaint between this fire's read and its write, ten
    times in a row (past the driver's statement-preparing threshold): each time
    ``ConcurrentUpdate`` and nothing stored; the next fires on the same connections
    succeed. (PostgreSQL only: on SQLite a fire reads and writes in one BEGIN IMMEDIATE
    transaction, so no one can move the row in between.)"""
    rules = parse_rules(PAUSING, "pausing.yaml")
    engine = Engine.open(pg_url, rules=rules, clock=clock)
    other = Engine.open(pg_url, rules=rules, clock=clock)
    try:
        number = engine.submit({"note": "x"}, CLERK).number
        racing = {"on": True}
        fetch_one = db.fetch_one

        def then_the_other(trigger: str) -> None:
            if racing["on"]:
                racing["on"] = False
                try:
                    other.fire(number, trigger, CLERK)
                finally:
                    racing["on"] = True

        def fetch_and_race(conn: Any, statement: str, params: Any) -> Any:
            row = fetch_one(conn, statement, params)
            then_the_other("resume" if other.get(number).state == "waiting" else "wait")
            return row

        monkeypatch.setattr(db, "fetch_one", fetch_and_race)
        for attempt in range(10):
            before = _stored(engine, number)
            trigger = "resume" if before[0][0] == "waiting" else "wait"
            with pytest.raises(ConcurrentUpdate):
                engine.fire(number, trigger, CLERK)
            after = _stored(other, number)
            # the other process's event is there, nothing of ours
            assert after[0][1] == before[0][1] + 1, attempt
            assert [e[0] for e in after[1]] == list(range(1, after[0][1] + 1))
        racing["on"] = False
        state = _stored(engine, number)[0][0]
        for _ in range(10):
            state = engine.fire(number, "resume" if state == "waiting" else "wait",
                                CLERK).state
        assert engine.verify().ok
    finally:
        other.close()
        engine.close()


@pytest.mark.postgres
def test_a_race_lost_by_a_fire_that_stops_and_starts_clocks_changes_no_clock(
    pg_url: str, clock: SimulatedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clocks a fire stops and starts are written by the same statement as the row,
    each only if the row moved: a fire that loses the race to the same step stops no
    clock, starts no run twice and adds no deadline; the winner's rows stay as written."""
    engine = Engine.open(pg_url, clock=clock)
    other = Engine.open(pg_url, clock=clock)
    try:
        number = engine.submit(complaint_fields(), CS).number
        clock.advance(timedelta(minutes=10))
        fetch_one = db.fetch_one
        won: list[tuple[Any, ...]] = []
        racing = {"on": True}

        def fetch_and_race(conn: Any, statement: str, params: Any) -> Any:
            row = fetch_one(conn, statement, params)
            if racing["on"]:
                racing["on"] = False  # the other's own read goes through here too
                other.fire(number, "record", CS, {"readback_confirmed": True})
                won.append(_stored(other, number))
            return row

        monkeypatch.setattr(db, "fetch_one", fetch_and_race)
        with pytest.raises(ConcurrentUpdate):
            engine.fire(number, "record", CS, {"readback_confirmed": True})
        stored = _stored(other, number)
        assert stored == won[0]
        timers = stored[2]
        assert any(t[2] == "stopped" for t in timers)  # the winner stopped one
        assert len({(t[0], t[1]) for t in timers}) == len(timers)
        monkeypatch.undo()
        engine.fire(number, "confirm", CS, ASSIGN)
        assert engine.verify(deep=True).ok
    finally:
        other.close()
        engine.close()


def test_a_retried_key_returns_the_first_result_even_with_a_stale_version(
    engine: Engine,
) -> None:
    number = engine.submit(complaint_fields(), CS).number
    first = engine.fire(number, "record", CS, {"readback_confirmed": True},
                        expected_version=1, idempotency_key="k-1")
    again = engine.fire(number, "record", CS, {"readback_confirmed": True},
                        expected_version=1, idempotency_key="k-1")
    assert again == first
    assert [e.seq for e in engine.history(number)] == [1, 2]
    with pytest.raises(ConcurrentUpdate):
        engine.fire(number, "confirm", CS, ASSIGN, expected_version=1,
                    idempotency_key="k-2")
    assert [e.seq for e in engine.history(number)] == [1, 2]


def test_history_facts_stop_at_the_version_read(engine: Engine) -> None:
    """A row read outside a transaction may be older than the history a moment later:
    its facts are caught up to its own version only."""
    number = engine.submit(complaint_fields(), CS).number
    engine.fire(number, "record", CS, {"readback_confirmed": True})
    engine.fire(number, "confirm", CS, ASSIGN)
    with engine.database.connect() as conn:
        cid = conn.execute(sa.select(C.c.id).where(C.c.number == number)).scalar_one()
        assert Engine.facts(conn, cid).through == 3
        assert Engine.facts(conn, cid, upto=2).through == 2
        row = SimpleNamespace(id=cid, version=2, facts=None)  # read before confirm
        assert Engine.facts_of(conn, row) == Engine.facts(conn, cid, upto=2)


@pytest.mark.postgres
def test_a_fire_on_postgresql_takes_two_round_trips(
    pg_url: str, clock: SimulatedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One row read and one pipeline (its writes and the commit), nothing through
    SQLAlchemy's statement machinery and no BEGIN/COMMIT of its own."""
    engine = Engine.open(pg_url, clock=clock)
    try:
        number = engine.submit(complaint_fields(), CS).number
        sent: list[str] = []
        fetch_one, execute_pipeline = db.fetch_one, db.execute_pipeline
        monkeypatch.setattr(db, "fetch_one", lambda *a: sent.append("read") or fetch_one(*a))
        monkeypatch.setattr(db, "execute_pipeline",
                            lambda c, s: sent.append(f"pipeline of {len(s)}")
                            or execute_pipeline(c, s))
        for pool in engine.databases:  # fires use the second
            sa.event.listen(pool, "before_cursor_execute", lambda *_: sent.append("sqlalchemy"))
            sa.event.listen(pool, "commit", lambda *_: sent.append("commit"))
        clock.advance(timedelta(minutes=10))
        engine.fire(number, "record", CS, {"readback_confirmed": True})
        # one statement: the row update with its event, the stopped clocks with their
        # pending deadlines, and the started clocks with theirs
        assert sent == ["read", "pipeline of 1"]
    finally:
        engine.close()


@pytest.mark.postgres
def test_fires_on_postgresql_have_a_pool_that_stays_in_autocommit(
    pg_url: str, clock: SimulatedClock
) -> None:
    """Fires take connections from a pool of their own, always in autocommit; the main
    pool's connections stay in transactions, and ``db.autocommit`` refuses them."""
    engine = Engine.open(pg_url, clock=clock)
    try:
        number = engine.submit(complaint_fields(), CS).number
        engine.fire(number, "record", CS, {"readback_confirmed": True})
        main, fires = engine.databases
        assert main is engine.database
        with fires.connect() as conn:
            assert conn.connection.dbapi_connection.autocommit  # type: ignore[union-attr]
        with engine.database.connect() as conn:
            assert not conn.connection.dbapi_connection.autocommit  # type: ignore[union-attr]
        with pytest.raises(StorageError, match="isolation_level='AUTOCOMMIT'"), \
                db.autocommit(engine.database):
            pass  # pragma: no cover - refused on entry
        assert engine.get(number).state == "recorded"
    finally:
        engine.close()
    assert fires.pool.checkedout() == 0  # type: ignore[attr-defined]


def _traced(engine: Engine) -> list[str]:
    """Every statement the SQLite driver runs from now on, as it runs them."""
    ran: list[str] = []

    def trace(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(ran.append)

    sa.event.listen(engine.database, "connect", trace)
    engine.database.dispose()  # pooled connections (and those fires keep) opened anew, traced
    return ran


def test_a_fire_on_sqlite_is_one_transaction_straight_through_the_driver(
    tmp_path: Path, clock: SimulatedClock
) -> None:
    """BEGIN IMMEDIATE, the row read, the row's UPDATE, the event, the clocks, COMMIT: all
    sent by the driver itself, none through SQLAlchemy's statement machinery."""
    engine = Engine.open(f"sqlite:///{tmp_path / 'c.db'}", clock=clock)
    try:
        number = engine.submit(complaint_fields(), CS).number
        ran = _traced(engine)
        through_sqlalchemy: list[str] = []
        sa.event.listen(engine.database, "before_cursor_execute",
                        lambda _c, _cur, statement, *_: through_sqlalchemy.append(statement))
        clock.advance(timedelta(minutes=10))
        engine.fire(number, "record", CS, {"readback_confirmed": True})
        kinds = [" ".join(s.split()[:3]) for s in ran]
        assert through_sqlalchemy == []
        assert kinds[0] == "BEGIN IMMEDIATE" and kinds[-1] == "COMMIT", kinds
        assert kinds[1].startswith("SELECT") and kinds[2] == "UPDATE complaints SET"
        assert kinds[3] == "INSERT INTO events"
        # the clocks record stopped: their pending deadlines go, then the clocks
        assert kinds[4:-1] == ["DELETE FROM deadlines", "UPDATE timers SET"], kinds
    finally:
        engine.close()


def _update_of_complaint(ran: list[str]) -> str:
    (update,) = [s for s in ran if s.startswith("UPDATE complaints")]
    return update.split(" WHERE ")[0]


def test_a_fire_on_sqlite_sets_indexed_columns_only_when_they_change(
    tmp_path: Path, clock: SimulatedClock
) -> None:
    """SQLite rewrites an index entry for every column SET, changed or not: a self-loop
    sets no state, a move sets the state and leaves the unchanged department alone."""
    engine = Engine.open(f"sqlite:///{tmp_path / 'c.db'}", clock=clock)
    try:
        number = engine.submit(complaint_fields(), CS).number
        for trigger, actor, data in (("record", CS, {"readback_confirmed": True}),
                                     ("confirm", CS, ASSIGN), ("submit_report", QA, REPORT)):
            engine.fire(number, trigger, actor, data)
        ran = _traced(engine)
        before = engine.get(number, QA)
        engine.fire(number, "propose_plan", QA,
                    {"disposal_plan": "更换电机", "disposal_measures": ["replace"]})
        loop = _update_of_complaint(ran)
        assert engine.get(number, QA).state == before.state == "investigated"
        assert "state =" not in loop and "department =" not in loop, loop
        assert "version =" in loop and "fields =" in loop and "head_hash =" in loop
        ran.clear()
        engine.fire(number, "approve_plan", GM)
        engine.fire(number, "resolve", AFTER, {"disposal_result": "已更换"})
        move = _update_of_complaint(ran[ran.index("COMMIT") + 1:])
        assert "state =" in move and "department =" not in move, move
        assert engine.get(number, QA).department == before.department
        assert engine.verify(deep=True).ok
    finally:
        engine.close()


def test_a_transition_on_sqlite_sets_indexed_columns_only_when_they_change(
    tmp_path: Path, clock: SimulatedClock
) -> None:
    """The same on the scheduler's path (``transition`` in a caller's transaction, through
    SQLAlchemy)."""
    engine = Engine.open(f"sqlite:///{tmp_path / 'c.db'}", clock=clock)
    try:
        number = engine.submit(complaint_fields(), CS).number
        for trigger, actor, data in (("record", CS, {"readback_confirmed": True}),
                                     ("confirm", CS, ASSIGN), ("submit_report", QA, REPORT)):
            _in_a_transaction(engine, number, trigger, actor, data)
        ran = _traced(engine)
        _in_a_transaction(engine, number, "propose_plan", QA,
                          {"disposal_plan": "更换电机", "disposal_measures": ["replace"]})
        # SQLAlchemy's statement, as the driver traced it with its values filled in
        columns = re.compile(r"(?:SET |, )(\w+)=")
        loop = set(columns.findall(_update_of_complaint(ran)))
        assert {"version", "fields", "head_hash", "facts"} <= loop, loop
        assert not loop & {"state", "department", "handler", "severity"}, loop
        ran.clear()
        _in_a_transaction(engine, number, "approve_plan", GM, {})
        _in_a_transaction(engine, number, "resolve", AFTER, {"disposal_result": "已更换"})
        move = set(columns.findall(_update_of_complaint(ran[ran.index("COMMIT") + 1:])))
        assert "state" in move and "department" not in move, move
        assert engine.get(number, QA).state == "resolved"
        assert engine.verify(deep=True).ok
    finally:
        engine.close()


def test_a_busy_sqlite_database_is_a_storage_error_and_stores_nothing(
    tmp_path: Path, clock: SimulatedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the write lock past the busy timeout: the driver's BEGIN
    IMMEDIATE fails, as a ``StorageError``; the fire after the lock is gone succeeds."""
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "c.db"
    engine = Engine.open(f"sqlite:///{path}", clock=clock)
    try:
        number = engine.submit(complaint_fields(), CS).number
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StorageError, match="locked"):
                engine.fire(number, "record", CS, {"readback_confirmed": True})
        finally:
            other.close()
        assert [e.seq for e in engine.history(number)] == [1]
        assert engine.fire(number, "record", CS, {"readback_confirmed": True}).version == 2
    finally:
        engine.close()
