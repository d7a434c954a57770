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

import copy
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

import sqlalchemy as sa

from vmha.adapters.store import bmc_rows, codec, migrate
from vmha.adapters.store import schema as t
from vmha.adapters.store.engine import WRITE, is_memory, missing_schema, unavailable
from vmha.adapters.store.query import (
    DELIVERED_KEEP,
    FENCED_TABLES,
    HOSTS,
    INSTANCES,
    JOBS,
    LEADERSHIP_ROW,
    POLICIES,
    PROJECT_JOB_KINDS,
    SEGMENTS,
    Plan,
    Resource,
    already_exists,
    check_delivery_limit,
    check_event_query,
    host_has_job,
    plan,
    policy_in_use,
    registration_plan,
    segment_has_hosts,
    stale_job,
    superseded,
)
from vmha.adapters.store.sealing import Sealer, adopt_key
from vmha.domain.agents import AgentRecord, Registered, Registration
from vmha.domain.bmc import BmcRecord
from vmha.domain.errors import Conflict, NotFound, NotLeader, StaleWrite
from vmha.domain.model import TERMINAL_JOB_STATES, Event, Host, Instance, Job, JobKind, Segment
from vmha.ports import (
    Delivery,
    DeliveryStatus,
    EventQuery,
    Leadership,
    ListQuery,
    NamedPolicy,
    Page,
    Subscription,
)

T = TypeVar("T")
Row = dict[str, Any]
EVENTS_LOCK = 0x766D6861_0002  # pg_advisory_xact_lock key of event writers
PRUNE_EVERY = 50  # DELIVERED records of a subscription added between prunes
NEW_EVENTS = "vmha.new_events"  # connection info: events stored by the open transaction

# Connection-level failures: the database is down, unreachable or locked.
UNAVAILABLE = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
)


class SqlStore:
    """The Store port on a SQLAlchemy engine (see the module docstring)."""

    def __init__(self, engine: sa.Engine, sealer: Sealer | None = None) -> None:
        self._engine = engine
        self._seal = sealer or Sealer()  # secrets at rest (sealing.py)
        self._pg = engine.dialect.name == "postgresql"
        # An in-memory SQLite database is one shared connection: one
        # transaction at a time.
        memory = engine.dialect.name == "sqlite" and is_memory(engine.url)
        self._serial = threading.RLock() if memory else None
        self._epoch: int | None = None  # set on a view made by fenced()
        # Told the newest event id after every commit that stored events
        # (the in-process bus, vmha.adapters.bus.local): from the writer's thread.
        self.on_commit: Callable[[list[Event]], None] | None = None
        self._unpruned: dict[str, int] = {}  # DELIVERED records added since the last prune

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    # -- plumbing ---------------------------------------------------------

    @contextmanager
    def _tx(self, write: bool = False) -> Iterator[sa.Connection]:
        """One transaction; driver errors translated at this boundary. After
        a commit that stored events, `on_commit` gets them (with their ids)."""
        stored: list[Event] = []
        try:
            with self._serial or nullcontext():
                conn = self._engine.connect().execution_options(**{WRITE: write})
                with conn, conn.begin():
                    conn.info[NEW_EVENTS] = stored
                    try:
                        yield conn
                    finally:
                        conn.info.pop(NEW_EVENTS, None)
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
        if stored and self.on_commit is not None:
            self.on_commit(stored)

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

    def _fence(self, conn: sa.Connection, table: sa.Table) -> None:
        """On a fenced view: refuse an engine's write once a newer leader
        claimed the store. The statement locks the leadership row until the
        transaction ends, so a claim waits for writes already under way."""
        if self._epoch is None or table.name not in FENCED_TABLES:
            return
        c = t.leadership.c
        done = conn.execute(t.leadership.update()
                            .where(c.id == LEADERSHIP_ROW, c.epoch == self._epoch)
                            .values(epoch=c.epoch))
        if done.rowcount != 1:
            raise NotLeader(superseded(self._epoch))

    def _insert_events(self, conn: sa.Connection, rows: list[Row]) -> list[Event]:
        if not rows:
            return []
        if self._pg:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVENTS_LOCK})
        insert = t.events.insert().returning(t.events.c.id, sort_by_parameter_order=True)
        ids = conn.execute(insert, [self._seal.event_row(r) for r in rows]).scalars().all()
        pairs = zip(rows, ids, strict=True)
        events = [codec.event_from({**row, "id": new_id}) for row, new_id in pairs]
        conn.info.get(NEW_EVENTS, []).extend(events)
        return events

    def _create(
        self, table: sa.Table, kind: str, key: str, row: Row, events: Sequence[Event],
        refs: Sequence[tuple[sa.Table, str, str | None]] = (),
    ) -> Row:
        event_rows = [codec.event_row(e) for e in events]
        if "version" in table.c:
            row = {**row, "version": 1}
        with self._tx(write=True) as conn:
            self._fence(conn, table)
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
        refs: Sequence[tuple[sa.Table, str, str | None]] = (), read_version: int = 0,
    ) -> Row:
        """Replace the row; a versioned row only while it is still at
        `read_version` (0: unchecked), one version up (StaleWrite if not)."""
        event_rows = [codec.event_row(e) for e in events]
        key_col = table.primary_key.columns.values()[0]
        with self._tx(write=True) as conn:
            self._fence(conn, table)
            if not self._exists(conn, table, key):
                raise NotFound(kind, key)
            for ref_table, ref_kind, ref_key in refs:
                self._require(conn, ref_table, ref_kind, ref_key)
            stmt = table.update().where(key_col == key)
            if "version" in table.c:
                row = {**row, "version": table.c.version + 1}
                if read_version:
                    stmt = stmt.where(table.c.version == read_version)
            if conn.execute(stmt.values(row)).rowcount != 1:  # compare-and-set: one winner
                stored = self._one(conn, table, kind, key)
                raise StaleWrite(kind, key, int(stored["version"]), read_version)
            self._insert_events(conn, event_rows)
            return self._one(conn, table, kind, key)

    def _delete(
        self, table: sa.Table, kind: str, key: str, events: Sequence[Event],
        check: Callable[[sa.Connection], None] | None = None,
    ) -> None:
        event_rows = [codec.event_row(e) for e in events]
        key_col = table.primary_key.columns.values()[0]
        with self._tx(write=True) as conn:
            self._fence(conn, table)
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
            result = conn.execute(stmt)
            names = list(result.keys())  # once: a RowMapping builds its keys per row
            rows = [dict(zip(names, r, strict=True)) for r in result]
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

    def host_versions(self) -> dict[str, int]:
        with self._tx() as conn:
            return {name: int(version) for name, version in conn.execute(
                sa.select(t.hosts.c.name, t.hosts.c.version))}

    def get_hosts(self, names: Sequence[str]) -> list[Host]:
        with self._tx() as conn:
            return self._rows_in(conn, t.hosts, names, codec.host_from)

    def update_host(self, host: Host, events: Sequence[Event] = ()) -> Host:
        refs = [(t.segments, "segment", host.segment)]
        row = self._update(t.hosts, "host", host.name, codec.host_row(host), events, refs,
                           host.version)
        return codec.host_from(row)

    def update_hosts(self, changes: Sequence[tuple[Host, Sequence[Event]]]) -> list[Host | None]:
        """`update_host` for many hosts in one transaction (see Store)."""
        prepared = [(host, codec.host_row(host), [codec.event_row(e) for e in events])
                    for host, events in changes]
        c = t.hosts.c
        with self._tx(write=True) as conn:
            self._fence(conn, t.hosts)
            written: list[bool] = []
            event_rows: list[Row] = []
            for host, row, rows in prepared:
                stmt = (t.hosts.update()
                        .where(c.name == host.name, c.segment == host.segment,
                               c.version == host.version)
                        .values({**row, "version": c.version + 1}))
                ok = bool(host.version) and conn.execute(stmt).rowcount == 1
                written.append(ok)
                if ok:
                    event_rows.extend(rows)
            self._insert_events(conn, event_rows)
            names = [host.name for (host, _, _), ok in zip(prepared, written, strict=True) if ok]
            stored = {h.name: h for h in self._rows_in(conn, t.hosts, names, codec.host_from)}
        return [stored.get(host.name) if ok else None
                for (host, _, _), ok in zip(prepared, written, strict=True)]

    def delete_host(self, name: str, events: Sequence[Event] = ()) -> None:
        def no_recovery(conn: sa.Connection) -> None:
            job = conn.execute(
                sa.select(t.jobs.c.id, t.jobs.c.state)
                .where(t.jobs.c.kind == JobKind.HOST_RECOVERY.value, t.jobs.c.subject == name,
                       t.jobs.c.state.not_in([s.value for s in TERMINAL_JOB_STATES]))
                .order_by(t.jobs.c.created_at).limit(1)
            ).first()
            if job is not None:
                raise Conflict(host_has_job(name, job.id, job.state))

        self._delete(t.hosts, "host", name, events, no_recovery)  # its agent row cascades

    # -- agents -------------------------------------------------------------

    def save_agent(self, agent: AgentRecord) -> AgentRecord:
        row = self._seal.row("agents", codec.agent_row(agent))
        with self._tx(write=True) as conn:
            self._require(conn, t.hosts, "host", agent.host)
            if self._exists(conn, t.agents, agent.host):
                conn.execute(t.agents.update().where(t.agents.c.host == agent.host), row)
            else:
                conn.execute(t.agents.insert(), row)
            return self._agent(self._one(conn, t.agents, "agent", agent.host))

    def get_agent(self, host: str) -> AgentRecord:
        return self._agent(self._get(t.agents, "agent", host))

    def _agent(self, row: Row) -> AgentRecord:
        return codec.agent_from(self._seal.opened("agents", row))

    def agent_hosts(self) -> frozenset[str]:
        with self._tx() as conn:
            return frozenset(conn.execute(sa.select(t.agents.c.host)).scalars())

    def agent_marks(self) -> dict[str, int]:
        # the stored (sealed) value: sealed anew on every write
        with self._tx() as conn:
            return {host: hash(secret) for host, secret in conn.execute(
                sa.select(t.agents.c.host, t.agents.c.secret))}

    def list_agents(self) -> list[AgentRecord]:
        with self._tx() as conn:
            rows = conn.execute(sa.select(t.agents).order_by(t.agents.c.host)).mappings()
            return [self._agent(dict(r)) for r in rows]

    def register_agents(self, registrations: Sequence[Registration]) -> list[Registered]:
        names = [r.host.name for r in registrations]
        with self._tx(write=True) as conn:
            for segment in sorted({r.host.segment for r in registrations}):
                self._require(conn, t.segments, "segment", segment)
            hosts = {h.name: h for h in self._rows_in(conn, t.hosts, names, codec.host_from)}
            secrets = {a.host: a.secret
                       for a in self._rows_in(conn, t.agents, names, self._agent)}
            plan = registration_plan(registrations, hosts, secrets)
            if plan.new_hosts:
                conn.execute(t.hosts.insert(), [{**codec.host_row(h), "version": 1}
                                                for h in plan.new_hosts])
            for host in plan.changed_hosts:  # only what the agent knows better
                row = codec.host_row(host)
                conn.execute(t.hosts.update().where(t.hosts.c.name == host.name).values(
                    address=row["address"], capacity=row["capacity"],
                    version=t.hosts.c.version + 1))
            for chunk in _chunks(list(secrets)):
                conn.execute(t.agents.delete().where(t.agents.c.host.in_(chunk)))
            if plan.agents:
                conn.execute(t.agents.insert(), [self._seal.row("agents", codec.agent_row(a))
                                                 for a in plan.agents])
        return plan.results

    def _rows_in(self, conn: sa.Connection, table: sa.Table, keys: Sequence[str],
                 decode: Callable[[Row], T]) -> list[T]:
        key_col = table.primary_key.columns.values()[0]
        out = []
        for chunk in _chunks(list(keys)):
            rows = conn.execute(sa.select(table).where(key_col.in_(chunk))).mappings()
            out.extend(decode(dict(r)) for r in rows)
        return out

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
            t.instances, "instance", instance.id, codec.instance_row(instance), events, refs,
            instance.version,
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
            return [codec.event_from(self._seal.opened_event(r))
                    for r in conn.execute(stmt).mappings()]

    def last_event_id(self) -> int:
        with self._tx() as conn:
            return int(conn.execute(sa.select(sa.func.max(t.events.c.id))).scalar() or 0)

    # -- webhook subscriptions ------------------------------------------------

    def create_subscription(self, subscription: Subscription) -> Subscription:
        row = self._seal.row("subscriptions", codec.subscription_row(subscription))
        created = self._create(t.subscriptions, "subscription", subscription.id, row, ())
        return self._subscription(created)

    def get_subscription(self, subscription_id: str) -> Subscription:
        return self._subscription(self._get(t.subscriptions, "subscription", subscription_id))

    def _subscription(self, row: Row) -> Subscription:
        return codec.subscription_from(self._seal.opened("subscriptions", row))

    def list_subscriptions(self, owner: str | None = None) -> list[Subscription]:
        c = t.subscriptions.c
        stmt = sa.select(t.subscriptions).order_by(c.created_at, c.id)
        if owner is not None:
            stmt = stmt.where(c.owner == owner)
        with self._tx() as conn:
            return [self._subscription(dict(r)) for r in conn.execute(stmt).mappings()]

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
        with self._tx(write=True) as conn:
            self._require(conn, t.subscriptions, "subscription", subscription_id)
            self._save_progress(conn, subscription_id, deliveries, cursor)

    def save_progress(self, progress: Mapping[str, tuple[Sequence[Delivery], int]]) -> None:
        if not progress:
            return
        with self._tx(write=True) as conn:
            c = t.subscriptions.c
            present = set(conn.execute(
                sa.select(c.id).where(c.id.in_(list(progress)))).scalars())
            for subscription_id, (deliveries, cursor) in progress.items():
                if subscription_id in present:
                    self._save_progress(conn, subscription_id, deliveries, cursor)

    def _save_progress(self, conn: sa.Connection, subscription_id: str,
                       deliveries: Sequence[Delivery], cursor: int | None) -> None:
        """Upsert the records (one delete and one batch insert, whatever
        their number), move the cursor forward, prune old DELIVERED ones."""
        rows = list({d.event_id: {**codec.delivery_row(d), "subscription": subscription_id}
                     for d in deliveries}.values())  # the last record of an event wins
        c = t.deliveries.c
        if rows:
            conn.execute(t.deliveries.delete().where(
                c.subscription == subscription_id,
                c.event_id.in_([r["event_id"] for r in rows])))
            conn.execute(t.deliveries.insert(), rows)
        if cursor is not None:
            s = t.subscriptions.c
            conn.execute(
                t.subscriptions.update()
                .where(s.id == subscription_id, s.cursor < cursor)
                .values(cursor=cursor)
            )
        delivered = sum(r["status"] == DeliveryStatus.DELIVERED.value for r in rows)
        if delivered:
            # Pruning costs an index walk of DELIVERED_KEEP rows: done once
            # PRUNE_EVERY records were added here (a few more kept a while).
            added = self._unpruned.get(subscription_id, PRUNE_EVERY - 1) + delivered
            if added >= PRUNE_EVERY:
                self._prune_delivered(conn, subscription_id)
                added = 0
            self._unpruned[subscription_id] = added

    def _prune_delivered(self, conn: sa.Connection, subscription_id: str) -> None:
        c = t.deliveries.c
        mine = (c.subscription == subscription_id, c.status == DeliveryStatus.DELIVERED.value)
        oldest_kept = (
            sa.select(c.event_id).where(*mine).order_by(c.event_id.desc())
            .offset(DELIVERED_KEEP - 1).limit(1).scalar_subquery()
        )
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
        def where(p: Plan) -> list[sa.ColumnElement[bool]]:
            conditions: list[sa.ColumnElement[bool]] = []
            for k, v in p.filters.items():
                if k == "project":  # the instance jobs whose data recorded this project
                    conditions.append(t.jobs.c.kind.in_(PROJECT_JOB_KINDS))
                    conditions.append(t.jobs.c.data["project"].as_string() == v)
                else:
                    conditions.append(t.jobs.c[k] == v)
            return conditions

        return self._page(JOBS, t.jobs, query, codec.job_from, where)

    def save_job(self, job: Job, expected_generation: int, events: Sequence[Event] = ()) -> Job:
        row, event_rows = codec.job_row(job), [codec.event_row(e) for e in events]
        c = t.jobs.c
        with self._tx(write=True) as conn:
            self._fence(conn, t.jobs)
            # Compare-and-set in one statement: two savers cannot both win.
            stmt = t.jobs.update().where(c.id == job.id, c.generation == expected_generation)
            if job.version:
                stmt = stmt.where(c.version == job.version)
            done = conn.execute(stmt.values({**row, "version": c.version + 1}))
            if done.rowcount != 1:
                stored = self._one(conn, t.jobs, "job", job.id)
                if stored["generation"] != expected_generation:
                    raise Conflict(stale_job(job.id, expected_generation, stored["generation"]))
                raise StaleWrite("job", job.id, int(stored["version"]), job.version)
            self._insert_events(conn, event_rows)
            return codec.job_from(self._one(conn, t.jobs, "job", job.id))

    # -- leadership (the fencing token) --------------------------------------

    def claim_leadership(self, holder: str, now: float) -> int:
        """`holder` is the leader from now on: a new epoch, higher than every
        earlier one, returned. Views fenced with older epochs are refused."""
        c = t.leadership.c
        with self._tx(write=True) as conn:
            row = conn.execute(sa.select(t.leadership).where(c.id == LEADERSHIP_ROW)
                               .with_for_update()).mappings().first()
            epoch = (int(row["epoch"]) if row is not None else 0) + 1
            values = {"holder": holder, "epoch": epoch, "since": now}
            if row is None:
                conn.execute(t.leadership.insert(), {"id": LEADERSHIP_ROW, **values})
            else:
                conn.execute(t.leadership.update().where(c.id == LEADERSHIP_ROW), values)
            return epoch

    def leadership(self) -> Leadership:
        with self._tx() as conn:
            row = conn.execute(sa.select(t.leadership).where(
                t.leadership.c.id == LEADERSHIP_ROW)).mappings().first()
        if row is None:
            return Leadership()
        return Leadership(row["holder"], int(row["epoch"]), float(row["since"]))

    def fenced(self, epoch: int) -> SqlStore:
        """This store (same connections) whose writes to jobs, hosts and
        instances are refused with NotLeader once the stored epoch is no
        longer `epoch`: what the leader's engine writes through."""
        view = copy.copy(self)
        view._epoch = epoch
        return view

    # -- health -----------------------------------------------------------

    def ping(self) -> None:
        with self._tx() as conn:
            conn.execute(sa.text("SELECT 1"))

    def schema_current(self) -> bool:
        with self._tx() as conn:
            current = migrate.current_revisions(conn)
        return current == {migrate.head_revision()}

    def adopt_key(self) -> int:
        """Check the service's key against this database and seal what is
        still in clear (sealing.adopt_key); how many values were sealed."""
        if self._seal.box is None:
            return 0
        with self._tx(write=True) as conn:
            sealed = adopt_key(conn, self._seal)
        if sealed and self._engine.dialect.name == "sqlite" and not is_memory(self._engine.url):
            # The clear values' old pages must not linger in the file.
            raw = self._engine.raw_connection()
            try:
                raw.cursor().execute("VACUUM")
            finally:
                raw.close()
        return sealed

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


def _chunks(keys: list[str], size: int = 500) -> Iterator[list[str]]:
    """Keys in slices small enough for any backend's bound-parameter limit."""
    for i in range(0, len(keys), size):
        yield keys[i:i + size]


def _duplicate_key(exc: sa.exc.IntegrityError) -> bool:
    cause = exc.orig
    return getattr(cause, "sqlstate", None) == "23505" or "UNIQUE constraint" in str(cause)
