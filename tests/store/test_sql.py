"""SqlStore only: migrations, engine set-up, error translation, concurrency."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from vmha.adapters.store import open_store, upgrade
from vmha.adapters.store.migrate import head_revision
from vmha.adapters.store.schema import metadata
from vmha.adapters.store.sql import SqlStore
from vmha.adapters.store.testing import clear_tables, temporary_pg_database
from vmha.domain.errors import ConfigError, StoreUnavailable
from vmha.domain.model import Segment
from vmha.ports import ListQuery

VERSIONS = Path(upgrade.__code__.co_filename).parent / "migrations" / "versions"
UNREACHABLE_PG = "postgresql+psycopg://vmha:secret@127.0.0.1:1/vmha"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_store(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[SqlStore]:
    if request.param == "sqlite":
        store = open_store(sqlite_url, migrate=True)
        yield store
        store.close()
    else:
        pg: SqlStore = request.getfixturevalue("pg_store")
        clear_tables(pg)
        yield pg


def test_migrations_create_exactly_the_declared_schema(sql_store: SqlStore) -> None:
    with sql_store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    assert sql_store.schema_current() is True


def test_fresh_database_is_not_current_until_upgraded(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    try:
        assert store.schema_current() is False
        newest = max(p.name[:4] for p in VERSIONS.glob("0*.py"))
        assert upgrade(sqlite_url) == head_revision() == newest
        assert store.schema_current() is True
    finally:
        store.close()


def test_open_store_with_migrate_is_idempotent(sqlite_url: str) -> None:
    first = open_store(sqlite_url, migrate=True)
    first.create_segment(Segment("s1"))
    first.close()
    second = open_store(sqlite_url, migrate=True)
    try:
        assert second.schema_current()
        assert second.get_segment("s1") == Segment("s1")
    finally:
        second.close()


def test_postgres_migrate_twice_is_idempotent(pg_url: str) -> None:
    assert upgrade(pg_url) == head_revision()
    store = open_store(pg_url, migrate=True)
    try:
        assert store.schema_current()
    finally:
        store.close()


def test_sqlite_file_uses_wal_in_a_created_directory(tmp_path: Path) -> None:
    db = tmp_path / "deep" / "er" / "vmha.db"
    store = open_store(f"sqlite:///{db}", migrate=True)
    try:
        store.ping()
    finally:
        store.close()
    assert db.parent.is_dir()
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_in_memory_sqlite_works_across_threads() -> None:
    store = open_store("sqlite://", migrate=True)
    try:
        store.create_segment(Segment("s1"))
        seen: list[Segment] = []
        worker = threading.Thread(target=lambda: seen.append(store.get_segment("s1")))
        worker.start()
        worker.join()
        assert seen == [Segment("s1")]
    finally:
        store.close()


def test_unreachable_postgres_is_store_unavailable_quickly() -> None:
    store = open_store(UNREACHABLE_PG)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as info:
            store.ping()
        assert time.monotonic() - started < 5
        assert "127.0.0.1:1" in info.value.detail and "secret" not in info.value.detail
        with pytest.raises(StoreUnavailable):
            store.get_host("h1")
        with pytest.raises(StoreUnavailable):
            open_store(UNREACHABLE_PG, migrate=True)
    finally:
        store.close()


def test_unusable_urls_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not supported"):
        open_store("mysql://localhost/vmha")
    with pytest.raises(ConfigError, match="cannot be parsed"):
        open_store("::not a url::")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="directory"):
        open_store(f"sqlite:///{blocker}/sub/vmha.db")


def test_locked_sqlite_database_is_store_unavailable(tmp_path: Path) -> None:
    db = tmp_path / "vmha.db"
    store = open_store(f"sqlite:///{db}", migrate=True)
    with sqlite3.connect(db, isolation_level=None) as holder:
        holder.execute("BEGIN EXCLUSIVE")
        try:
            store.engine.dispose()
            fast = SqlStore(sa.create_engine(f"sqlite:///{db}", connect_args={"timeout": 0.05}))
            with pytest.raises(StoreUnavailable, match="locked"):
                fast.create_segment(Segment("s1"))
            fast.close()
        finally:
            holder.execute("ROLLBACK")
    store.create_segment(Segment("s1"))
    store.close()



def test_unmigrated_database_says_to_run_the_upgrade(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    try:
        with pytest.raises(StoreUnavailable, match="vmha db upgrade"):
            store.get_segment("s1")
    finally:
        store.close()


@pytest.mark.postgres
def test_unmigrated_postgres_says_to_run_the_upgrade(pg_url: str) -> None:
    with temporary_pg_database() as url:
        store = open_store(url)
        try:
            assert store.schema_current() is False
            with pytest.raises(StoreUnavailable, match="vmha db upgrade"):
                store.list_hosts(ListQuery())
        finally:
            store.close()
