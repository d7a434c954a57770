"""Registered host agents: heartbeat secret and agent API endpoint.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("host", sa.String(64), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("api_url", sa.Text(), nullable=False),
        sa.Column("api_token", sa.Text(), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("boot_id", sa.String(64), nullable=False),
        sa.Column("registered_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["host"], ["hosts.name"], name="fk_agents_host", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("host", name="pk_agents"),
    )


def downgrade() -> None:
    op.drop_table("agents")
