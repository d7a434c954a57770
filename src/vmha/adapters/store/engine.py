"""Database engines for the SQL store, and translation of driver errors.

`make_engine(url)` builds a SQLAlchemy engine set up for vmha:
- SQLite: parent directory created, WAL, foreign keys on, a busy timeout,
  and explicit transactions (`BEGIN IMMEDIATE` for writes, so two writers
  wait for each other instead of failing half-way); an in-memory database
  is one shared connection, serialised by the store.
- PostgreSQL (psycopg 3): a connect timeout and pre-ping, so a restarted
  server costs one failed call, not a stuck pool.
`unavailable(url, exc)` turns a connection failure into StoreUnavailable.
Used by SqlStore and the migrations; nothing else here touches tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from vmha.domain.errors import ConfigError, StoreUnavailable
from vmha.redact import hide_password

WRITE = "vmha_write"  # execution option: this transaction writes
SQLITE_BUSY_S = 30.0
CONNECT_TIMEOUT_S = 5


def is_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or "mode=memory" in database


def make_engine(url: str) -> sa.Engine:
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:  # ValueError: e.g. a bad port
        raise ConfigError(f"database URL {hide_password(url)!r} cannot be parsed; "
                          "write it like postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB "
                          "(URL-encode special characters)") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend == "postgresql":
        return sa.create_engine(
            parsed, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}
        )
    raise ConfigError(
        f"database URL {safe(parsed)!r}: {backend!r} is not supported; "
        "use sqlite:///path/to/vmha.db or postgresql+psycopg://..."
    )


def _sqlite_engine(url: URL) -> sa.Engine:
    memory = is_memory(url)
    if not memory and url.database and not url.database.startswith("file:"):
        folder = Path(url.database).expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the directory {str(folder)!r} for the SQLite database: "
                f"{exc.strerror}; choose another path or fix its permissions"
            ) from exc
    kwargs: dict[str, Any] = {
        "connect_args": {"timeout": SQLITE_BUSY_S, "check_same_thread": False}
    }
    if memory:
        kwargs["poolclass"] = StaticPool  # one connection, or each would be a new db
    engine = sa.create_engine(url, **kwargs)

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself (the
        # driver's implicit transactions start too late for reads).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_S * 1000)}")
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable enough under WAL
        cursor.close()

    def on_begin(conn: sa.Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get(WRITE) else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)
    return engine


def safe(url: URL | str) -> str:
    """The URL without its password, for messages."""
    parsed = make_url(url) if isinstance(url, str) else url
    return parsed.render_as_string(hide_password=True)


def missing_schema(exc: BaseException) -> bool:
    """Whether a driver error says a table is missing (not migrated yet)."""
    cause = getattr(exc, "orig", None) or exc
    return type(cause).__name__ == "UndefinedTable" or "no such table" in str(cause)


def unavailable(url: URL | str, exc: BaseException) -> StoreUnavailable:
    cause = getattr(exc, "orig", None) or exc
    first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    if missing_schema(exc):
        return StoreUnavailable(
            f"the database at {safe(url)} has no vmha tables ({first_line}); "
            "run `vmha db upgrade` (or start the controller with migrations on)"
        )
    return StoreUnavailable(
        f"the database at {safe(url)} cannot be used: {first_line}; "
        "check that it is running and reachable, then retry"
    )
