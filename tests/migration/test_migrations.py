"""The Alembic migrations build exactly the schema the SQLAlchemy models describe, on both
backends, and upgrading again changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine as SAEngine

from complaintflow.storage import db
from complaintflow.storage.tables import FILLFACTOR, Base

TABLES = set(Base.metadata.tables)
CORE_TABLES = {"complaints", "events", "idempotency_keys", "number_sequences", "rulesets"}


@pytest.fixture
def database(db_url: str) -> Iterator[SAEngine]:
    engine = db.connect(db_url)
    try:
        yield engine
    finally:
        engine.dispose()


def head() -> str:
    revision = ScriptDirectory.from_config(db.alembic_config()).get_current_head()
    assert revision is not None
    return revision


def differences(engine: SAEngine) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, Base.metadata))


def current(engine: SAEngine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def schema(engine: SAEngine) -> dict[str, Any]:
    """Everything reflection can tell about the schema, in a comparable form."""
    inspector = sa.inspect(engine)
    out: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        out[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)
            ],
            "pk": tuple(inspector.get_pk_constraint(table)["constrained_columns"]),
            "fks": sorted(
                (
                    f["name"],
                    tuple(f["constrained_columns"]),
                    f["referred_table"],
                    tuple(f["referred_columns"]),
                )
                for f in inspector.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table)
            ),
            "unique": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
        }
    return out


def test_the_database_starts_empty(database: SAEngine) -> None:
    assert sa.inspect(database).get_table_names() == []
    assert current(database) is None


def test_upgrading_an_empty_database_yields_exactly_the_models(database: SAEngine) -> None:
    db.upgrade(database)
    assert set(sa.inspect(database).get_table_names()) == TABLES | {"alembic_version"}
    assert current(database) == head()
    assert differences(database) == []


def test_upgrading_twice_is_a_no_op(database: SAEngine) -> None:
    db.upgrade(database)
    before = schema(database)
    with database.connect() as conn:
        versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    db.upgrade(database)
    assert schema(database) == before
    with database.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
            == versions
            == [(head(),)]
        )
    assert differences(database) == []


def test_downgrade_to_base_and_up_again(database: SAEngine) -> None:
    db.upgrade(database)
    with database.begin() as conn:
        command.downgrade(db.alembic_config(conn), "base")
    assert set(sa.inspect(database).get_table_names()) <= {"alembic_version"}
    assert current(database) is None
    db.upgrade(database)
    assert current(database) == head()
    assert differences(database) == []


def test_models_are_not_empty() -> None:
    """Guards the comparison above against comparing nothing with nothing."""
    assert CORE_TABLES <= TABLES


def test_no_index_repeats_the_leading_columns_of_another(database: SAEngine) -> None:
    """An index whose columns lead a unique constraint (or a wider index) only costs writes:
    every update that is not HOT maintains both (migration 0004 dropped two such)."""
    db.upgrade(database)
    inspector = sa.inspect(database)
    redundant = []
    for table in TABLES:
        keys = [(i["name"], tuple(i["column_names"]), i.get("dialect_options", {}))
                for i in inspector.get_indexes(table)]
        wider = [c for _, c, _ in keys] + [tuple(u["column_names"])
                                            for u in inspector.get_unique_constraints(table)]
        for name, columns, options in keys:
            if any(options.get(k) is not None for k in ("postgresql_where", "sqlite_where")):
                continue  # a partial index holds other rows than the full one
            if any(len(w) > len(columns) and w[:len(columns)] == columns for w in wider):
                redundant.append((table, name, columns))
    assert redundant == []


def test_update_heavy_tables_leave_room_on_their_pages(database: SAEngine) -> None:
    """PostgreSQL: the migrated tables carry ``FILLFACTOR`` (and no other table sets one);
    the models say the same, so ``create_all`` would too. SQLite has no such parameter."""
    for table, percent in FILLFACTOR.items():
        assert Base.metadata.tables[table].dialect_options["postgresql"]["with"] == {
            "fillfactor": percent}
    db.upgrade(database)
    if database.dialect.name == "postgresql":
        with database.connect() as conn:
            options = dict(conn.execute(sa.text(
                "SELECT c.relname, c.reloptions FROM pg_class c"
                " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'"
            )).all())
        assert {t: o for t, o in options.items() if o} == {
            table: [f"fillfactor={percent}"] for table, percent in FILLFACTOR.items()}
