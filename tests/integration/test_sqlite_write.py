"""SQLite's driver-level write transactions (``db.SqliteWriter``), which ``Engine.fire`` runs
in: a transaction commits what the cursor and the lazily made SQLAlchemy connection wrote
together, rolls both back when the body raises and turns driver errors into
``StorageError``; the writer keeps at most ``keep`` clean connections aside and gives them
back on ``close``; and the timestamp text it stores is the text SQLAlchemy's own column
type stores."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import Engine as SAEngine

from complaintflow import Engine, SimulatedClock, StorageError
from complaintflow.storage import db
from complaintflow.storage.tables import complaints as C
from tests.support import CS, complaint_fields

#: SQLAlchemy's bind processor for the column type, which the direct formatting must match
SQLALCHEMY_STORED = db._sqlite_datetime()[0]


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)),
                                               timezone(timedelta(hours=-11, minutes=-30))])))
def test_stored_timestamp_text_is_sqlalchemys(moment: datetime) -> None:
    assert db.sqlite_datetime_in(moment) == SQLALCHEMY_STORED(moment)


def test_stored_timestamp_refuses_a_naive_datetime_and_keeps_none() -> None:
    with pytest.raises(ValueError, match="naive"):
        db.sqlite_datetime_in(datetime(2026, 3, 2, 9))
    assert db.sqlite_datetime_in(None) is None


@pytest.fixture
def database(tmp_path: Path) -> Iterator[SAEngine]:
    engine = db.connect(f"sqlite:///{tmp_path / 'w.db'}")
    with db.write(engine) as conn:
        conn.exec_driver_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT UNIQUE)")
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def writer(database: SAEngine) -> Iterator[db.SqliteWriter]:
    kept = db.SqliteWriter(database, keep=1)
    try:
        yield kept
    finally:
        kept.close()
        assert checked_out(database) == 0


def texts(engine: SAEngine) -> list[str]:
    with db.read(engine) as conn:
        return list(conn.exec_driver_sql("SELECT text FROM notes ORDER BY id").scalars())


def checked_out(engine: SAEngine) -> int:
    pool = engine.pool
    assert isinstance(pool, sa.pool.QueuePool)
    return pool.checkedout()


def test_cursor_and_connection_commit_as_one_transaction(
    database: SAEngine, writer: db.SqliteWriter
) -> None:
    with writer.transaction() as tx:
        tx.cursor.execute("INSERT INTO notes (text) VALUES (:t)", {"t": "driver"})
        conn = tx.connection()
        # the same transaction: SQLAlchemy sees the driver's uncommitted row
        assert conn.exec_driver_sql("SELECT count(*) FROM notes").scalar_one() == 1
        conn.exec_driver_sql("INSERT INTO notes (text) VALUES ('sqlalchemy')")
        assert tx.connection() is conn
    assert texts(database) == ["driver", "sqlalchemy"]
    assert checked_out(database) == 0  # the SQLAlchemy connection checked it in


@pytest.mark.parametrize("lazy", [False, True])
def test_a_raising_body_stores_nothing(database: SAEngine, writer: db.SqliteWriter,
                                       lazy: bool) -> None:
    with pytest.raises(RuntimeError, match="refused"), writer.transaction() as tx:
        tx.cursor.execute("INSERT INTO notes (text) VALUES ('driver')")
        if lazy:
            tx.connection().exec_driver_sql("INSERT INTO notes (text) VALUES ('sqlalchemy')")
        raise RuntimeError("refused")
    assert texts(database) == []
    # rolled back, the connection is kept for the next transaction (the SQLAlchemy
    # connection, when made, checked it in instead)
    assert checked_out(database) == (0 if lazy else 1)
    with writer.transaction() as tx:
        tx.cursor.execute("INSERT INTO notes (text) VALUES ('after')")
    assert texts(database) == ["after"]
    assert checked_out(database) == 1


def test_a_driver_error_is_a_storage_error_and_stores_nothing(
    database: SAEngine, writer: db.SqliteWriter
) -> None:
    with db.write(database) as conn:
        conn.exec_driver_sql("INSERT INTO notes (text) VALUES ('taken')")
    with pytest.raises(StorageError), writer.transaction() as tx:
        tx.cursor.execute("INSERT INTO notes (text) VALUES ('new')")
        tx.cursor.execute("INSERT INTO notes (text) VALUES ('taken')")  # UNIQUE fails
    assert texts(database) == ["taken"]
    assert checked_out(database) == 0  # after a driver error the connection is not kept


def test_the_writer_keeps_at_most_keep_connections(database: SAEngine) -> None:
    writer = db.SqliteWriter(database, keep=1)
    holding, done = threading.Event(), threading.Event()

    def first() -> None:
        with writer.transaction() as tx:
            tx.cursor.execute("INSERT INTO notes (text) VALUES ('first')")
            holding.set()
            assert done.wait(10)

    def second() -> None:
        with writer.transaction() as tx:  # waits for the first one's write lock
            tx.cursor.execute("INSERT INTO notes (text) VALUES ('second')")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert holding.wait(10)
    threads[1].start()
    for _ in range(1000):  # until the second holds a connection of its own
        if checked_out(database) == 2:
            break
        time.sleep(0.005)
    assert checked_out(database) == 2
    done.set()
    for thread in threads:
        thread.join(10)
    assert texts(database) == ["first", "second"]
    assert checked_out(database) == 1  # one kept aside, the other back in the pool
    writer.close()
    assert checked_out(database) == 0


def test_disposing_the_engine_closes_the_connections_kept_aside(
    database: SAEngine, writer: db.SqliteWriter
) -> None:
    with writer.transaction() as tx:
        tx.cursor.execute("INSERT INTO notes (text) VALUES ('kept')")
    (kept,) = writer._idle
    driver = kept.dbapi_connection
    database.dispose()
    assert writer._idle == []
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        driver.execute("SELECT 1")
    with writer.transaction() as tx:  # a connection of the new pool
        tx.cursor.execute("INSERT INTO notes (text) VALUES ('after')")
    assert texts(database) == ["kept", "after"]


def test_a_write_in_flight_when_the_engine_is_disposed_does_not_keep_its_connection(
    database: SAEngine, writer: db.SqliteWriter
) -> None:
    with writer.transaction() as tx:
        tx.cursor.execute("INSERT INTO notes (text) VALUES ('during')")
        driver = tx.cursor.connection
        database.dispose()  # another thread, say
    assert writer._idle == []
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        driver.execute("SELECT 1")
    assert texts(database) == ["during"]  # committed before it was closed


def test_a_forked_child_disposing_forgets_the_parents_connections_without_closing(
    database: SAEngine, writer: db.SqliteWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    with writer.transaction() as tx:
        tx.cursor.execute("INSERT INTO notes (text) VALUES ('parent')")
    (kept,) = writer._idle
    monkeypatch.setattr(db.os, "getpid", lambda: -1)  # as in a child after fork
    database.dispose(close=False)
    assert writer._idle == []
    assert kept.dbapi_connection.execute("SELECT count(*) FROM notes").fetchone() == (1,)
    monkeypatch.undo()
    kept.invalidate()


def test_an_in_memory_database_keeps_no_connection_aside() -> None:
    memory = db.connect("sqlite://")
    writer = db.SqliteWriter(memory)
    with writer.transaction() as tx:
        tx.cursor.execute("CREATE TABLE t (x)")
    assert writer._idle == []
    with db.read(memory) as conn:  # the one shared connection saw the commit
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 0
    memory.dispose()


def test_the_transaction_holds_the_write_lock(
    database: SAEngine, writer: db.SqliteWriter, tmp_path: Path
) -> None:
    other = db.connect(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        with writer.transaction() as tx:
            tx.cursor.execute("INSERT INTO notes (text) VALUES ('first')")
            raw = other.raw_connection()
            try:
                raw.dbapi_connection.execute("PRAGMA busy_timeout=0")
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    raw.dbapi_connection.execute("BEGIN IMMEDIATE")
            finally:
                raw.close()
    finally:
        other.dispose()
    assert texts(database) == ["first"]


def test_fire_reads_what_the_row_lacks_inside_its_transaction(
    tmp_path: Path, clock: SimulatedClock
) -> None:
    """A fire on a row with no facts column, by an engine that has not compiled the rule set
    the complaint is pinned to yet, reads both through the lazily made connection, and
    leaves no connection checked out."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    first = Engine.open(url, clock=clock)
    number = first.submit(complaint_fields(), CS).number
    first.fire(number, "record", CS, {"readback_confirmed": True})
    version = first.rules.version
    first.close()
    plain = db.connect(url)
    with db.write(plain) as conn:
        conn.execute(sa.update(C).where(C.c.number == number).values(facts=None))
    plain.dispose()
    engine = Engine.open(url, clock=clock)
    try:
        engine._versions.pop(version)  # as an engine that loaded another rule set
        done = engine.fire(number, "confirm", CS, {"responsible_department": "quality",
                                                    "handler": "wang.qa"})
        assert (done.state, done.version) == ("confirmed", 3)
        assert version in engine._versions
        assert checked_out(engine.database) == 0  # the SQLAlchemy connection checked it in
        with engine.database.connect() as conn:
            assert conn.execute(sa.select(C.c.facts).where(C.c.number == number)
                                ).scalar_one() is not None
        assert engine.verify(deep=True).ok
    finally:
        engine.close()
