"""The durable store of vmha (the `Store` port): SQL and an in-memory fake.

    open_store(url, migrate=False) -> SqlStore   # SQLite or PostgreSQL
    upgrade(url) -> str                          # apply migrations, return head

`FakeStore` (`vmha.adapters.store.fake`) serves unit tests and the
simulator. The SQL modules load lazily, so importing the fake stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vmha.adapters.store.sql import SqlStore

__all__ = ["open_store", "upgrade"]


def open_store(url: str, *, migrate: bool = False) -> SqlStore:
    """A SqlStore on `url`; with `migrate`, apply missing migrations first.

    Raises ConfigError for an unusable URL, StoreUnavailable when
    migrating and the database cannot be reached (without `migrate`, the
    first call reports that)."""
    from vmha.adapters.store.engine import make_engine
    from vmha.adapters.store.sql import SqlStore

    store = SqlStore(make_engine(url))
    if migrate:
        try:
            store.upgrade()
        except BaseException:
            store.close()
            raise
    return store


def upgrade(url: str) -> str:
    """Apply every migration missing on `url`; return the head revision."""
    store = open_store(url)
    try:
        return store.upgrade()
    finally:
        store.close()
