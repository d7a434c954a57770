"""What each dashboard page shows, read from the store the way the API
reads it, filtered by the viewer's role.

Called by vmha.web.pages in a worker thread (store calls are synchronous).
Returns plain dicts and lists for the templates; writes nothing. A project
token sees only its project's instances and events (the same rules as
`/v1/instances` and `/v1/events`, and a job page only of its instances'
jobs, as `/v1/jobs`); hosts, segments and the job lists need the
permissions the API asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vmha.api.auth import Permission, Principal
from vmha.api.context import Liveness
from vmha.api.inventory import pause_reasons, read_inventory
from vmha.domain.model import Event, Instance, Job, JobKind
from vmha.domain.policy import HAPolicy
from vmha.domain.timeline import LABELS, timeline
from vmha.domain.whatif import policy_for
from vmha.errors import NotFound
from vmha.ports import EventQuery, ListQuery, Store, list_all

FEED_SIZE = 50
SCAN_WINDOW = 2000  # events looked at per step when searching back for a filter
SCAN_STEPS = 10
RESTART_EVENTS = ("instance.restarted",)

Live = Callable[[str], Liveness | None]


@dataclass(frozen=True)
class Who:
    principal: Principal

    @property
    def operator(self) -> bool:
        return self.principal.may(Permission.HOSTS_FENCE)

    @property
    def resumes(self) -> bool:
        """May resume a segment the mass-failure guard paused."""
        return self.principal.may(Permission.SEGMENTS_RESUME)

    @property
    def cluster(self) -> bool:
        """May see hosts, segments and jobs (not a project token)."""
        return self.principal.may(Permission.HOSTS_READ)

    @property
    def acts_on_instances(self) -> bool:
        return self.principal.may(Permission.INSTANCES_WRITE)


def policy_line(policy: HAPolicy) -> str:
    return (f"host {policy.host.value} · guest {policy.guest.value} · app {policy.app.value}"
            f" · priority {policy.priority}")


def _vm(inst: Instance, policy: HAPolicy) -> dict[str, Any]:
    return {"id": inst.id, "name": inst.name, "state": inst.state.value, "host": inst.host,
            "project": inst.project, "policy": policy_line(policy)}


def grid(store: Store, live: Live) -> dict[str, Any]:
    """Segments with their hosts (state, heartbeat, phi) and each host's VMs."""
    inv = read_inventory(store)
    reasons = pause_reasons(store, inv.segments)
    vms: dict[str, list[dict[str, Any]]] = {}
    for inst in sorted(inv.instances, key=lambda i: (i.name, i.id)):
        vms.setdefault(inst.host or "", []).append(_vm(inst, inv.policies[inst.id]))
    segments = []
    for name in sorted(inv.segments):
        hosts = [_host(h, live(h.name), vms.get(h.name, []))
                 for h in sorted(inv.hosts.values(), key=lambda h: h.name) if h.segment == name]
        segments.append({"name": name, "paused": name in reasons,
                         "paused_reason": reasons.get(name, ""), "hosts": hosts})
    return {"segments": segments, "unplaced": vms.get("", []),
            "jobs": recent_jobs(store), "paused": [s for s in segments if s["paused"]]}


def _host(h: Any, liveness: Liveness | None, vms: list[dict[str, Any]]) -> dict[str, Any]:
    age = None if liveness is None else liveness.heartbeat_age_s
    return {"name": h.name, "state": h.state.value, "reason": h.state_reason,
            "since": h.state_since, "maintenance": h.maintenance, "reserved": h.reserved,
            "heartbeat_age_s": age, "phi": None if liveness is None else liveness.phi,
            "instances": vms}


def recent_jobs(store: Store, limit: int = 10) -> list[dict[str, Any]]:
    page = store.list_jobs(ListQuery(limit=limit, sort="created_at", desc=True,
                                     filters={"kind": JobKind.HOST_RECOVERY.value}))
    return [{"id": j.id, "subject": j.subject, "state": j.state.value, "reason": j.reason,
             "created_at": j.created_at, "total_s": timeline(j).total_s} for j in page.items]


def project_instances(store: Store, project: str) -> list[dict[str, Any]]:
    inv = read_inventory(store)
    mine = [i for i in inv.instances if i.project == project]
    return [_vm(i, inv.policies[i.id]) for i in sorted(mine, key=lambda i: (i.name, i.id))]


def instance(store: Store, instance_id: str, who: Who, now: float) -> dict[str, Any]:
    inst = store.get_instance(instance_id)
    if who.principal.project is not None and inst.project != who.principal.project:
        raise NotFound("instance", instance_id)  # like the API: not revealed
    segments = {s.name: s for s in list_all(store.list_segments)}
    hosts = {h.name: h for h in list_all(store.list_hosts)}
    named = {p.name: p.policy for p in list_all(store.list_policies)}
    policy = policy_for(inst, segments, hosts, named)
    events = store.list_events(EventQuery(since=_recent_cursor(store), subject=inst.id,
                                          limit=1000))
    used = [e for e in events if e.type in RESTART_EVENTS and now - e.time <= policy.window_s]
    return {"vm": _vm(inst, policy), "policy": policy, "source": _source(inst, hosts, segments),
            "restarts_used": len(used), "events": [event_row(e) for e in events[-20:][::-1]],
            "resources": inst.resources}


def _source(inst: Instance, hosts: Mapping[str, Any], segments: Mapping[str, Any]) -> str:
    if inst.policy is not None:
        return "inline (the instance's own)"
    if inst.policy_name:
        return f"named policy {inst.policy_name}"
    host = hosts.get(inst.host or "")
    seg = segments.get(host.segment) if host is not None else None
    if seg is not None and seg.default_policy:
        return f"segment {seg.name}'s default policy {seg.default_policy}"
    return "built-in default"


def _recent_cursor(store: Store) -> int:
    return max(0, store.last_event_id() - 20 * SCAN_WINDOW)


def event_row(e: Event) -> dict[str, Any]:
    reason = e.payload.get("reason") or e.payload.get("detail") or ""
    return {"id": e.id, "type": e.type, "subject": e.subject, "kind": e.subject_kind.value,
            "severity": e.severity.value, "time": e.time, "reason": str(reason),
            "job": e.payload.get("job") if e.subject_kind.value == "job" else None}


def feed(store: Store, who: Who, types: tuple[str, ...], subject: str | None,
         severity: str | None) -> list[dict[str, Any]]:
    """The newest matching events, newest first, searching back a bounded way."""
    hi = store.last_event_id()
    found: list[Event] = []
    for _ in range(SCAN_STEPS):
        if hi <= 0 or len(found) >= FEED_SIZE:
            break
        lo = max(0, hi - SCAN_WINDOW)
        batch = store.list_events(EventQuery(since=lo, types=types, subject=subject,
                                             project=who.principal.project,
                                             limit=SCAN_WINDOW))
        found = [e for e in batch if e.id <= hi and
                 (severity is None or e.severity.value == severity)] + found
        hi = lo
    return [event_row(e) for e in found[-FEED_SIZE:][::-1]]


def job_view(job: Job) -> dict[str, Any]:
    tl = timeline(job)
    span = max([(p.end or job.updated_at) - tl.origin for p in tl.phases] + [0.001])
    phases = [{"name": p.name, "label": LABELS.get(p.name, p.name),
               "offset": p.start - tl.origin, "duration_s": p.duration_s,
               "x": 100 * (p.start - tl.origin) / span,
               "w": max(0.5, 100 * ((p.end or job.updated_at) - p.start) / span)}
              for p in tl.phases]
    steps = [{"name": s.name, "state": s.state.value, "offset": s.started_at - tl.origin,
              "duration_s": None if s.finished_at is None else s.finished_at - s.started_at,
              "detail": s.detail} for s in tl.steps]
    return {"job": job, "phases": phases, "steps": steps, "total_s": tl.total_s,
            "origin": tl.origin, "instances": job.data.to_storage().get("instances", {})}
