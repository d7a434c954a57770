"""Alembic environment of the vmha store (run by Alembic, not imported).

Configured in code by `vmha.adapters.store.migrate` (no alembic.ini): the
caller passes an open connection in `config.attributes["connection"]`, or
a URL in the `sqlalchemy.url` option. Online mode only.
"""

from __future__ import annotations

from alembic import context

from vmha.adapters.store.engine import make_engine
from vmha.adapters.store.schema import metadata

config = context.config


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,  # SQLite can only ALTER tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()
