"""Store fixtures: one `store` per backend (fake, sqlite, postgres).

`pg_url` (session scope) is a migrated throw-away PostgreSQL database,
created once per run and dropped at the end. When the server is not
reachable the postgres tier fails (tests/tiers.py: VMHA_TEST_SKIP=postgres opts out).
Other tiers can build the same thing from
`vmha.adapters.store.testing.temporary_pg_database`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tiers import require_tier
from vmha.adapters.store import open_store
from vmha.adapters.store.fake import FakeStore
from vmha.adapters.store.sql import SqlStore
from vmha.adapters.store.testing import clear_tables, pg_admin_url, temporary_pg_database
from vmha.domain.errors import StoreUnavailable
from vmha.ports import Store

_pg_missing: list[str] = []  # why PostgreSQL is unusable, found once per run


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with ExitStack() as stack:
        try:
            if _pg_missing:
                raise StoreUnavailable(_pg_missing[0])
            url = stack.enter_context(temporary_pg_database(pg_admin_url()))
        except StoreUnavailable as exc:
            _pg_missing[:] = [exc.detail]
            require_tier("postgres", f"no PostgreSQL (scripts/ensure-postgres.sh starts one; "
                         f"or set VMHA_TEST_PG_URL): {exc.detail}")
        open_store(url, migrate=True).close()
        yield url


@pytest.fixture(scope="session")
def pg_store(pg_url: str) -> Iterator[SqlStore]:
    store = open_store(pg_url)
    yield store
    store.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'vmha.db'}"


@pytest.fixture(
    params=["fake", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def store(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Store]:
    if request.param == "fake":
        yield FakeStore()
    elif request.param == "sqlite":
        sql = open_store(sqlite_url, migrate=True)
        yield sql
        sql.close()
    else:
        pg: SqlStore = request.getfixturevalue("pg_store")
        clear_tables(pg)
        yield pg
