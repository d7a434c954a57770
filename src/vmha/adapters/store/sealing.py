"""Secrets at rest in the SQL store: sealed on the way in, opened on the way out.

vmha must use some secrets again later, so they are encrypted rather than
hashed, with the service's Fernet key (vmha.adapters.fencing.secrets):
- `agents.secret` (the HMAC key of a host's heartbeats),
- `agents.api_token` (what the controller presents to the agent's API),
- `subscriptions.secret` (the HMAC key of a webhook's signatures),
- the `token` of an event payload (`decision.requested`: the capability
  that answers a custom decision).
A sealed value is `sealed:<Fernet token>`. Callers of the Store see clear
values only: every reader (API, SSE, dispatcher, engine) gets the token
and the secrets back as they were given. Without a key (a store opened by
tests or tools without one) values are kept as given; a sealed value then
cannot be read (ConfigError naming the key settings).

`adopt_key` runs once when the controller opens the store (migration 0006
made `store_keys`): it records a sealed check value on first use, refuses
another key afterwards (ConfigError: a second controller with its own key,
a lost or replaced key file), and seals the values stored in clear before.

Used by SqlStore only (FakeStore keeps nothing at rest). No I/O of its own
besides the statements `adopt_key` runs on the connection it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from vmha.adapters.fencing.secrets import KEY_ENV, SecretBox
from vmha.adapters.store import schema as t
from vmha.domain.errors import ConfigError

log = logging.getLogger("vmha.store")

Row = dict[str, Any]
SEALED = "sealed:"
SECRET_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "agents": ("secret", "api_token"),
    "subscriptions": ("secret",),
}
PAYLOAD_SECRETS = ("token",)  # event payload keys sealed at rest
CHECK_NAME = "secrets"
CHECK_TEXT = "vmha store secrets"
SETTINGS = f"[fencing] secret_key_file or the environment variable {KEY_ENV}"


class Sealer:
    """Seals and opens the secret columns and payload keys of rows."""

    def __init__(self, box: SecretBox | None = None) -> None:
        self.box = box

    def seal(self, value: str) -> str:
        if self.box is None or not value or value.startswith(SEALED):
            return value
        return SEALED + self.box.encrypt(value)

    def open(self, value: str, what: str) -> str:
        if not value.startswith(SEALED):
            return value  # stored in clear (no key, or from before 0006)
        if self.box is None:
            raise ConfigError(f"{what} is encrypted in the store and no key is configured: "
                              f"set {SETTINGS} to the key this database was used with")
        return self.box.decrypt(value.removeprefix(SEALED), what)

    def row(self, table: str, row: Row) -> Row:
        """`row` with its secret columns sealed."""
        return {k: self.seal(v) if k in SECRET_COLUMNS[table] else v for k, v in row.items()}

    def opened(self, table: str, row: Mapping[str, Any]) -> Row:
        what = f"the {table} record {next(iter(row.values()))!r}"
        return {k: self.open(v, what) if k in SECRET_COLUMNS[table] else v
                for k, v in row.items()}

    def event_row(self, row: Row) -> Row:
        payload = row["payload"]
        if not any(key in payload for key in PAYLOAD_SECRETS):
            return row
        sealed = {k: self.seal(v) if k in PAYLOAD_SECRETS and isinstance(v, str) else v
                  for k, v in payload.items()}
        return {**row, "payload": sealed}

    def opened_event(self, row: Mapping[str, Any]) -> Row:
        payload = row["payload"]
        if not any(key in payload for key in PAYLOAD_SECRETS):
            return dict(row)
        what = f"the {row['type']} event {row.get('id')}"
        opened = {k: self.open(v, what) if k in PAYLOAD_SECRETS and isinstance(v, str) else v
                  for k, v in payload.items()}
        return {**row, "payload": opened}


def adopt_key(conn: sa.Connection, sealer: Sealer) -> int:
    """Check the key against the database (record it on first use) and seal
    what is still in clear; returns how many values were sealed."""
    assert sealer.box is not None
    c = t.store_keys.c
    check = conn.execute(sa.select(c.check).where(c.name == CHECK_NAME)).scalar()
    if check is None:
        conn.execute(t.store_keys.insert(), {"name": CHECK_NAME, "check": sealer.seal(CHECK_TEXT)})
    else:
        try:
            sealer.open(str(check), "the key check")
        except ConfigError as exc:
            raise ConfigError(
                "the secrets in this database were encrypted with another key: configure the "
                f"key it was used with ({SETTINGS}; a controller that generated its own key "
                "keeps it in secret.key beside its SQLite database or in store.data_dir)"
            ) from exc
    return _seal_columns(conn, sealer) + _seal_payloads(conn, sealer)


def _seal_columns(conn: sa.Connection, sealer: Sealer) -> int:
    count = 0
    for name, columns in SECRET_COLUMNS.items():
        table = t.metadata.tables[name]
        key = table.primary_key.columns.values()[0]
        for row in conn.execute(sa.select(table)).mappings():
            clear = {c: row[c] for c in columns if row[c] and not row[c].startswith(SEALED)}
            if clear:
                sealed = {c: sealer.seal(v) for c, v in clear.items()}
                conn.execute(table.update().where(key == row[key.name]).values(**sealed))
                count += len(clear)
    return count


def _seal_payloads(conn: sa.Connection, sealer: Sealer) -> int:
    count = 0
    c = t.events.c
    for row in conn.execute(sa.select(c.id, c.payload).where(c.type == "decision.requested")):
        sealed = sealer.event_row({"payload": row.payload})["payload"]
        if sealed != row.payload:
            conn.execute(t.events.update().where(c.id == row.id).values(payload=sealed))
            count += 1
    return count
