"""Initial tables: policies, segments, hosts, instances, events, jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NAME = sa.String(64)
ENUM = sa.String(32)
LONG = sa.String(255)


def _index(table: str, *columns: str) -> None:
    for column in columns:
        op.create_index(f"ix_{table}_{column}", table, [column])


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("name", NAME, nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_policies"),
    )
    op.create_table(
        "segments",
        sa.Column("name", NAME, nullable=False),
        sa.Column("recovery_method", ENUM, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("mass_failure_threshold", sa.Double(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("default_policy", NAME, nullable=True),
        sa.Column("hold_recovered_hosts", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_segments"),
        sa.ForeignKeyConstraint(
            ["default_policy"], ["policies.name"], name="fk_segments_default_policy"
        ),
    )
    _index("segments", "enabled")
    op.create_table(
        "hosts",
        sa.Column("name", NAME, nullable=False),
        sa.Column("segment", NAME, nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("state", ENUM, nullable=False),
        sa.Column("capacity", sa.JSON(), nullable=False),
        sa.Column("reserved", sa.Boolean(), nullable=False),
        sa.Column("maintenance", sa.Boolean(), nullable=False),
        sa.Column("bmc", sa.Text(), nullable=True),
        sa.Column("fence_levels", sa.JSON(), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=False),
        sa.Column("state_since", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_hosts"),
        sa.ForeignKeyConstraint(["segment"], ["segments.name"], name="fk_hosts_segment"),
    )
    _index("hosts", "segment", "state")
    op.create_table(
        "instances",
        sa.Column("id", LONG, nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("host", NAME, nullable=True),
        sa.Column("project", LONG, nullable=False),
        sa.Column("resources", sa.JSON(), nullable=False),
        sa.Column("state", ENUM, nullable=False),
        sa.Column("policy", sa.JSON(), nullable=True),
        sa.Column("policy_name", NAME, nullable=True),
        sa.Column("anti_affinity_group", LONG, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_instances"),
        sa.ForeignKeyConstraint(
            ["policy_name"], ["policies.name"], name="fk_instances_policy_name"
        ),
    )
    _index("instances", "name", "host", "project", "state", "policy_name")
    op.create_table(
        "events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True, nullable=False,
        ),
        sa.Column("type", LONG, nullable=False),
        sa.Column("subject", LONG, nullable=False),
        sa.Column("subject_kind", ENUM, nullable=False),
        sa.Column("project", LONG, nullable=False),
        sa.Column("severity", ENUM, nullable=False),
        sa.Column("time", sa.Double(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sqlite_autoincrement=True,
    )
    _index("events", "type", "subject", "project")
    op.create_table(
        "jobs",
        sa.Column("id", LONG, nullable=False),
        sa.Column("kind", ENUM, nullable=False),
        sa.Column("subject", LONG, nullable=False),
        sa.Column("state", ENUM, nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    _index("jobs", "kind", "subject", "state", "created_at")


def downgrade() -> None:
    for table in ("jobs", "events", "instances", "hosts", "segments", "policies"):
        op.drop_table(table)
