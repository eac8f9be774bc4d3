"""room for updates in the update-heavy tables; two indexes a unique constraint covers

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

PostgreSQL only: ``complaints`` and ``timers`` rows are updated by every transition and
every warning or breach, ``deadlines`` rows once (fired). With the default fillfactor of
100 a page has no room left, so each update writes the new row version to another page:
one more page dirtied (and logged whole after a checkpoint), an extra lock record in the
WAL, the whole row logged, and never a HOT update. With room on the page the new version
stays beside the old one, PostgreSQL logs only the changed bytes, and an update that
changes no indexed column (a warning, a breach count, a head hash) is HOT: no index entry
at all. The setting applies to pages written from now on; existing pages keep theirs until
they are rewritten (``VACUUM FULL`` or ``CLUSTER``, if an operator wants it at once).
The values are in ``storage/tables.py`` (``FILLFACTOR``).

Both backends: ``ix_timers_complaint_id`` (complaint_id) is the leading column of
``uq_timers_complaint_id_timer_run`` and ``ix_deadlines_timer_id`` (timer_id) the leading
column of ``uq_deadlines_timer_id_kind_idx``; every lookup they served, the unique index
serves as well (on SQLite too: the autoindex of a UNIQUE constraint is an ordinary index).
A non-HOT update of a timer or a deadline now writes two index entries instead of three.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: the values of this revision (``storage.tables.FILLFACTOR`` may move on in later ones)
FILLFACTOR = {"complaints": 70, "timers": 70, "deadlines": 90}


def upgrade() -> None:
    with op.batch_alter_table("deadlines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deadlines_timer_id"))
    with op.batch_alter_table("timers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_timers_complaint_id"))
    if op.get_bind().dialect.name == "postgresql":
        for table, percent in FILLFACTOR.items():
            op.execute(f"ALTER TABLE {table} SET (fillfactor = {percent})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in FILLFACTOR:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
    with op.batch_alter_table("timers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_timers_complaint_id"), ["complaint_id"],
                              unique=False)
    with op.batch_alter_table("deadlines", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deadlines_timer_id"), ["timer_id"], unique=False)
