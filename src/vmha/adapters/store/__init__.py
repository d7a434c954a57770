"""The durable store of vmha (the `Store` port): SQL and an in-memory fake.

    open_store(url, migrate=False) -> SqlStore   # SQLite or PostgreSQL
    upgrade(url) -> str                          # apply migrations, return head

`FakeStore` (`vmha.adapters.store.fake`) serves unit tests and the
simulator. The SQL modules load lazily, so importing the fake stays cheap.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vmha.adapters.fencing.secrets import SecretBox
    from vmha.adapters.store.sql import SqlStore

log = logging.getLogger("vmha.store")

__all__ = ["open_store", "upgrade"]


def open_store(url: str, *, migrate: bool = False, box: SecretBox | None = None) -> SqlStore:
    """A SqlStore on `url`; with `migrate`, apply missing migrations first.
    With `box` (the service's key) the store's secrets are sealed at rest:
    the key is checked against the database and values still in clear are
    sealed now (vmha.adapters.store.sealing).

    Raises ConfigError for an unusable URL or another key than the
    database's, StoreUnavailable when migrating and the database cannot be
    reached (without `migrate`, the first call reports that)."""
    from vmha.adapters.store.engine import make_engine
    from vmha.adapters.store.sealing import Sealer
    from vmha.adapters.store.sql import SqlStore

    store = SqlStore(make_engine(url), Sealer(box))
    try:
        if migrate:
            store.upgrade()
        if box is not None and store.adopt_key():
            log.info("store: sealed the secrets that were stored in clear with the service's key")
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
