"""What may be sorted and filtered in each list call, shared by every store.

`FakeStore` and `SqlStore` both turn a `ListQuery` into a `Plan` here, so
they accept and refuse exactly the same queries (same fields, same error
messages). Filter values arrive as text (query strings) and are parsed to
the stored column value. `registration_plan` is what a bulk agent
registration writes. No I/O here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from vmha.domain.agents import AgentRecord, Registered, Registration
from vmha.domain.errors import ValidationError
from vmha.domain.jobs import INSTANCE_JOB_KINDS
from vmha.domain.model import Host, HostState, InstanceState, JobKind, JobState
from vmha.ports import EventQuery, ListQuery

LIMIT_MAX = 1000
EVENT_LIMIT_MAX = 10000
# Delivered records kept per subscription (failed and dead ones are all kept).
DELIVERED_KEEP = 200


@dataclass(frozen=True)
class Resource:
    """A listable resource: its key column, sortable fields and filters.

    `filters` maps a filter name to the enum its values must belong to, or
    to `bool` / `str`.
    """

    kind: str  # singular name used in errors: "segment", "host" ...
    key: str
    sorts: tuple[str, ...]
    default_sort: str
    filters: Mapping[str, Any]


SEGMENTS = Resource("segment", "name", ("name",), "name", {"enabled": bool})
HOSTS = Resource(
    "host", "name", ("name", "state", "segment"), "name",
    {"segment": str, "state": HostState},
)
INSTANCES = Resource(
    "instance", "id", ("id", "name", "state", "host", "project"), "id",
    {"host": str, "segment": str, "state": InstanceState, "project": str},
)
POLICIES = Resource("policy", "name", ("name",), "name", {})
JOBS = Resource(
    "job", "id", ("created_at", "updated_at", "state", "kind", "id"), "created_at",
    {"kind": JobKind, "state": JobState, "subject": str, "project": str},
)
# The jobs' `project` filter keeps only the kinds about one instance, whose
# data recorded its project (vmha.domain.jobs.project_of says the same).
PROJECT_JOB_KINDS = tuple(sorted(k.value for k in INSTANCE_JOB_KINDS))


@dataclass(frozen=True)
class Plan:
    """A validated list query: sort field, direction, page size, filters."""

    sort: str
    desc: bool
    limit: int
    marker: str | None
    filters: Mapping[str, Any]


def plan(resource: Resource, query: ListQuery) -> Plan:
    """Check `query` against `resource`; raise ValidationError naming the field."""
    if not 1 <= query.limit <= LIMIT_MAX:
        raise ValidationError("limit", f"{query.limit} is outside 1..{LIMIT_MAX}")
    sort = query.sort or resource.default_sort
    if sort not in resource.sorts:
        allowed = ", ".join(resource.sorts)
        raise ValidationError("sort", f"cannot sort by {sort!r}; allowed: {allowed}")
    filters = {key: _parse_filter(resource, key, value) for key, value in query.filters.items()}
    return Plan(sort, query.desc, query.limit, query.marker or None, filters)


def _parse_filter(resource: Resource, key: str, value: str) -> Any:
    kind = resource.filters.get(key)
    if kind is None:
        allowed = ", ".join(resource.filters) or "none"
        raise ValidationError(key, f"unknown filter {key!r}; allowed: {allowed}")
    if kind is bool:
        lowered = str(value).lower()
        if lowered not in ("true", "false"):
            raise ValidationError(key, f"{value!r} is not 'true' or 'false'")
        return lowered == "true"
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        allowed_values = [str(member.value) for member in kind]
        if value not in allowed_values:
            raise ValidationError(key, f"{value!r} is not one of: {', '.join(allowed_values)}")
        return value
    return str(value)


def check_event_query(query: EventQuery) -> None:
    if not 1 <= query.limit <= EVENT_LIMIT_MAX:
        raise ValidationError("limit", f"{query.limit} is outside 1..{EVENT_LIMIT_MAX}")
    if query.since < 0:
        raise ValidationError("since", "must be zero or more")


def check_delivery_limit(limit: int) -> None:
    if not 1 <= limit <= LIMIT_MAX:
        raise ValidationError("limit", f"{limit} is outside 1..{LIMIT_MAX}")


# Error messages both stores use (the contract tests compare them).


def already_exists(kind: str, key: str) -> str:
    return f"{kind} {key!r} already exists"


def segment_has_hosts(name: str, hosts: int) -> str:
    return (
        f"segment {name!r} still has {hosts} host(s); "
        "delete them or move them to another segment first"
    )


def host_has_job(name: str, job_id: str, state: str) -> str:
    return (
        f"host {name!r} has an unfinished recovery job {job_id} ({state}); it cannot be "
        f"deleted while the job may still fence it or move its instances: let the job "
        f"finish first (vmha job show {job_id}; a paused job goes on once its segment is "
        "resumed or the host's fence is acknowledged)"
    )


def policy_in_use(name: str, instances: int, segments: int) -> str:
    return (
        f"policy {name!r} is still used by {instances} instance(s) and {segments} "
        "segment(s); point them at another policy first"
    )


# What a leader's engine writes, fenced by its epoch (Store.fenced)
FENCED_TABLES = frozenset({"jobs", "hosts", "instances"})
LEADERSHIP_ROW = 1


def superseded(epoch: int) -> str:
    return (f"this controller's leadership (epoch {epoch}) has ended: another controller "
            "took over the recovery engine; nothing was written")


def stale_job(job_id: str, expected: int, stored: int) -> str:
    return (
        f"job {job_id!r} is at generation {stored}, not {expected}: a newer attempt "
        "owns it; reload the job and retry"
    )


@dataclass(frozen=True)
class RegistrationPlan:
    """What a bulk registration writes (both stores follow it)."""

    new_hosts: list[Host]
    changed_hosts: list[Host]  # existing hosts with a new address or capacity
    agents: list[AgentRecord]  # every agent's record to store
    results: list[Registered]


def registration_plan(registrations: Sequence[Registration], hosts: Mapping[str, Host],
                      secrets: Mapping[str, str]) -> RegistrationPlan:
    """`hosts` and `secrets`: what is stored now for the registered names.
    A host named twice counts once (the last registration wins)."""
    last = {r.host.name: r for r in registrations}
    new, changed, agents = [], [], []
    for name, reg in last.items():
        current = hosts.get(name)
        if current is None:
            new.append(reg.host)
        elif (current.address, current.capacity) != (reg.host.address, reg.host.capacity):
            changed.append(replace(current, address=reg.host.address,
                                   capacity=reg.host.capacity))
        agents.append(replace(reg.agent, secret=secrets.get(name, reg.agent.secret)))
    stored = {a.host: a for a in agents}
    results = [Registered(stored[r.host.name], r.host.name not in hosts) for r in registrations]
    return RegistrationPlan(new, changed, agents, results)
