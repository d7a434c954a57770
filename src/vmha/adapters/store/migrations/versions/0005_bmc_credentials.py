"""BMC credentials per host, the password encrypted by the service (issue 5).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bmcs",
        sa.Column("host", sa.String(64), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("password_secret", sa.Text(), nullable=False),
        sa.Column("ipmi_address", sa.String(255), nullable=False),
        sa.Column("ipmi_port", sa.Integer(), nullable=False),
        sa.Column("redfish_url", sa.Text(), nullable=False),
        sa.Column("redfish_system", sa.String(255), nullable=False),
        sa.Column("fence_agent", sa.String(64), nullable=False),
        sa.Column("fence_agent_options", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["host"], ["hosts.name"], name="fk_bmcs_host",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("host", name="pk_bmcs"),
    )


def downgrade() -> None:
    op.drop_table("bmcs")
