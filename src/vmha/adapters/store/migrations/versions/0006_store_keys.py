"""Secrets at rest: the key check of the sealed store secrets (issue 11).

Agent secrets and API tokens, webhook secrets and decision tokens are
sealed by the controller with its key (vmha.adapters.store.sealing); this
table holds one sealed check value, so a controller started with another
key is refused instead of misreading them. Sealing values stored in clear
before needs the key, so the controller does it when it opens the store,
not this migration.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "store_keys",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("check", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_store_keys"),
    )


def downgrade() -> None:
    op.drop_table("store_keys")
