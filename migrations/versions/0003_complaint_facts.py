"""complaint facts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

The history facts conditions and guards read (``Facts``), kept on the complaint row so that
a transition does not replay the whole history. NULL (every row written before this
revision) means "not kept yet": the engine replays the history and the next transition
writes the column.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("complaints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("facts", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("complaints", schema=None) as batch_op:
        batch_op.drop_column("facts")
