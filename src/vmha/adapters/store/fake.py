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

import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from vmha.adapters.store import bmc_rows, codec
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
    type_matches,
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


class FakeStore:
    """In-memory Store with the semantics of SqlStore."""

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
        return stored

    def _write(self, table: str, key: str, row: Row, events: Sequence[Event]) -> None:
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
        event_rows = [codec.event_row(e) for e in events]
        del self._tables[table][key]
        self._store_events(event_rows)

    # -- hosts ------------------------------------------------------------

    def create_host(self, host: Host, events: Sequence[Event] = ()) -> Host:
        row = codec.host_row(host)
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

    def update_host(self, host: Host, events: Sequence[Event] = ()) -> Host:
        row = codec.host_row(host)
        with self._lock:
            self._require("hosts", "host", host.name)
            self._require("segments", "segment", host.segment)
            self._write("hosts", host.name, row, events)
            return codec.host_from(self._row("hosts", "host", host.name))

    def delete_host(self, name: str, events: Sequence[Event] = ()) -> None:
        with self._lock:
            self._require("hosts", "host", name)
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

    def list_agents(self) -> list[AgentRecord]:
        with self._lock:
            keys = sorted(self._tables["agents"])
            return [codec.agent_from(self._row("agents", "agent", k)) for k in keys]

    # -- instances --------------------------------------------------------

    def create_instance(self, instance: Instance, events: Sequence[Event] = ()) -> Instance:
        row = codec.instance_row(instance)
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
        rows = [codec.delivery_row(d) for d in deliveries]
        with self._lock:
            stored = self._row("subscriptions", "subscription", subscription_id)
            mine = self._deliveries[subscription_id]
            for row in rows:
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
        row = codec.job_row(job)
        with self._lock:
            self._require_absent("jobs", "job", job.id)
            self._write("jobs", job.id, row, events)
            return codec.job_from(self._row("jobs", "job", job.id))

    def get_job(self, job_id: str) -> Job:
        with self._lock:
            return codec.job_from(self._row("jobs", "job", job_id))

    def list_jobs(self, query: ListQuery) -> Page[Job]:
        return self._page(JOBS, "jobs", query, codec.job_from)

    def save_job(self, job: Job, expected_generation: int, events: Sequence[Event] = ()) -> Job:
        row = codec.job_row(job)
        with self._lock:
            stored = self._row("jobs", "job", job.id)
            if stored["generation"] != expected_generation:
                raise Conflict(stale_job(job.id, expected_generation, stored["generation"]))
            self._write("jobs", job.id, row, events)
            return codec.job_from(self._row("jobs", "job", job.id))

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

