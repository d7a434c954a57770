"""SqlStore: the `Store` port on SQLite or PostgreSQL (SQLAlchemy 2 Core).

Built by `vmha.adapters.store.open_store`; used by the controller (engine,
API) through the Store protocol. Every mutating call is one transaction
that also inserts its events (the outbox, DESIGN.md rule 5). Library
errors never leave this module: connection problems become
StoreUnavailable, key clashes Conflict, missing rows NotFound. References
(a host's segment, an instance's policy) are checked in code so the error
names what is missing; foreign keys back that up against races.

Event ids come from an autoincrement key. On PostgreSQL, writers of events
take a transaction-level advisory lock first, so ids are committed in
increasing order and a reader following `since` never skips a late commit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

import sqlalchemy as sa

from vmha.adapters.store import bmc_rows, codec, migrate
from vmha.adapters.store import schema as t
from vmha.adapters.store.engine import WRITE, is_memory, missing_schema, unavailable
from vmha.adapters.store.query import (
    DELIVERED_KEEP,
    HOSTS,
    INSTANCES,
    JOBS,
    POLICIES,
    SEGMENTS,
    Plan,
    Resource,
    already_exists,
    check_delivery_limit,
    check_event_query,
    plan,
    policy_in_use,
    segment_has_hosts,
    stale_job,
)
from vmha.domain.agents import AgentRecord
from vmha.domain.bmc import BmcRecord
from vmha.domain.errors import Conflict, NotFound
from vmha.domain.model import Event, Host, Instance, Job, Segment
from vmha.ports import (
    Delivery,
    DeliveryStatus,
    EventQuery,
    ListQuery,
    NamedPolicy,
    Page,
    Subscription,
)

T = TypeVar("T")
Row = dict[str, Any]
EVENTS_LOCK = 0x766D6861_0002  # pg_advisory_xact_lock key of event writers

# Connection-level failures: the database is down, unreachable or locked.
UNAVAILABLE = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
)


class SqlStore:
    """The Store port on a SQLAlchemy engine (see the module docstring)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._pg = engine.dialect.name == "postgresql"
        # An in-memory SQLite database is one shared connection: one
        # transaction at a time.
        memory = engine.dialect.name == "sqlite" and is_memory(engine.url)
        self._serial = threading.RLock() if memory else None

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    # -- plumbing ---------------------------------------------------------

    @contextmanager
    def _tx(self, write: bool = False) -> Iterator[sa.Connection]:
        """One transaction; driver errors translated at this boundary."""
        try:
            with self._serial or nullcontext():
                conn = self._engine.connect().execution_options(**{WRITE: write})
                with conn, conn.begin():
                    yield conn
        except UNAVAILABLE as exc:
            raise unavailable(self._engine.url, exc) from exc
        except sa.exc.ProgrammingError as exc:
            if not missing_schema(exc):
                raise
            raise unavailable(self._engine.url, exc) from exc
        except sa.exc.IntegrityError as exc:
            detail = (str(exc.orig).strip().splitlines() or ["integrity error"])[0]
            raise Conflict(
                f"the change clashes with data stored at the same time ({detail}); "
                "reload and retry"
            ) from exc

    def _one(self, conn: sa.Connection, table: sa.Table, kind: str, key: str) -> Row:
        key_col = table.primary_key.columns.values()[0]
        row = conn.execute(sa.select(table).where(key_col == key)).mappings().first()
        if row is None:
            raise NotFound(kind, key)
        return dict(row)

    def _exists(self, conn: sa.Connection, table: sa.Table, key: str) -> bool:
        key_col = table.primary_key.columns.values()[0]
        return conn.execute(sa.select(key_col).where(key_col == key)).first() is not None

    def _require(self, conn: sa.Connection, table: sa.Table, kind: str, key: str | None) -> None:
        if key is not None and not self._exists(conn, table, key):
            raise NotFound(kind, key)

    def _insert_events(self, conn: sa.Connection, rows: list[Row]) -> list[Event]:
        if not rows:
            return []
        if self._pg:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVENTS_LOCK})
        insert = t.events.insert().returning(t.events.c.id, sort_by_parameter_order=True)
        ids = conn.execute(insert, rows).scalars().all()
        pairs = zip(rows, ids, strict=True)
        return [codec.event_from({**row, "id": new_id}) for row, new_id in pairs]

    def _create(
        self, table: sa.Table, kind: str, key: str, row: Row, events: Sequence[Event],
        refs: Sequence[tuple[sa.Table, str, str | None]] = (),
    ) -> Row:
        event_rows = [codec.event_row(e) for e in events]
        with self._tx(write=True) as conn:
            if self._exists(conn, table, key):
                raise Conflict(already_exists(kind, key))
            for ref_table, ref_kind, ref_key in refs:
                self._require(conn, ref_table, ref_kind, ref_key)
            try:
                conn.execute(table.insert(), row)
            except sa.exc.IntegrityError as exc:  # created by someone else just now
                if _duplicate_key(exc):
                    raise Conflict(already_exists(kind, key)) from exc
                raise
            self._insert_events(conn, event_rows)
            return self._one(conn, table, kind, key)

    def _update(
        self, table: sa.Table, kind: str, key: str, row: Row, events: Sequence[Event],
        refs: Sequence[tuple[sa.Table, str, str | None]] = (),
    ) -> Row:
        event_rows = [codec.event_row(e) for e in events]
        key_col = table.primary_key.columns.values()[0]
        with self._tx(write=True) as conn:
            if not self._exists(conn, table, key):
                raise NotFound(kind, key)
            for ref_table, ref_kind, ref_key in refs:
                self._require(conn, ref_table, ref_kind, ref_key)
            conn.execute(table.update().where(key_col == key), row)
            self._insert_events(conn, event_rows)
            return self._one(conn, table, kind, key)

    def _delete(
        self, table: sa.Table, kind: str, key: str, events: Sequence[Event],
        check: Callable[[sa.Connection], None] | None = None,
    ) -> None:
        event_rows = [codec.event_row(e) for e in events]
        key_col = table.primary_key.columns.values()[0]
        with self._tx(write=True) as conn:
            if not self._exists(conn, table, key):
                raise NotFound(kind, key)
            if check is not None:
                check(conn)
            conn.execute(table.delete().where(key_col == key))
            self._insert_events(conn, event_rows)

    def _get(self, table: sa.Table, kind: str, key: str) -> Row:
        with self._tx() as conn:
            return self._one(conn, table, kind, key)

    def _sortable(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """Order like Python sorts text (by code point) on every backend;
        NULL sorts as '' (first ascending)."""
        if not isinstance(column.type, sa.String):
            return column
        expr: sa.ColumnElement[Any] = sa.func.coalesce(column, "")
        return expr.collate("C") if self._pg else expr

    def _page(
        self, resource: Resource, table: sa.Table, query: ListQuery,
        decode: Callable[[Row], T],
        where: Callable[[Plan], list[sa.ColumnElement[bool]]] | None = None,
    ) -> Page[T]:
        p = plan(resource, query)
        sort, key = self._sortable(table.c[p.sort]), self._sortable(table.c[resource.key])
        conditions = where(p) if where else [table.c[k] == v for k, v in p.filters.items()]
        with self._tx() as conn:
            if p.marker is not None:
                found = conn.execute(
                    sa.select(sort, key).where(table.c[resource.key] == p.marker)
                ).first()
                if found is None:
                    raise NotFound(resource.kind, p.marker)
                after = (sort < found[0]) | ((sort == found[0]) & (key < found[1]))
                before = (sort > found[0]) | ((sort == found[0]) & (key > found[1]))
                conditions.append(after if p.desc else before)
            order = [sort.desc(), key.desc()] if p.desc else [sort.asc(), key.asc()]
            stmt = sa.select(table).where(*conditions).order_by(*order).limit(p.limit + 1)
            rows = [dict(r) for r in conn.execute(stmt).mappings()]
        items = rows[: p.limit]
        more = len(rows) > p.limit
        return Page([decode(r) for r in items], items[-1][resource.key] if more else None)

    # -- segments ---------------------------------------------------------

    def create_segment(self, segment: Segment, events: Sequence[Event] = ()) -> Segment:
        refs = [(t.policies, "policy", segment.default_policy)]
        row = self._create(
            t.segments, "segment", segment.name, codec.segment_row(segment), events, refs
        )
        return codec.segment_from(row)

    def get_segment(self, name: str) -> Segment:
        return codec.segment_from(self._get(t.segments, "segment", name))

    def list_segments(self, query: ListQuery) -> Page[Segment]:
        return self._page(SEGMENTS, t.segments, query, codec.segment_from)

    def update_segment(self, segment: Segment, events: Sequence[Event] = ()) -> Segment:
        refs = [(t.policies, "policy", segment.default_policy)]
        row = self._update(
            t.segments, "segment", segment.name, codec.segment_row(segment), events, refs
        )
        return codec.segment_from(row)

    def delete_segment(self, name: str, events: Sequence[Event] = ()) -> None:
        def no_hosts(conn: sa.Connection) -> None:
            count = conn.execute(
                sa.select(sa.func.count()).where(t.hosts.c.segment == name)
            ).scalar_one()
            if count:
                raise Conflict(segment_has_hosts(name, count))

        self._delete(t.segments, "segment", name, events, no_hosts)

    # -- hosts ------------------------------------------------------------

    def create_host(self, host: Host, events: Sequence[Event] = ()) -> Host:
        refs = [(t.segments, "segment", host.segment)]
        row = self._create(t.hosts, "host", host.name, codec.host_row(host), events, refs)
        return codec.host_from(row)

    def get_host(self, name: str) -> Host:
        return codec.host_from(self._get(t.hosts, "host", name))

    def list_hosts(self, query: ListQuery) -> Page[Host]:
        return self._page(HOSTS, t.hosts, query, codec.host_from)

    def update_host(self, host: Host, events: Sequence[Event] = ()) -> Host:
        refs = [(t.segments, "segment", host.segment)]
        row = self._update(t.hosts, "host", host.name, codec.host_row(host), events, refs)
        return codec.host_from(row)

    def delete_host(self, name: str, events: Sequence[Event] = ()) -> None:
        self._delete(t.hosts, "host", name, events)  # its agent row cascades

    # -- agents -------------------------------------------------------------

    def save_agent(self, agent: AgentRecord) -> AgentRecord:
        row = codec.agent_row(agent)
        with self._tx(write=True) as conn:
            self._require(conn, t.hosts, "host", agent.host)
            if self._exists(conn, t.agents, agent.host):
                conn.execute(t.agents.update().where(t.agents.c.host == agent.host), row)
            else:
                conn.execute(t.agents.insert(), row)
            return codec.agent_from(self._one(conn, t.agents, "agent", agent.host))

    def get_agent(self, host: str) -> AgentRecord:
        return codec.agent_from(self._get(t.agents, "agent", host))

    def list_agents(self) -> list[AgentRecord]:
        with self._tx() as conn:
            rows = conn.execute(sa.select(t.agents).order_by(t.agents.c.host)).mappings()
            return [codec.agent_from(dict(r)) for r in rows]

    # -- BMC credentials ------------------------------------------------------

    def save_bmc(self, bmc: BmcRecord) -> BmcRecord:
        row = bmc_rows.bmc_row(bmc)
        with self._tx(write=True) as conn:
            self._require(conn, t.hosts, "host", bmc.host)
            if self._exists(conn, t.bmcs, bmc.host):
                conn.execute(t.bmcs.update().where(t.bmcs.c.host == bmc.host), row)
            else:
                conn.execute(t.bmcs.insert(), row)
            return bmc_rows.bmc_from(self._one(conn, t.bmcs, "BMC of host", bmc.host))

    def get_bmc(self, host: str) -> BmcRecord:
        return bmc_rows.bmc_from(self._get(t.bmcs, "BMC of host", host))

    def delete_bmc(self, host: str) -> None:
        with self._tx(write=True) as conn:
            self._one(conn, t.bmcs, "BMC of host", host)
            conn.execute(t.bmcs.delete().where(t.bmcs.c.host == host))

    # -- instances --------------------------------------------------------

    def create_instance(self, instance: Instance, events: Sequence[Event] = ()) -> Instance:
        refs = [(t.policies, "policy", instance.policy_name)]
        row = self._create(
            t.instances, "instance", instance.id, codec.instance_row(instance), events, refs
        )
        return codec.instance_from(row)

    def get_instance(self, instance_id: str) -> Instance:
        return codec.instance_from(self._get(t.instances, "instance", instance_id))

    def list_instances(self, query: ListQuery) -> Page[Instance]:
        def where(p: Plan) -> list[sa.ColumnElement[bool]]:
            conditions: list[sa.ColumnElement[bool]] = []
            for k, v in p.filters.items():
                if k == "segment":  # instances whose host belongs to the segment
                    in_segment = sa.select(t.hosts.c.name).where(t.hosts.c.segment == v)
                    conditions.append(t.instances.c.host.in_(in_segment))
                else:
                    conditions.append(t.instances.c[k] == v)
            return conditions

        return self._page(INSTANCES, t.instances, query, codec.instance_from, where)

    def update_instance(self, instance: Instance, events: Sequence[Event] = ()) -> Instance:
        refs = [(t.policies, "policy", instance.policy_name)]
        row = self._update(
            t.instances, "instance", instance.id, codec.instance_row(instance), events, refs
        )
        return codec.instance_from(row)

    def delete_instance(self, instance_id: str, events: Sequence[Event] = ()) -> None:
        self._delete(t.instances, "instance", instance_id, events)

    # -- named policies ---------------------------------------------------

    def create_policy(self, policy: NamedPolicy) -> NamedPolicy:
        row = self._create(t.policies, "policy", policy.name, codec.policy_row(policy), ())
        return codec.policy_from(row)

    def get_policy(self, name: str) -> NamedPolicy:
        return codec.policy_from(self._get(t.policies, "policy", name))

    def list_policies(self, query: ListQuery) -> Page[NamedPolicy]:
        return self._page(POLICIES, t.policies, query, codec.policy_from)

    def update_policy(self, policy: NamedPolicy) -> NamedPolicy:
        row = self._update(t.policies, "policy", policy.name, codec.policy_row(policy), ())
        return codec.policy_from(row)

    def delete_policy(self, name: str) -> None:
        def unused(conn: sa.Connection) -> None:
            count = sa.select(sa.func.count())
            instances = conn.execute(
                count.where(t.instances.c.policy_name == name)
            ).scalar_one()
            segments = conn.execute(
                count.where(t.segments.c.default_policy == name)
            ).scalar_one()
            if instances or segments:
                raise Conflict(policy_in_use(name, instances, segments))

        self._delete(t.policies, "policy", name, (), unused)

    # -- events -----------------------------------------------------------

    def append_events(self, events: Sequence[Event]) -> list[Event]:
        rows = [codec.event_row(e) for e in events]
        if not rows:
            return []
        with self._tx(write=True) as conn:
            return self._insert_events(conn, rows)

    def list_events(self, query: EventQuery) -> list[Event]:
        check_event_query(query)
        c = t.events.c
        stmt = sa.select(t.events).where(c.id > query.since)
        if query.types:
            stmt = stmt.where(sa.or_(*(_type_condition(c.type, p) for p in query.types)))
        if query.subject is not None:
            stmt = stmt.where(c.subject == query.subject)
        if query.project is not None:
            stmt = stmt.where(c.project == query.project)
        stmt = stmt.order_by(c.id).limit(query.limit)
        with self._tx() as conn:
            return [codec.event_from(dict(r)) for r in conn.execute(stmt).mappings()]

    def last_event_id(self) -> int:
        with self._tx() as conn:
            return int(conn.execute(sa.select(sa.func.max(t.events.c.id))).scalar() or 0)

    # -- webhook subscriptions ------------------------------------------------

    def create_subscription(self, subscription: Subscription) -> Subscription:
        row = codec.subscription_row(subscription)
        created = self._create(t.subscriptions, "subscription", subscription.id, row, ())
        return codec.subscription_from(created)

    def get_subscription(self, subscription_id: str) -> Subscription:
        return codec.subscription_from(
            self._get(t.subscriptions, "subscription", subscription_id)
        )

    def list_subscriptions(self, owner: str | None = None) -> list[Subscription]:
        c = t.subscriptions.c
        stmt = sa.select(t.subscriptions).order_by(c.created_at, c.id)
        if owner is not None:
            stmt = stmt.where(c.owner == owner)
        with self._tx() as conn:
            return [codec.subscription_from(dict(r)) for r in conn.execute(stmt).mappings()]

    def delete_subscription(self, subscription_id: str) -> None:
        def drop_deliveries(conn: sa.Connection) -> None:
            # Explicit as well as ON DELETE CASCADE: older SQLite files may
            # have foreign keys off.
            conn.execute(
                t.deliveries.delete().where(t.deliveries.c.subscription == subscription_id)
            )

        self._delete(t.subscriptions, "subscription", subscription_id, (), drop_deliveries)

    def save_deliveries(
        self, subscription_id: str, deliveries: Sequence[Delivery], cursor: int | None = None
    ) -> None:
        rows = [codec.delivery_row(d) for d in deliveries]
        with self._tx(write=True) as conn:
            self._require(conn, t.subscriptions, "subscription", subscription_id)
            for row in rows:
                self._upsert_delivery(conn, subscription_id, row)
            if cursor is not None:
                c = t.subscriptions.c
                conn.execute(
                    t.subscriptions.update()
                    .where(c.id == subscription_id, c.cursor < cursor)
                    .values(cursor=cursor)
                )
            if rows:
                self._prune_delivered(conn, subscription_id)

    def _upsert_delivery(self, conn: sa.Connection, subscription_id: str, row: Row) -> None:
        c = t.deliveries.c
        key = (c.subscription == subscription_id, c.event_id == row["event_id"])
        values = {**row, "subscription": subscription_id}
        if conn.execute(t.deliveries.update().where(*key), values).rowcount == 0:
            conn.execute(t.deliveries.insert(), values)

    def _prune_delivered(self, conn: sa.Connection, subscription_id: str) -> None:
        c = t.deliveries.c
        mine = (c.subscription == subscription_id, c.status == DeliveryStatus.DELIVERED.value)
        oldest_kept = conn.execute(
            sa.select(c.event_id).where(*mine).order_by(c.event_id.desc())
            .offset(DELIVERED_KEEP - 1).limit(1)
        ).scalar()
        if oldest_kept is not None:
            conn.execute(t.deliveries.delete().where(*mine, c.event_id < oldest_kept))

    def list_deliveries(
        self, subscription_id: str, status: DeliveryStatus | None = None, limit: int = 100
    ) -> list[Delivery]:
        check_delivery_limit(limit)
        c = t.deliveries.c
        stmt = sa.select(t.deliveries).where(c.subscription == subscription_id)
        if status is not None:
            stmt = stmt.where(c.status == status.value)
        stmt = stmt.order_by(c.event_id.desc()).limit(limit)
        with self._tx() as conn:
            self._require(conn, t.subscriptions, "subscription", subscription_id)
            return [codec.delivery_from(dict(r)) for r in conn.execute(stmt).mappings()]

    # -- jobs -------------------------------------------------------------

    def create_job(self, job: Job, events: Sequence[Event] = ()) -> Job:
        return codec.job_from(self._create(t.jobs, "job", job.id, codec.job_row(job), events))

    def get_job(self, job_id: str) -> Job:
        return codec.job_from(self._get(t.jobs, "job", job_id))

    def list_jobs(self, query: ListQuery) -> Page[Job]:
        return self._page(JOBS, t.jobs, query, codec.job_from)

    def save_job(self, job: Job, expected_generation: int, events: Sequence[Event] = ()) -> Job:
        row, event_rows = codec.job_row(job), [codec.event_row(e) for e in events]
        c = t.jobs.c
        with self._tx(write=True) as conn:
            # Compare-and-set in one statement: two savers cannot both win.
            done = conn.execute(
                t.jobs.update().where(c.id == job.id, c.generation == expected_generation),
                row,
            )
            if done.rowcount != 1:
                stored = self._one(conn, t.jobs, "job", job.id)
                raise Conflict(stale_job(job.id, expected_generation, stored["generation"]))
            self._insert_events(conn, event_rows)
            return codec.job_from(self._one(conn, t.jobs, "job", job.id))

    # -- health -----------------------------------------------------------

    def ping(self) -> None:
        with self._tx() as conn:
            conn.execute(sa.text("SELECT 1"))

    def schema_current(self) -> bool:
        with self._tx() as conn:
            current = migrate.current_revisions(conn)
        return current == {migrate.head_revision()}

    def upgrade(self) -> str:
        """Apply missing migrations; return the head revision."""
        with self._serial or nullcontext():
            try:
                return migrate.upgrade_engine(self._engine)
            except UNAVAILABLE as exc:
                raise unavailable(self._engine.url, exc) from exc


def _type_condition(column: sa.ColumnElement[str], pattern: str) -> sa.ColumnElement[bool]:
    """Exact type, or a prefix for 'x.*'. substr, not LIKE: LIKE ignores case
    on SQLite and would treat '_' and '%' as wildcards."""
    if not pattern.endswith("*"):
        return column == pattern
    prefix = pattern[:-1]
    if not prefix:
        return sa.true()
    return sa.func.substr(column, 1, len(prefix)) == prefix


def _duplicate_key(exc: sa.exc.IntegrityError) -> bool:
    cause = exc.orig
    return getattr(cause, "sqlstate", None) == "23505" or "UNIQUE constraint" in str(cause)
