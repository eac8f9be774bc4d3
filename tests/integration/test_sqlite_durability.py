"""SQLite connections commit durably: WAL with synchronous=FULL, foreign keys and the busy
timeout on every pooled connection (a committed complaint number or outbox row must survive
a power loss, as on PostgreSQL with synchronous_commit=on)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from complaintflow import Engine, SimulatedClock
from complaintflow.storage import db

FULL = 2  # PRAGMA synchronous reports 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def test_every_sqlite_connection_is_durable(tmp_path: Path) -> None:
    engine = Engine.open(f"sqlite:///{tmp_path / 'c.db'}",
                         clock=SimulatedClock(datetime(2026, 3, 2, 1, tzinfo=UTC)))
    try:
        sa_engine = engine.database
        # two connections checked out at once: the pragmas hold on each, not only the first
        # (read-only: a write transaction would take SQLite's write lock on each)
        with sa_engine.connect() as first, sa_engine.connect() as second:
            for base in (first, second):
                conn = base.execution_options(complaintflow_readonly=True)
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == FULL
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == \
                    db.SQLITE_BUSY_TIMEOUT_MS
    finally:
        engine.close()

