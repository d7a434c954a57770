"""FakeStore: the `Store` port in memory, for unit tests and the simulator.

Same semantics as `SqlStore` (the contract suite in tests/store runs on
both): same keys, errors, paging, sorting, filters and outbox behaviour.
Rows are kept encoded (JSON columns as text), so every call returns fresh
values and a caller can never reach the store's internal state; this lets
the simulator "restart the controller" on the same FakeStore object.
Thread-safe (one lock) and deterministic (no clock, no randomness).
It must not do any I/O.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from vmha.adapters.store import bmc_rows, codec
from vmha.adapters.store.query import (
    DELIVERED_KEEP,
    FENCED_TABLES,
    HOSTS,
    INSTANCES,
    JOBS,
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
from vmha.domain.agents import AgentRecord, Registered, Registration
from vmha.domain.bmc import BmcRecord
from vmha.domain.errors import Conflict, NotFound, NotLeader, StaleWrite
from vmha.domain.model import (
    TERMINAL_JOB_STATES,
    Event,
    Host,
    Instance,
    Job,
    JobKind,
    JobState,
    Segment,
)
from vmha.ports import (
    Delivery,
    DeliveryStatus,
    EventQuery,
    Leadership,
    ListQuery,
    NamedPolicy,
    Page,
    Subscription,
    type_matches,
)

T = TypeVar("T")
Row = dict[str, Any]


class FakeStore:
    """In-memory Store with the semantics of SqlStore."""

    # never waits: awaited in line, on the simulator's virtual loop too
    # (vmha.adapters.store.aio)
    blocking = False

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tables: dict[str, dict[str, Row]] = {
            name: {}
            for name in (
                "segments", "hosts", "instances", "policies", "jobs", "agents", "subscriptions",
                "bmcs",
            )
        }
        # deliveries by subscription id, then event id (rows, not encoded:
        # they hold plain scalars only)
        self._deliveries: dict[str, dict[int, Row]] = {}
        self._events: list[Row] = []
        self._next_event_id = 1
        # shared with the views made by fenced(); _epoch is the view's own
        self._leadership: dict[str, Any] = {"holder": "", "epoch": 0, "since": 0.0}
        self._epoch: int | None = None
        self.on_commit: Callable[[list[Event]], None] | None = None  # as SqlStore's

    # -- encoded rows ---------------------------------------------------

    def _put(self, table: str, key: str, row: Row) -> None:
        stored = dict(row)
        for column in codec.JSON_COLUMNS[table]:
            stored[column] = json.dumps(stored[column])
        self._tables[table][key] = stored

    @staticmethod
    def _decode(table: str, stored: Mapping[str, Any]) -> Row:
        row = dict(stored)
        for column in codec.JSON_COLUMNS[table]:
            row[column] = json.loads(row[column])
        return row

    def _row(self, table: str, kind: str, key: str) -> Row:
        stored = self._tables[table].get(key)
        if stored is None:
            raise NotFound(kind, key)
        return self._decode(table, stored)

    def _next_version(self, table: str, kind: str, key: str, read: int) -> int:
        """The version a write of a row read at `read` gets (0: unchecked)."""
        stored = int(self._tables[table][key]["version"])
        if read and read != stored:
            raise StaleWrite(kind, key, stored, read)
        return stored + 1

    def _require_absent(self, table: str, kind: str, key: str) -> None:
        if key in self._tables[table]:
            raise Conflict(already_exists(kind, key))

    def _require(self, table: str, kind: str, key: str | None) -> None:
        if key is not None and key not in self._tables[table]:
            raise NotFound(kind, key)

    def _append(self, events: Iterable[Event]) -> list[Event]:
        return self._store_events([codec.event_row(e) for e in events])

    def _store_events(self, rows: list[Row]) -> list[Event]:
        """Give ids and keep; rows are encoded before, so nothing fails here."""
        stored: list[Event] = []
        for row in rows:
            row["id"] = self._next_event_id
            self._next_event_id += 1
            self._events.append({**row, "payload": json.dumps(row["payload"])})
            stored.append(codec.event_from(row))
        if stored and self.on_commit is not None:
            self.on_commit(stored)
        return stored

    def _fence(self, table: str) -> None:
        if self._epoch is not None and table in FENCED_TABLES \
                and self._leadership["epoch"] != self._epoch:
            raise NotLeader(superseded(self._epoch))

    def _write(self, table: str, key: str, row: Row, events: Sequence[Event]) -> None:
        self._fence(table)
        event_rows = [codec.event_row(e) for e in events]  # refuse bad payloads first
        self._put(table, key, row)
        self._store_events(event_rows)

    def _page(
        self,
        resource: Resource,
        table: str,
        query: ListQuery,
        decode: Callable[[Row], T],
        keep: Callable[[Row, Plan], bool] | None = None,
    ) -> Page[T]:
        p = plan(resource, query)
        with self._lock:
            rows = [self._decode(table, r) for r in self._tables[table].values()]
            marker_row = None
            if p.marker is not None:
                marker_row = self._row(table, resource.kind, p.marker)
        rows = [r for r in rows if (keep or _keep_equal)(r, p)]

        def order(r: Row) -> tuple[Any, str]:
            value = r[p.sort]
            return ("" if value is None else value, r[resource.key])

        rows.sort(key=order, reverse=p.desc)
        if marker_row is not None:
            after = order(marker_row)
            rows = [r for r in rows if (order(r) < after if p.desc else order(r) > after)]
        items = rows[: p.limit]
        more = len(rows) > p.limit
        return Page([decode(r) for r in items], items[-1][resource.key] if more else None)

    # -- segments ---------------------------------------------------------

    def create_segment(self, segment: Segment, events: Sequence[Event] = ()) -> Segment:
        row = codec.segment_row(segment)
        with self._lock:
            self._require_absent("segments", "segment", segment.name)
            self._require("policies", "policy", segment.default_policy)
            self._write("segments", segment.name, row, events)
            return codec.segment_from(self._row("segments", "segment", segment.name))

    def get_segment(self, name: str) -> Segment:
        with self._lock:
            return codec.segment_from(self._row("segments", "segment", name))

    def list_segments(self, query: ListQuery) -> Page[Segment]:
        return self._page(SEGMENTS, "segments", query, codec.segment_from)

    def update_segment(self, segment: Segment, events: Sequence[Event] = ()) -> Segment:
        row = codec.segment_row(segment)
        with self._lock:
            self._require("segments", "segment", segment.name)
            self._require("policies", "policy", segment.default_policy)
            self._write("segments", segment.name, row, events)
            return codec.segment_from(self._row("segments", "segment", segment.name))

    def delete_segment(self, name: str, events: Sequence[Event] = ()) -> None:
        with self._lock:
            self._require("segments", "segment", name)
            hosts = sum(1 for h in self._tables["hosts"].values() if h["segment"] == name)
            if hosts:
                raise Conflict(segment_has_hosts(name, hosts))
            self._delete("segments", name, events)

    def _delete(self, table: str, key: str, events: Sequence[Event]) -> None:
        self._fence(table)
        event_rows = [codec.event_row(e) for e in events]
        del self._tables[table][key]
        self._store_events(event_rows)

    # -- hosts ------------------------------------------------------------

    def create_host(self, host: Host, events: Sequence[Event] = ()) -> Host:
        row = {**codec.host_row(host), "version": 1}
        with self._lock:
            self._require_absent("hosts", "host", host.name)
            self._require("segments", "segment", host.segment)
            self._write("hosts", host.name, row, events)
            return codec.host_from(self._row("hosts", "host", host.name))

    def get_host(self, name: str) -> Host:
        with self._lock:
            return codec.host_from(self._row("hosts", "host", name))

    def list_hosts(self, query: ListQuery) -> Page[Host]:
        return self._page(HOSTS, "hosts", query, codec.host_from)

    def host_versions(self) -> dict[str, int]:
        with self._lock:
            return {name: int(row["version"]) for name, row in self._tables["hosts"].items()}

    def get_hosts(self, names: Sequence[str]) -> list[Host]:
        with self._lock:
            return [codec.host_from(self._row("hosts", "host", n)) for n in names
                    if n in self._tables["hosts"]]

    def update_host(self, host: Host, events: Sequence[Event] = ()) -> Host:
        row = codec.host_row(host)
        with self._lock:
            self._require("hosts", "host", host.name)
            self._require("segments", "segment", host.segment)
            row["version"] = self._next_version("hosts", "host", host.name, host.version)
            self._write("hosts", host.name, row, events)
            return codec.host_from(self._row("hosts", "host", host.name))

    def update_hosts(self, changes: Sequence[tuple[Host, Sequence[Event]]]) -> list[Host | None]:
        """`update_host` for many hosts at once (see Store): a host moved
        meanwhile, gone, or in another segment is skipped (None)."""
        out: list[Host | None] = []
        with self._lock:
            self._fence("hosts")
            prepared = [(host, codec.host_row(host), [codec.event_row(e) for e in events])
                        for host, events in changes]
            event_rows: list[Row] = []
            for host, row, rows in prepared:
                stored = self._tables["hosts"].get(host.name)
                if (stored is None or not host.version or int(stored["version"]) != host.version
                        or stored["segment"] != host.segment):
                    out.append(None)
                    continue
                row["version"] = host.version + 1
                self._put("hosts", host.name, row)
                event_rows.extend(rows)
                out.append(codec.host_from(self._row("hosts", "host", host.name)))
            self._store_events(event_rows)
        return out

    def delete_host(self, name: str, events: Sequence[Event] = ()) -> None:
        with self._lock:
            self._require("hosts", "host", name)
            jobs = sorted((self._decode("jobs", r) for r in self._tables["jobs"].values()),
                          key=lambda r: (r["created_at"], r["id"]))
            for job in jobs:
                if (job["kind"] == JobKind.HOST_RECOVERY.value and job["subject"] == name
                        and JobState(job["state"]) not in TERMINAL_JOB_STATES):
                    raise Conflict(host_has_job(name, job["id"], job["state"]))
            self._delete("hosts", name, events)
            self._tables["agents"].pop(name, None)  # as ON DELETE CASCADE
            self._tables["bmcs"].pop(name, None)

    # -- BMC credentials ------------------------------------------------------

    def save_bmc(self, bmc: BmcRecord) -> BmcRecord:
        with self._lock:
            self._require("hosts", "host", bmc.host)
            self._put("bmcs", bmc.host, bmc_rows.bmc_row(bmc))
            return bmc_rows.bmc_from(self._row("bmcs", "BMC of host", bmc.host))

    def get_bmc(self, host: str) -> BmcRecord:
        with self._lock:
            return bmc_rows.bmc_from(self._row("bmcs", "BMC of host", host))

    def delete_bmc(self, host: str) -> None:
        with self._lock:
            self._row("bmcs", "BMC of host", host)
            del self._tables["bmcs"][host]

    # -- agents -------------------------------------------------------------

    def save_agent(self, agent: AgentRecord) -> AgentRecord:
        with self._lock:
            self._require("hosts", "host", agent.host)
            self._put("agents", agent.host, codec.agent_row(agent))
            return codec.agent_from(self._row("agents", "agent", agent.host))

    def get_agent(self, host: str) -> AgentRecord:
        with self._lock:
            return codec.agent_from(self._row("agents", "agent", host))

    def register_agents(self, registrations: Sequence[Registration]) -> list[Registered]:
        with self._lock:
            for segment in sorted({r.host.segment for r in registrations}):
                self._require("segments", "segment", segment)
            names = {r.host.name for r in registrations}
            hosts = {n: codec.host_from(self._row("hosts", "host", n))
                     for n in names if n in self._tables["hosts"]}
            secrets = {n: self._row("agents", "agent", n)["secret"]
                       for n in names if n in self._tables["agents"]}
            plan = registration_plan(registrations, hosts, secrets)
            rows = [{**codec.host_row(h), "version": 1} for h in plan.new_hosts]
            rows += [{**codec.host_row(h), "version": hosts[h.name].version + 1}
                     for h in plan.changed_hosts]
            agent_rows = [codec.agent_row(a) for a in plan.agents]  # encode all, then write
            for row in rows:
                self._put("hosts", row["name"], row)
            for row in agent_rows:
                self._put("agents", row["host"], row)
            return plan.results

    def agent_hosts(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._tables["agents"])

    def agent_marks(self) -> dict[str, int]:
        with self._lock:
            return {host: hash(row["secret"]) for host, row in self._tables["agents"].items()}

    def list_agents(self) -> list[AgentRecord]:
        with self._lock:
            keys = sorted(self._tables["agents"])
            return [codec.agent_from(self._row("agents", "agent", k)) for k in keys]

    # -- instances --------------------------------------------------------

    def create_instance(self, instance: Instance, events: Sequence[Event] = ()) -> Instance:
        row = {**codec.instance_row(instance), "version": 1}
        with self._lock:
            self._require_absent("instances", "instance", instance.id)
            self._require("policies", "policy", instance.policy_name)
            self._write("instances", instance.id, row, events)
            return codec.instance_from(self._row("instances", "instance", instance.id))

    def get_instance(self, instance_id: str) -> Instance:
        with self._lock:
            return codec.instance_from(self._row("instances", "instance", instance_id))

    def list_instances(self, query: ListQuery) -> Page[Instance]:
        def keep(row: Row, p: Plan) -> bool:
            wanted = dict(p.filters)
            segment = wanted.pop("segment", None)
            if segment is not None and host_segment.get(row["host"] or "") != segment:
                return False
            return all(row[k] == v for k, v in wanted.items())

        with self._lock:  # re-entrant: hosts and instances read in one go
            host_segment = {name: h["segment"] for name, h in self._tables["hosts"].items()}
            return self._page(INSTANCES, "instances", query, codec.instance_from, keep)

    def update_instance(self, instance: Instance, events: Sequence[Event] = ()) -> Instance:
        row = codec.instance_row(instance)
        with self._lock:
            self._require("instances", "instance", instance.id)
            self._require("policies", "policy", instance.policy_name)
            row["version"] = self._next_version("instances", "instance", instance.id,
                                                instance.version)
            self._write("instances", instance.id, row, events)
            return codec.instance_from(self._row("instances", "instance", instance.id))

    def delete_instance(self, instance_id: str, events: Sequence[Event] = ()) -> None:
        with self._lock:
            self._require("instances", "instance", instance_id)
            self._delete("instances", instance_id, events)

    # -- named policies ---------------------------------------------------

    def create_policy(self, policy: NamedPolicy) -> NamedPolicy:
        row = codec.policy_row(policy)
        with self._lock:
            self._require_absent("policies", "policy", policy.name)
            self._put("policies", policy.name, row)
            return codec.policy_from(self._row("policies", "policy", policy.name))

    def get_policy(self, name: str) -> NamedPolicy:
        with self._lock:
            return codec.policy_from(self._row("policies", "policy", name))

    def list_policies(self, query: ListQuery) -> Page[NamedPolicy]:
        return self._page(POLICIES, "policies", query, codec.policy_from)

    def update_policy(self, policy: NamedPolicy) -> NamedPolicy:
        row = codec.policy_row(policy)
        with self._lock:
            self._require("policies", "policy", policy.name)
            self._put("policies", policy.name, row)
            return codec.policy_from(self._row("policies", "policy", policy.name))

    def delete_policy(self, name: str) -> None:
        with self._lock:
            self._require("policies", "policy", name)
            instances = sum(
                1 for i in self._tables["instances"].values() if i["policy_name"] == name
            )
            segments = sum(
                1 for s in self._tables["segments"].values() if s["default_policy"] == name
            )
            if instances or segments:
                raise Conflict(policy_in_use(name, instances, segments))
            del self._tables["policies"][name]

    # -- events -----------------------------------------------------------

    def append_events(self, events: Sequence[Event]) -> list[Event]:
        with self._lock:
            return self._append(events)

    def list_events(self, query: EventQuery) -> list[Event]:
        check_event_query(query)
        with self._lock:
            rows = [r for r in self._events if r["id"] > query.since]
        out: list[Event] = []
        for r in rows:  # already in id order
            if query.types and not type_matches(r["type"], query.types):
                continue
            if query.subject is not None and r["subject"] != query.subject:
                continue
            if query.project is not None and r["project"] != query.project:
                continue
            out.append(codec.event_from({**r, "payload": json.loads(r["payload"])}))
            if len(out) == query.limit:
                break
        return out

    def last_event_id(self) -> int:
        with self._lock:
            return self._next_event_id - 1

    # -- webhook subscriptions ------------------------------------------------

    def create_subscription(self, subscription: Subscription) -> Subscription:
        row = codec.subscription_row(subscription)
        with self._lock:
            self._require_absent("subscriptions", "subscription", subscription.id)
            self._put("subscriptions", subscription.id, row)
            self._deliveries[subscription.id] = {}
            return self.get_subscription(subscription.id)

    def get_subscription(self, subscription_id: str) -> Subscription:
        with self._lock:
            return codec.subscription_from(
                self._row("subscriptions", "subscription", subscription_id)
            )

    def list_subscriptions(self, owner: str | None = None) -> list[Subscription]:
        with self._lock:
            rows = [self._decode("subscriptions", r)
                    for r in self._tables["subscriptions"].values()]
        rows = [r for r in rows if owner is None or r["owner"] == owner]
        rows.sort(key=lambda r: (r["created_at"], r["id"]))
        return [codec.subscription_from(r) for r in rows]

    def delete_subscription(self, subscription_id: str) -> None:
        with self._lock:
            self._require("subscriptions", "subscription", subscription_id)
            del self._tables["subscriptions"][subscription_id]
            self._deliveries.pop(subscription_id, None)

    def save_deliveries(
        self, subscription_id: str, deliveries: Sequence[Delivery], cursor: int | None = None
    ) -> None:
        with self._lock:
            self._row("subscriptions", "subscription", subscription_id)
            self._save_progress(subscription_id, deliveries, cursor)

    def save_progress(self, progress: Mapping[str, tuple[Sequence[Delivery], int]]) -> None:
        with self._lock:
            for subscription_id, (deliveries, cursor) in progress.items():
                with contextlib.suppress(NotFound):
                    self._row("subscriptions", "subscription", subscription_id)
                    self._save_progress(subscription_id, deliveries, cursor)

    def _save_progress(self, subscription_id: str, deliveries: Sequence[Delivery],
                       cursor: int | None) -> None:
        stored = self._row("subscriptions", "subscription", subscription_id)
        mine = self._deliveries[subscription_id]
        for row in (codec.delivery_row(d) for d in deliveries):
            mine[row["event_id"]] = {**row, "subscription": subscription_id}
        if cursor is not None and cursor > stored["cursor"]:
            self._put("subscriptions", subscription_id, {**stored, "cursor": cursor})
        delivered = sorted(
            (k for k, r in mine.items() if r["status"] == DeliveryStatus.DELIVERED.value),
            reverse=True,
        )
        for event_id in delivered[DELIVERED_KEEP:]:
            del mine[event_id]

    def list_deliveries(
        self, subscription_id: str, status: DeliveryStatus | None = None, limit: int = 100
    ) -> list[Delivery]:
        check_delivery_limit(limit)
        with self._lock:
            self._require("subscriptions", "subscription", subscription_id)
            rows = [dict(r) for r in self._deliveries[subscription_id].values()]
        rows = [r for r in rows if status is None or r["status"] == status.value]
        rows.sort(key=lambda r: r["event_id"], reverse=True)
        return [codec.delivery_from(r) for r in rows[:limit]]

    # -- jobs -------------------------------------------------------------

    def create_job(self, job: Job, events: Sequence[Event] = ()) -> Job:
        row = {**codec.job_row(job), "version": 1}
        with self._lock:
            self._require_absent("jobs", "job", job.id)
            self._write("jobs", job.id, row, events)
            return codec.job_from(self._row("jobs", "job", job.id))

    def get_job(self, job_id: str) -> Job:
        with self._lock:
            return codec.job_from(self._row("jobs", "job", job_id))

    def list_jobs(self, query: ListQuery) -> Page[Job]:
        def keep(row: Row, p: Plan) -> bool:
            wanted = dict(p.filters)
            project = wanted.pop("project", None)
            if project is not None and (row["kind"] not in PROJECT_JOB_KINDS
                                        or row["data"].get("project") != project):
                return False
            return all(row[k] == v for k, v in wanted.items())

        return self._page(JOBS, "jobs", query, codec.job_from, keep)

    def save_job(self, job: Job, expected_generation: int, events: Sequence[Event] = ()) -> Job:
        row = codec.job_row(job)
        with self._lock:
            self._fence("jobs")
            stored = self._row("jobs", "job", job.id)
            if stored["generation"] != expected_generation:
                raise Conflict(stale_job(job.id, expected_generation, stored["generation"]))
            row["version"] = self._next_version("jobs", "job", job.id, job.version)
            self._write("jobs", job.id, row, events)
            return codec.job_from(self._row("jobs", "job", job.id))

    # -- leadership (the fencing token) ----------------------------------------

    def claim_leadership(self, holder: str, now: float) -> int:
        with self._lock:
            epoch = int(self._leadership["epoch"]) + 1
            self._leadership.update(holder=holder, epoch=epoch, since=now)
            return epoch

    def leadership(self) -> Leadership:
        with self._lock:
            return Leadership(**self._leadership)

    def fenced(self, epoch: int) -> FakeStore:
        """A view sharing every table (and the lock) with this store."""
        view = copy.copy(self)
        view._epoch = epoch
        return view

    # -- health -----------------------------------------------------------

    def ping(self) -> None:
        return None

    def schema_current(self) -> bool:
        return True

    def close(self) -> None:
        """Nothing to release; here so callers can treat both stores alike."""
        return None


def _keep_equal(row: Row, p: Plan) -> bool:
    return all(row[k] == v for k, v in p.filters.items())

