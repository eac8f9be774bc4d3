"""Shared fixtures: every engine test runs on a real SQLite file AND on real PostgreSQL.

PostgreSQL: ``COMPLAINTFLOW_PG_URL`` (default postgresql://postgres@127.0.0.1:5432/test).
Each test gets its own schema, dropped afterwards. Without a server the PostgreSQL cases
are skipped with the reason shown; with ``COMPLAINTFLOW_REQUIRE_PG=1`` (set by .ci/run)
they fail instead, so CI can never silently skip them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import settings

from complaintflow import Engine, SimulatedClock

PG_URL = os.environ.get("COMPLAINTFLOW_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("COMPLAINTFLOW_REQUIRE_PG") == "1"
TORTURE = int(os.environ.get("COMPLAINTFLOW_TORTURE_EXAMPLES", "0"))

settings.register_profile("ci", deadline=None, print_blob=True)
settings.load_profile("ci")


def _pg_available() -> str | None:
    try:
        engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
        return None
    except Exception as exc:  # any failure means: no usable server
        return f"PostgreSQL not reachable at {PG_URL}: {type(exc).__name__}"


_PG_PROBLEM = _pg_available()


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    if _PG_PROBLEM is not None:
        if REQUIRE_PG:
            pytest.fail(f"COMPLAINTFLOW_REQUIRE_PG=1 but {_PG_PROBLEM}")
        pytest.skip(_PG_PROBLEM)
    return PG_URL


def new_pg_schema_url(base: str) -> tuple[str, Callable[[], None]]:
    """A URL whose search_path is a fresh schema, and a function dropping it."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = f"{base}?options=-csearch_path%3D{schema}"

    def drop() -> None:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()

    return url, drop


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'complaints.db'}"
        return
    base = request.getfixturevalue("pg_base_url")
    url, drop = new_pg_schema_url(base)
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def clock() -> SimulatedClock:
    # Monday 2026-03-02 09:00 in Shanghai
    return SimulatedClock(datetime(2026, 3, 2, 1, 0, tzinfo=UTC))


@pytest.fixture
def engine(db_url: str, clock: SimulatedClock) -> Iterator[Engine]:
    eng = Engine.open(db_url, clock=clock)
    try:
        yield eng
    finally:
        eng.close()
