"""Bus fixtures: a real migrated SQLite store per test (copied from one
template per session, like tests/api)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmha.adapters.store import open_store
from vmha.adapters.store.sql import SqlStore


@pytest.fixture(scope="session")
def bus_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bus-template") / "vmha.db"
    open_store(f"sqlite:///{path}", migrate=True).close()
    return path


@pytest.fixture
def store(bus_template_db: Path, tmp_path: Path) -> Iterator[SqlStore]:
    path = tmp_path / "vmha.db"
    shutil.copyfile(bus_template_db, path)
    sql = open_store(f"sqlite:///{path}")
    yield sql
    sql.close()
