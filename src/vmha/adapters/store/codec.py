"""Domain values <-> table rows, shared by FakeStore and SqlStore.

A row is a dict of plain column values; the columns named in `JSON_COLUMNS`
hold JSON-compatible data (dicts, lists, numbers, text). Both stores go
through these functions, so what one returns equals what the other returns
(tuples come back as tuples, enums as enums, payloads as plain dicts).
Data that JSON cannot carry is refused here with a ValidationError. No I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from vmha.domain.agents import AgentRecord
from vmha.domain.errors import ValidationError
from vmha.domain.jobs import data_from_storage
from vmha.domain.model import (
    Capacity,
    Event,
    Host,
    HostState,
    Instance,
    InstanceState,
    Job,
    JobKind,
    JobState,
    JobStep,
    RecoveryMethod,
    Segment,
    Severity,
    StepState,
    SubjectKind,
)
from vmha.domain.policy import HAPolicy
from vmha.domain.spec import InstanceSpec
from vmha.ports import Delivery, DeliveryStatus, NamedPolicy, Subscription

Row = dict[str, Any]

JSON_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "segments": (),
    "hosts": ("capacity", "fence_levels"),
    "instances": ("resources", "policy", "spec"),
    "policies": ("policy",),
    "events": ("payload",),
    "jobs": ("steps", "data"),
    "agents": (),
    "subscriptions": ("event_types",),
    "deliveries": (),
    "bmcs": ("fence_agent_options",),
}


def plain_json(value: Any, field: str) -> Any:
    """A detached JSON-compatible copy of `value` (tuples become lists)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValidationError(field, f"cannot be stored as JSON: {exc}") from exc


def _capacity(value: Mapping[str, Any]) -> Capacity:
    return Capacity(int(value["vcpus"]), int(value["ram_mb"]), int(value["disk_gb"]))


def _capacity_dict(value: Capacity) -> dict[str, int]:
    return {"vcpus": value.vcpus, "ram_mb": value.ram_mb, "disk_gb": value.disk_gb}


def segment_row(s: Segment) -> Row:
    return {
        "name": s.name, "recovery_method": s.recovery_method.value, "enabled": s.enabled,
        "mass_failure_threshold": s.mass_failure_threshold, "description": s.description,
        "default_policy": s.default_policy, "hold_recovered_hosts": s.hold_recovered_hosts,
    }


def segment_from(r: Mapping[str, Any]) -> Segment:
    return Segment(
        name=r["name"], recovery_method=RecoveryMethod(r["recovery_method"]),
        enabled=bool(r["enabled"]), mass_failure_threshold=float(r["mass_failure_threshold"]),
        description=r["description"], default_policy=r["default_policy"],
        hold_recovered_hosts=bool(r["hold_recovered_hosts"]),
    )


def host_row(h: Host) -> Row:
    return {
        "name": h.name, "segment": h.segment, "address": h.address, "state": h.state.value,
        "capacity": _capacity_dict(h.capacity), "reserved": h.reserved,
        "maintenance": h.maintenance, "bmc": h.bmc,
        "fence_levels": [list(level) for level in h.fence_levels],
        "state_reason": h.state_reason, "state_since": h.state_since,
    }


def host_from(r: Mapping[str, Any]) -> Host:
    return Host(
        name=r["name"], segment=r["segment"], address=r["address"], state=HostState(r["state"]),
        capacity=_capacity(r["capacity"]), reserved=bool(r["reserved"]),
        maintenance=bool(r["maintenance"]), bmc=r["bmc"],
        fence_levels=tuple(tuple(level) for level in r["fence_levels"]),
        state_reason=r["state_reason"], state_since=float(r["state_since"]),
        version=int(r["version"]),
    )


def instance_row(i: Instance) -> Row:
    return {
        "id": i.id, "name": i.name, "host": i.host, "project": i.project,
        "resources": _capacity_dict(i.resources), "state": i.state.value,
        "policy": None if i.policy is None else plain_json(i.policy.to_dict(), "policy"),
        "policy_name": i.policy_name, "anti_affinity_group": i.anti_affinity_group,
        "spec": None if i.spec is None else plain_json(i.spec.to_dict(), "spec"),
    }


def instance_from(r: Mapping[str, Any]) -> Instance:
    policy = r["policy"]
    return Instance(
        id=r["id"], name=r["name"], host=r["host"], project=r["project"],
        resources=_capacity(r["resources"]), state=InstanceState(r["state"]),
        policy=None if policy is None else HAPolicy.from_dict(policy),
        policy_name=r["policy_name"], anti_affinity_group=r["anti_affinity_group"],
        spec=None if r.get("spec") is None else InstanceSpec.from_dict(r["spec"]),
        version=int(r["version"]),
    )


def policy_row(p: NamedPolicy) -> Row:
    return {
        "name": p.name, "policy": plain_json(p.policy.to_dict(), "policy"),
        "description": p.description,
    }


def policy_from(r: Mapping[str, Any]) -> NamedPolicy:
    return NamedPolicy(r["name"], HAPolicy.from_dict(r["policy"]), r["description"])


def event_row(e: Event) -> Row:
    """Without `id`: the store assigns it."""
    return {
        "type": e.type, "subject": e.subject, "time": e.time,
        "subject_kind": e.subject_kind.value, "project": e.project,
        "severity": e.severity.value, "payload": plain_json(dict(e.payload), "payload"),
    }


def event_from(r: Mapping[str, Any]) -> Event:
    return Event(
        type=r["type"], subject=r["subject"], time=float(r["time"]),
        subject_kind=SubjectKind(r["subject_kind"]), project=r["project"],
        severity=Severity(r["severity"]), payload=r["payload"], id=int(r["id"]),
    )


def _step_dict(s: JobStep) -> dict[str, Any]:
    return {
        "name": s.name, "state": s.state.value, "started_at": s.started_at,
        "finished_at": s.finished_at, "detail": s.detail,
    }


def job_row(j: Job) -> Row:
    return {
        "id": j.id, "kind": j.kind.value, "subject": j.subject, "state": j.state.value,
        "generation": j.generation, "steps": plain_json([_step_dict(s) for s in j.steps], "steps"),
        "created_at": j.created_at, "updated_at": j.updated_at, "reason": j.reason,
        "data": plain_json(j.data.to_storage(), "data"),
    }


def job_from(r: Mapping[str, Any]) -> Job:
    steps = tuple(
        JobStep(
            name=s["name"], state=StepState(s["state"]), started_at=float(s["started_at"]),
            finished_at=None if s["finished_at"] is None else float(s["finished_at"]),
            detail=s["detail"],
        )
        for s in r["steps"]
    )
    return Job(
        id=r["id"], kind=JobKind(r["kind"]), subject=r["subject"], state=JobState(r["state"]),
        generation=int(r["generation"]), steps=steps, created_at=float(r["created_at"]),
        updated_at=float(r["updated_at"]), reason=r["reason"],
        data=data_from_storage(JobKind(r["kind"]), r["data"], r["subject"]),
        version=int(r["version"]),
    )


AGENT_FIELDS = ("host", "secret", "api_url", "api_token", "version", "boot_id", "registered_at")


def agent_row(a: AgentRecord) -> Row:
    return {name: getattr(a, name) for name in AGENT_FIELDS}


def agent_from(r: Mapping[str, Any]) -> AgentRecord:
    return AgentRecord(**{name: r[name] for name in AGENT_FIELDS})


SUBSCRIPTION_FIELDS = (
    "id", "url", "secret", "subject", "project", "owner", "created_at", "cursor",
)


def subscription_row(s: Subscription) -> Row:
    row: Row = {name: getattr(s, name) for name in SUBSCRIPTION_FIELDS}
    row["event_types"] = plain_json(list(s.event_types), "event_types")
    return row


def subscription_from(r: Mapping[str, Any]) -> Subscription:
    return Subscription(
        id=r["id"], url=r["url"], secret=r["secret"], event_types=tuple(r["event_types"]),
        subject=r["subject"], project=r["project"], owner=r["owner"],
        created_at=float(r["created_at"]), cursor=int(r["cursor"]),
    )


def delivery_row(d: Delivery) -> Row:
    return {
        "subscription": d.subscription, "event_id": d.event_id, "status": d.status.value,
        "attempts": d.attempts, "last_error": d.last_error, "updated_at": d.updated_at,
    }


def delivery_from(r: Mapping[str, Any]) -> Delivery:
    return Delivery(
        subscription=r["subscription"], event_id=int(r["event_id"]),
        status=DeliveryStatus(r["status"]), attempts=int(r["attempts"]),
        last_error=r["last_error"], updated_at=float(r["updated_at"]),
    )
