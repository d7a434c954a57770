"""The tables of the SQL store (SQLAlchemy Core), for SqlStore and Alembic.

Plain columns for what lists filter and sort on, JSON for the rest. The
migrations in `migrations/versions` create exactly this; a test compares
the two, so change both together (add a new migration, never edit 0001).
"""

from __future__ import annotations

import sqlalchemy as sa

NAME = sa.String(64)
TEXT = sa.Text()
ENUM = sa.String(32)

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

policies = sa.Table(
    "policies", metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("policy", sa.JSON(), nullable=False),
    sa.Column("description", TEXT, nullable=False),
)

segments = sa.Table(
    "segments", metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("recovery_method", ENUM, nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False, index=True),
    sa.Column("mass_failure_threshold", sa.Double(), nullable=False),
    sa.Column("description", TEXT, nullable=False),
    sa.Column("default_policy", NAME, sa.ForeignKey("policies.name"), nullable=True),
    sa.Column("hold_recovered_hosts", sa.Boolean(), nullable=False),
)

hosts = sa.Table(
    "hosts", metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("segment", NAME, sa.ForeignKey("segments.name"), nullable=False, index=True),
    sa.Column("address", TEXT, nullable=False),
    sa.Column("state", ENUM, nullable=False, index=True),
    sa.Column("capacity", sa.JSON(), nullable=False),
    sa.Column("reserved", sa.Boolean(), nullable=False),
    sa.Column("maintenance", sa.Boolean(), nullable=False),
    sa.Column("bmc", TEXT, nullable=True),
    sa.Column("fence_levels", sa.JSON(), nullable=False),
    sa.Column("state_reason", TEXT, nullable=False),
    sa.Column("state_since", sa.Double(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False, server_default="1"),  # 0007
)

# `host` has no foreign key: instances are observed (e.g. synced from Nova)
# and may name a hypervisor vmha does not manage.
instances = sa.Table(
    "instances", metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("name", NAME, nullable=False, index=True),
    sa.Column("host", NAME, nullable=True, index=True),
    sa.Column("project", sa.String(255), nullable=False, index=True),
    sa.Column("resources", sa.JSON(), nullable=False),
    sa.Column("state", ENUM, nullable=False, index=True),
    sa.Column("policy", sa.JSON(), nullable=True),
    sa.Column("policy_name", NAME, sa.ForeignKey("policies.name"), nullable=True, index=True),
    sa.Column("anti_affinity_group", sa.String(255), nullable=True),
    sa.Column("spec", sa.JSON(), nullable=True),  # libvirt mode: the definition (0004)
    sa.Column("version", sa.Integer(), nullable=False, server_default="1"),  # 0007
)

events = sa.Table(
    "events", metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True, autoincrement=True,
    ),
    sa.Column("type", sa.String(255), nullable=False, index=True),
    sa.Column("subject", sa.String(255), nullable=False, index=True),
    sa.Column("subject_kind", ENUM, nullable=False),
    sa.Column("project", sa.String(255), nullable=False, index=True),
    sa.Column("severity", ENUM, nullable=False),
    sa.Column("time", sa.Double(), nullable=False),
    sa.Column("payload", sa.JSON(), nullable=False),
    # AUTOINCREMENT: SQLite must never reuse the id of a deleted last event.
    sqlite_autoincrement=True,
)

jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("kind", ENUM, nullable=False, index=True),
    sa.Column("subject", sa.String(255), nullable=False, index=True),
    sa.Column("state", ENUM, nullable=False, index=True),
    sa.Column("generation", sa.Integer(), nullable=False),
    sa.Column("steps", sa.JSON(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False, index=True),
    sa.Column("updated_at", sa.Double(), nullable=False),
    sa.Column("reason", TEXT, nullable=False),
    sa.Column("data", sa.JSON(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False, server_default="1"),  # 0007
)

# One row per registered host agent; goes away with its host.
agents = sa.Table(
    "agents", metadata,
    sa.Column(
        "host", NAME, sa.ForeignKey("hosts.name", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("secret", TEXT, nullable=False),
    sa.Column("api_url", TEXT, nullable=False),
    sa.Column("api_token", TEXT, nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("boot_id", sa.String(64), nullable=False),
    sa.Column("registered_at", sa.Double(), nullable=False),
)

# Webhook subscriptions (issue 7). `cursor`: the last event id the
# dispatcher finished with, so a restarted controller resumes there.
subscriptions = sa.Table(
    "subscriptions", metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("url", TEXT, nullable=False),
    sa.Column("secret", TEXT, nullable=False),
    sa.Column("event_types", sa.JSON(), nullable=False),
    sa.Column("subject", sa.String(255), nullable=True),
    sa.Column("project", sa.String(255), nullable=True),
    sa.Column("owner", sa.String(255), nullable=False, index=True),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("cursor", sa.BigInteger(), nullable=False),
)

# One row per (subscription, event) that was delivered, is being retried or
# was parked as a dead letter; goes away with its subscription.
deliveries = sa.Table(
    "deliveries", metadata,
    sa.Column(
        "subscription", sa.String(255),
        sa.ForeignKey("subscriptions.id", ondelete="CASCADE"), primary_key=True,
    ),
    sa.Column("event_id", sa.BigInteger(), primary_key=True),
    sa.Column("status", ENUM, nullable=False, index=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("last_error", TEXT, nullable=False),
    sa.Column("updated_at", sa.Double(), nullable=False),
)

# BMC credentials (issue 5): `password_secret` is ciphertext (Fernet),
# encrypted by the service; the store never holds the key.
bmcs = sa.Table(
    "bmcs", metadata,
    sa.Column("host", NAME, sa.ForeignKey("hosts.name", ondelete="CASCADE",
                                          name="fk_bmcs_host"), primary_key=True),
    sa.Column("username", sa.String(255), nullable=False),
    sa.Column("password_secret", TEXT, nullable=False),
    sa.Column("ipmi_address", sa.String(255), nullable=False),
    sa.Column("ipmi_port", sa.Integer(), nullable=False),
    sa.Column("redfish_url", TEXT, nullable=False),
    sa.Column("redfish_system", sa.String(255), nullable=False),
    sa.Column("fence_agent", sa.String(64), nullable=False),
    sa.Column("fence_agent_options", sa.JSON(), nullable=False),
    sa.Column("updated_at", sa.Double(), nullable=False),
)

# The key check of the secrets sealed at rest (migration 0006): one row per
# key use, `check` a known text sealed with the key (vmha.adapters.store.sealing).
store_keys = sa.Table(
    "store_keys", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("check", TEXT, nullable=False),
)

# The recovery engine's leader (migration 0009): one row (id 1). Every
# claim makes a new, higher epoch; the engine's writes to jobs, hosts and
# instances are checked against it (SqlStore.fenced).
leadership = sa.Table(
    "leadership", metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("holder", NAME, nullable=False),
    sa.Column("epoch", sa.BigInteger(), nullable=False),
    sa.Column("since", sa.Double(), nullable=False),
)

TABLES = (
    policies, segments, hosts, instances, events, jobs, agents, subscriptions, deliveries,
    bmcs, store_keys, leadership,
)
