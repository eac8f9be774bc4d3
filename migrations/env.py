"""Alembic environment: always run with a connection handed in by complaintflow."""

from __future__ import annotations

from alembic import context

from complaintflow.storage.tables import Base

target_metadata = Base.metadata
connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - guarded by storage.db.upgrade
    raise RuntimeError("run migrations through `complaintflow db upgrade`")
context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
