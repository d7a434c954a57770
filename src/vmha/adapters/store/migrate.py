"""Alembic, configured in code: apply the store's migrations, read revisions.

The migration scripts live in `migrations/` next to this module (shipped in
the wheel), so no alembic.ini is needed at runtime. Called by SqlStore,
`open_store(url, migrate=True)` and `vmha db upgrade`.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from vmha.adapters.store.engine import WRITE

SCRIPT_LOCATION = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock key held while migrating: two controllers starting
# at once apply the migrations one after the other, not both at once.
MIGRATION_LOCK = 0x766D6861_0001


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the store has no migrations"
    return head


def current_revisions(conn: sa.Connection) -> set[str]:
    return set(MigrationContext.configure(conn).get_current_heads())


def upgrade_engine(engine: sa.Engine) -> str:
    """Apply every missing migration in one transaction; return the head."""
    with engine.connect().execution_options(**{WRITE: True}) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    return head_revision()
