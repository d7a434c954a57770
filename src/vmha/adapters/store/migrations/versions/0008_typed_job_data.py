"""Typed job data (issue 13): every job's `data` gets every key of its kind's
record (vmha.domain.jobs), with the default where a row written by an older
vmha lacks one: host recovery (fence progress with `proof_at`, per-instance
`order` and `custom`, `rate_limited_until`, `requested_by`, ...), action,
decision (`answered_at`, ...) and instance recovery. The values an older row
has are kept as they are. Self-contained on purpose: a migration must not
change when the application's code does.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import copy
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

FENCE = {"level": 0, "phase": "off", "started": False, "confirmed_by": None,
         "retry_at": 0.0, "proof_at": 0.0}
MOVE = {"state": "pending", "target": None, "attempt": 0, "stopped": False, "reason": "",
        "excluded": [], "order": 0, "custom": False}
HOST_RECOVERY = {"segment": "", "levels": [], "last_seen": 0.0, "disabled": False,
                 "planned": False, "acked_by": None, "paused_for": None, "resume_to": None,
                 "requested_by": None, "rate_limited_until": None}
ACTION = {"action": "ignore", "target": None, "by": "", "decision": None, "source": None,
          "project": ""}
DECISION = {"name": "", "project": "", "host": None, "layer": "guest", "cause": "",
            "allowed": [], "deadline": 0.0, "fallback": "auto", "token_sha256": "",
            "host_job": None, "outcome": None, "action": None, "by": None,
            "action_job": None, "answered_at": None}
INSTANCE_RECOVERY = {"layer": "guest", "action": "restart", "reason": ""}
KEY = {"host_recovery": "host", "action": "instance", "decision": "instance",
       "instance_recovery": "instance"}
DEFAULTS = {"host_recovery": HOST_RECOVERY, "action": ACTION, "decision": DECISION,
            "instance_recovery": INSTANCE_RECOVERY}

jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("kind", sa.String),
                sa.column("subject", sa.String), sa.column("data", sa.JSON))


def complete(kind: str, subject: str, data: dict[str, Any]) -> dict[str, Any]:
    """The row's data with every key of its kind (missing ones defaulted)."""
    out = copy.deepcopy(data)
    out.setdefault(KEY[kind], subject)
    for key, default in DEFAULTS[kind].items():
        out.setdefault(key, copy.deepcopy(default))
    if kind == "host_recovery":
        fence = out.get("fence") or {}
        out["fence"] = {**FENCE, **fence}
        moves = out.get("instances") or {}
        out["instances"] = {iid: {**copy.deepcopy(MOVE), **move} for iid, move in moves.items()}
    return out


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(jobs.c.id, jobs.c.kind, jobs.c.subject, jobs.c.data)).all()
    for row in rows:
        if row.kind not in DEFAULTS:
            continue
        data = dict(row.data or {})
        new = complete(row.kind, row.subject, data)
        if new != data:
            conn.execute(jobs.update().where(jobs.c.id == row.id).values(data=new))


def downgrade() -> None:
    """Nothing to undo: older code reads the keys it knows and ignores the rest."""
