"""The self-fence window of host-recovery jobs: `data.cut_off`.

The agent_watchdog fence level now counts the self-fence deadline from the
peer samples that show the host cut off (vmha.domain.isolation), kept in
the job's `cut_off` record {since, sampled_at, samples}. A row written by
an older vmha has none: it gets the empty window (all zero), so an
unfinished job's next sample starts a fresh window instead of trusting the
older rule's deadline. Self-contained on purpose, like 0008.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

EMPTY = {"since": 0.0, "sampled_at": 0.0, "samples": 0}

jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("kind", sa.String),
                sa.column("data", sa.JSON))


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(jobs.c.id, jobs.c.data)
                        .where(jobs.c.kind == "host_recovery")).all()
    for row in rows:
        data = dict(row.data or {})
        if "cut_off" not in data:
            data["cut_off"] = dict(EMPTY)
            conn.execute(jobs.update().where(jobs.c.id == row.id).values(data=data))


def downgrade() -> None:
    """Nothing to undo: older code reads the keys it knows and ignores the rest."""
