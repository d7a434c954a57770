"""SqlStore only: migrations, engine set-up, error translation, concurrency."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from vmha.adapters.store import open_store, upgrade
from vmha.adapters.store.migrate import alembic_config, head_revision
from vmha.adapters.store.schema import metadata
from vmha.adapters.store.sql import SqlStore
from vmha.adapters.store.testing import clear_tables, temporary_pg_database
from vmha.domain.errors import ConfigError, StoreUnavailable
from vmha.domain.jobs import HostRecoveryData, MoveState
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


def test_jobs_written_before_typed_data_are_completed_by_0008(sqlite_url: str) -> None:
    """A job row written by an older vmha (0007's data) lacks keys the typed
    records have; migration 0008 fills them in and keeps what was there."""
    bare = open_store(sqlite_url)  # no migration yet
    config = alembic_config()
    with bare.engine.connect() as conn, conn.begin():
        config.attributes["connection"] = conn
        command.upgrade(config, "0007")
        old = {"host": "h1", "segment": "s1", "levels": [["ipmi"]], "last_seen": 5.0,
               "fence": {"level": 0, "phase": "confirm", "started": True,
                         "confirmed_by": None, "retry_at": 0.0},
               "instances": {"vm1": {"state": "evacuating", "target": "h2", "attempt": 1,
                                     "stopped": False, "reason": "", "excluded": []}}}
        conn.execute(sa.text(
            "INSERT INTO jobs (id, kind, subject, state, generation, steps, created_at, "
            "updated_at, reason, data) VALUES ('j1', 'host_recovery', 'h1', 'evacuating', 3, "
            "'[]', 1.0, 2.0, 'old', :data)"), {"data": json.dumps(old)})
        command.upgrade(config, "head")
        raw = json.loads(conn.execute(sa.text("SELECT data FROM jobs")).scalar_one())
    bare.close()
    assert raw["fence"] == {**old["fence"], "proof_at": 0.0}  # type: ignore[dict-item]
    # 0010: no self-fence window yet (its next sample starts one)
    assert raw["cut_off"] == {"since": 0.0, "sampled_at": 0.0, "samples": 0}
    assert raw["instances"]["vm1"]["order"] == 0 and raw["instances"]["vm1"]["custom"] is False
    assert raw["instances"]["vm1"]["target"] == "h2" and raw["requested_by"] is None
    store = open_store(sqlite_url)
    try:
        job = store.get_job("j1")
        assert isinstance(job.data, HostRecoveryData)
        assert job.data.instances["vm1"].state is MoveState.EVACUATING
        assert job.data.to_storage() == raw
    finally:
        store.close()
