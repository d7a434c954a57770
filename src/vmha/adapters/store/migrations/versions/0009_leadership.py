"""The recovery engine's leader epoch: the fencing token of issue 15.

One row (id 1): who claimed leadership last, with which epoch, since when.
A controller that becomes leader claims a new epoch; its engine's writes to
jobs, hosts and instances are refused once a later leader claimed a newer
one (SqlStore.fenced), so a paused old leader cannot write a stale step.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "leadership",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("since", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_leadership"),
    )
    op.bulk_insert(table, [{"id": 1, "holder": "", "epoch": 0, "since": 0.0}])


def downgrade() -> None:
    op.drop_table("leadership")
