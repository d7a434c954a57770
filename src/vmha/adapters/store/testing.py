"""Helpers for tests that need a real PostgreSQL: a throw-away database.

Used by tests/store/conftest.py and any other test tier (integration, API)
that wants the SQL store on PostgreSQL. Never used by the service itself.

    with temporary_pg_database(admin_url) as url:   # CREATE ... DROP
        store = open_store(url, migrate=True)
        ...
        clear_tables(store)                          # between tests
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from vmha.adapters.store.engine import unavailable
from vmha.adapters.store.schema import TABLES
from vmha.adapters.store.sql import SqlStore

DEFAULT_PG_URL = "postgresql+psycopg://root@/postgres?host=/var/run/postgresql"


def pg_admin_url() -> str:
    """The server tests may use: env VMHA_TEST_PG_URL, else the local socket."""
    return os.environ.get("VMHA_TEST_PG_URL", DEFAULT_PG_URL)


def _admin_engine(admin_url: str) -> sa.Engine:
    return sa.create_engine(
        admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5},
        poolclass=sa.NullPool,
    )


@contextmanager
def temporary_pg_database(admin_url: str | None = None) -> Iterator[str]:
    """Create `vmha_test_<hex>` on the server of `admin_url`, yield its URL,
    drop it afterwards (forcing out leftover sessions). Raises
    StoreUnavailable when the server cannot be reached."""
    admin: URL = make_url(admin_url or pg_admin_url())
    name = f"vmha_test_{secrets.token_hex(6)}"
    engine = _admin_engine(admin.render_as_string(hide_password=False))
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        engine.dispose()
        raise unavailable(admin, exc) from exc
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


def clear_tables(store: SqlStore) -> None:
    """Empty every vmha table and restart the event ids (between tests)."""
    names = [table.name for table in reversed(TABLES)]  # children first
    with store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE")
            return
        for name in names:
            conn.exec_driver_sql(f"DELETE FROM {name}")  # noqa: S608 - fixed table names
        conn.exec_driver_sql("DELETE FROM sqlite_sequence")
