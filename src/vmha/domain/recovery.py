"""The host-recovery job: fence, disable, plan, evacuate, verify.

Called by the engine's job executor, which alternates two pure functions:
`decide(job, ctx, now)` says what to do next (intents, a state change, or
wait until a time), and `apply(job, result, now)` folds the outcome of one
intent back into the job. The executor performs intents through the ports
and saves the job (with the events) before and after every step, so a new
controller resumes where the old one stopped. No I/O, no clock here.

Job states: pending -> fencing -> fenced -> evacuating -> verifying -> done,
with `paused` (segment paused, controller isolated, or every fence level
failed) and `failed` (the host came back before it was fenced). The host
follows: fencing, fenced, recovering, recovered (`host.fence_failed` keeps
it `failed`).

Everything the job needs to resume lives in `job.data` (plain JSON):
  host, segment, levels (fence levels), last_seen (last heartbeat),
  fence: {level, phase ("off" | "confirm"), started, confirmed_by, retry_at},
  disabled, planned, acked_by, paused_for, resume_to,
  requested_by (an operator asked for this fence: `vmha host fence`),
  instances: {id: {state, target, attempt, stopped, reason, excluded}}
Per-instance states: pending (target chosen), evacuating (start sent),
verifying, done, replan (its start failed and it was stopped there again:
plan again, avoiding that host), handed_over (its target failed while it
was moving: the instance is recorded on the target, whose own recovery
job fences that host and moves it; re-planning it here could run it
twice), unplaceable, skipped (policy does not recover it).

Every intent carries the job's id and generation; a result whose generation
(or, for an instance, whose attempt) is not the current one is ignored.
Safety: Evacuate intents are only produced once the fence is confirmed
(`fence.confirmed_by` set, job past `fenced`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from vmha.domain.model import (
    Event,
    Host,
    HostState,
    Instance,
    InstanceState,
    Job,
    JobKind,
    JobState,
    SubjectKind,
    transition_job,
)
from vmha.domain.planner import Plan

POWER_METHODS = frozenset({"ipmi", "redfish", "fence_agent"})
DONE_STATES = frozenset({"done", "failed", "unplaceable", "skipped", "handed_over"})
DEFAULT_LEVELS: tuple[tuple[str, ...], ...] = (("agent_watchdog",), ("manual",))


# -- intents ------------------------------------------------------------------


@dataclass(frozen=True)
class FenceHost:
    """Ask every power method of `level` to power the host off."""

    job: str
    generation: int
    host: str
    level: int
    methods: tuple[str, ...]


@dataclass(frozen=True)
class ConfirmFenced:
    """Prove the host is off: power status OFF (power methods), cut off past
    `deadline` (agent_watchdog) or an operator ack (manual)."""

    job: str
    generation: int
    host: str
    level: int
    methods: tuple[str, ...]
    deadline: float = 0.0  # agent_watchdog: last_seen + self_fence_deadline_s
    last_seen: float = 0.0


@dataclass(frozen=True)
class DisableCompute:
    job: str
    generation: int
    host: str


@dataclass(frozen=True)
class PlanEvacuation:
    """Plan targets for `instances` (ids), avoiding `exclude` per instance."""

    job: str
    generation: int
    host: str
    instances: tuple[str, ...]
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Evacuate:
    job: str
    generation: int
    instance: str
    source: str
    target: str
    stopped: bool
    attempt: int
    resume: bool = False  # the step was started before a restart: check first


@dataclass(frozen=True)
class VerifyInstance:
    job: str
    generation: int
    instance: str
    target: str
    stopped: bool
    attempt: int


@dataclass(frozen=True)
class Publish:
    events: tuple[Event, ...]


@dataclass(frozen=True)
class EnableHost:
    host: str


Intent = (
    FenceHost | ConfirmFenced | DisableCompute | PlanEvacuation | Evacuate | VerifyInstance
    | Publish | EnableHost
)


def step_name(intent: Intent) -> str:
    """The name under which an intent is recorded in `job.steps`."""
    if isinstance(intent, FenceHost):
        return f"fence:{intent.level}:{'+'.join(intent.methods)}:off"
    if isinstance(intent, ConfirmFenced):
        return f"fence:{intent.level}:{'+'.join(intent.methods)}:confirm"
    if isinstance(intent, DisableCompute):
        return "disable_compute"
    if isinstance(intent, PlanEvacuation):
        return "plan"
    if isinstance(intent, Evacuate):
        return f"evacuate:{intent.instance}@{intent.target}#{intent.attempt}"
    if isinstance(intent, VerifyInstance):
        return f"verify:{intent.instance}@{intent.target}#{intent.attempt}"
    if isinstance(intent, EnableHost):
        return "enable_host"
    return "publish"


@dataclass(frozen=True)
class Result:
    """Outcome of one intent. `retry_at`: not done yet, ask again then.
    `handed_over`: the target failed; the instance now belongs to the
    target's own recovery. `plan`: PlanEvacuation's answer."""

    intent: Intent
    ok: bool
    detail: str = ""
    retry_at: float | None = None
    handed_over: bool = False
    plan: Plan | None = None


# -- decisions ----------------------------------------------------------------


@dataclass(frozen=True)
class InstanceUpdate:
    """A change to an instance record, applied by the engine only when the
    stored instance is still on one of `only_if_hosts` (when given): another
    job may have taken the instance over meanwhile."""

    instance: str
    event_type: str  # "" = record the change without an event
    reason: str
    state: InstanceState | None = None
    host: str | None = None  # new host; None = keep
    only_if_hosts: tuple[str, ...] = ()  # apply only while stored on one of these


@dataclass(frozen=True)
class Decision:
    job: Job
    intents: tuple[Intent, ...] = ()
    events: tuple[Event, ...] = ()
    host_state: HostState | None = None  # the failed host should move here
    host_reason: str = ""
    host_event: str | None = None  # event type override (host.fence_failed)
    instances: tuple[InstanceUpdate, ...] = ()
    wait_until: float | None = None  # nothing to do before then (or a poke)


@dataclass(frozen=True)
class JobContext:
    """What the engine knows that the job cannot: is recovery allowed now?"""

    blocked: str = ""  # reason fencing/recovery is not allowed (segment paused, isolated)
    fence_allowed_at: float = 0.0  # fence rate limit of the segment
    host_returned: bool = False  # heartbeats healthy for the return period
    host_alive: bool = False  # heartbeating again right now: do not start fencing it
    max_parallel: int = 4
    fence_retry_s: float = 60.0
    self_fence_deadline_s: float = 20.0


def new_host_job(
    job_id: str, host: Host, instances: Sequence[Instance], protected: Mapping[str, bool],
    last_seen: float, now: float, reason: str,
    default_levels: tuple[tuple[str, ...], ...] = DEFAULT_LEVELS,
    requested_by: str | None = None, levels: Sequence[Sequence[str]] | None = None,
) -> Job:
    """A pending recovery job for failed `host` and its instances; with
    `requested_by`, an operator's fence through `levels` (power levels only)."""
    subs: dict[str, Any] = {}
    for inst in instances:
        ok = protected.get(inst.id, True)
        subs[inst.id] = _sub("pending" if ok else "skipped",
                             reason="" if ok else "policy does not recover it")
    levels = levels or host.fence_levels or default_levels
    data = {
        "host": host.name, "segment": host.segment,
        "levels": [list(level) for level in levels], "last_seen": last_seen,
        "fence": {"level": 0, "phase": "off", "started": False, "confirmed_by": None,
                  "retry_at": 0.0},
        "disabled": False, "planned": False, "acked_by": None,
        "paused_for": None, "resume_to": None, "instances": subs,
        "requested_by": requested_by,
    }
    return Job(id=job_id, kind=JobKind.HOST_RECOVERY, subject=host.name, created_at=now,
               updated_at=now, reason=reason, data=data)


def _sub(state: str, target: str | None = None, reason: str = "") -> dict[str, Any]:
    return {"state": state, "target": target, "attempt": 0, "stopped": False,
            "reason": reason, "excluded": []}


def acknowledge(job: Job, who: str, now: float) -> Job:
    """An operator says the host is off (manual fence)."""
    data = _data(job)
    data["acked_by"] = who
    data["fence"]["retry_at"] = now
    return replace(job, data=data, updated_at=now)


def request_fence(job: Job, who: str, levels: Sequence[Sequence[str]], now: float) -> Job:
    """An operator asks to fence the job's host now through `levels`: the
    fence restarts at the first of them, even if the host still answers."""
    data = _data(job)
    data["requested_by"], data["levels"] = who, [list(level) for level in levels]
    data["fence"].update(level=0, phase="off", retry_at=now)
    return replace(job, data=data, updated_at=now)


def fence_confirmed(job: Job) -> bool:
    """The job's host is confirmed fenced (BMC, self-fence deadline or ack)."""
    return bool(job.data.get("fence", {}).get("confirmed_by"))


def _requested(data: Mapping[str, Any]) -> bool:
    return bool(data.get("requested_by"))


def _data(job: Job) -> dict[str, Any]:
    return copy.deepcopy(dict(job.data))


def _move(job: Job, to: JobState, reason: str, now: float, data: dict[str, Any]) -> Decision:
    new, event = transition_job(replace(job, data=data), to, reason, now)
    return Decision(new, events=(event,))


def decide(job: Job, ctx: JobContext, now: float) -> Decision:
    """What the job should do next. Call only when no intent is in flight."""
    if job.finished:
        return Decision(job)
    handler = {
        JobState.PENDING: _decide_pending,
        JobState.PAUSED: _decide_paused,
        JobState.FENCING: _decide_fencing,
        JobState.FENCED: _decide_fenced,
        JobState.EVACUATING: _decide_evacuating,
        JobState.VERIFYING: _decide_evacuating,
    }[job.state]
    return handler(job, ctx, now)


def _cancel(job: Job, now: float) -> Decision:
    reason = "host returned before it was fenced; nothing was moved"
    d = _move(job, JobState.FAILED, reason, now, _data(job))
    return replace(d, host_state=HostState.UP, host_reason="heartbeats resumed before fencing")


def _pause(job: Job, why: str, reason: str, now: float) -> Decision:
    data = _data(job)
    data["paused_for"], data["resume_to"] = why, job.state.value
    return _move(job, JobState.PAUSED, reason, now, data)


def _decide_pending(job: Job, ctx: JobContext, now: float) -> Decision:
    # an operator's fence goes ahead while the host still answers, and is
    # not held by the rate limit (a person asked, not a storm)
    requested = _requested(job.data)
    if ctx.host_returned and not requested:
        return _cancel(job, now)
    if ctx.blocked:
        return _pause(job, "blocked", ctx.blocked, now)
    if ctx.host_alive and not _data(job)["acked_by"] and not requested:
        return Decision(job, wait_until=None)  # stale verdict: wait for return or failure
    if not _data(job)["acked_by"] and not requested and ctx.fence_allowed_at > now:
        return _rate_limited(job, ctx.fence_allowed_at, now)
    d = _move(job, JobState.FENCING, "fencing the failed host", now, _data(job))
    return replace(d, host_state=HostState.FENCING, host_reason="fencing started")


def _rate_limited(job: Job, until: float, now: float) -> Decision:
    """Wait for the segment's fence rate limit; say so once per wait."""
    data = _data(job)
    if data.get("rate_limited_until") == until:
        return Decision(job, wait_until=until)
    data["rate_limited_until"] = until
    reason = (f"fence rate limit of segment {data['segment']}: fencing "
              f"{job.subject} in {until - now:.1f} s")
    event = Event(type="job.step", subject=job.id, time=now, subject_kind=SubjectKind.JOB,
                  payload={"job": job.id, "kind": job.kind.value, "subject": job.subject,
                           "from": job.state.value, "to": job.state.value, "reason": reason})
    return Decision(replace(job, data=data, updated_at=now), events=(event,), wait_until=until)


def _decide_paused(job: Job, ctx: JobContext, now: float) -> Decision:
    data = _data(job)
    fence, requested = data["fence"], _requested(data)
    if ctx.host_returned and not fence["confirmed_by"] and not requested:
        return _cancel(job, now)
    if ctx.host_alive and not data["acked_by"] and not fence["confirmed_by"] and not requested:
        return Decision(job, wait_until=None)  # alive again: no fencing while it talks to us
    if data["paused_for"] == "blocked":
        if ctx.blocked:
            return Decision(job, wait_until=None)
        to = JobState(data["resume_to"] or "pending")
        data["paused_for"] = data["resume_to"] = None
        return _move(job, to, "recovery resumed", now, data)
    # paused because every fence level failed: retry on schedule or on ack
    if ctx.blocked:
        return Decision(job, wait_until=None)
    if now < fence["retry_at"] and not data["acked_by"] and not requested:
        return Decision(job, wait_until=fence["retry_at"])
    fence.update(level=0, phase="off")
    data["paused_for"] = data["resume_to"] = None
    d = _move(job, JobState.FENCING, "retrying fencing", now, data)
    return replace(d, host_state=HostState.FENCING, host_reason="retrying fencing")


def _decide_fencing(job: Job, ctx: JobContext, now: float) -> Decision:
    data = _data(job)
    fence, levels = data["fence"], data["levels"]
    if data["acked_by"]:
        return _fenced(job, data, f"operator {data['acked_by']} acknowledged the fence", now)
    if ctx.blocked:
        return _pause(job, "blocked", ctx.blocked, now)
    if fence["level"] >= len(levels):
        return _fence_failed(job, data, ctx, now)
    methods = tuple(levels[fence["level"]])
    if _is_power(methods) and fence["phase"] == "off":
        return Decision(job, intents=(FenceHost(job.id, job.generation, job.subject,
                                                fence["level"], methods),))
    deadline = float(data["last_seen"]) + ctx.self_fence_deadline_s
    return Decision(job, intents=(ConfirmFenced(job.id, job.generation, job.subject,
                                                fence["level"], methods, deadline,
                                                float(data["last_seen"])),))


def _is_power(methods: Sequence[str]) -> bool:
    return all(m in POWER_METHODS for m in methods)


def _fenced(job: Job, data: dict[str, Any], reason: str, now: float) -> Decision:
    data["fence"]["confirmed_by"] = reason
    d = _move(job, JobState.FENCED, reason, now, data)
    return replace(d, host_state=HostState.FENCED, host_reason=reason)


def _fence_failed(job: Job, data: dict[str, Any], ctx: JobContext, now: float) -> Decision:
    if _requested(data) and ctx.host_alive:
        return _request_failed(job, data, now)
    data["requested_by"] = None  # retried on schedule from now on, like any fence
    data["fence"].update(level=0, phase="off", retry_at=now + ctx.fence_retry_s)
    data["paused_for"], data["resume_to"] = "fence_failed", "fencing"
    reason = (f"every fence level failed; nothing will be recovered; retrying in "
              f"{ctx.fence_retry_s:g} s or on operator fence-ack")
    d = _move(job, JobState.PAUSED, reason, now, data)
    return replace(d, host_state=HostState.FAILED, host_reason=reason,
                   host_event="host.fence_failed")


def _request_failed(job: Job, data: dict[str, Any], now: float) -> Decision:
    """An operator's fence failed on every level while the host still
    answers: it keeps running its instances, so nothing may move."""
    reason = (f"operator {data['requested_by']}'s fence failed on every level and "
              f"{job.subject} still answers: left up, nothing was moved")
    d = _move(job, JobState.FAILED, reason, now, data)
    return replace(d, host_state=HostState.UP, host_reason=reason,
                   host_event="host.fence_failed")


def _decide_fenced(job: Job, ctx: JobContext, now: float) -> Decision:
    data = _data(job)
    if not data["disabled"]:
        return Decision(job, intents=(DisableCompute(job.id, job.generation, job.subject),))
    if ctx.blocked:
        return _pause(job, "blocked", ctx.blocked, now)
    if not data["planned"]:
        todo = tuple(sorted(i for i, s in data["instances"].items() if s["state"] == "pending"))
        return Decision(job, intents=(PlanEvacuation(job.id, job.generation, job.subject,
                                                     todo),))
    d = _move(job, JobState.EVACUATING, "moving instances", now, data)
    # instances whose policy does not recover them went down with the host
    stopped = tuple(
        InstanceUpdate(iid, "", f"its host {job.subject} was fenced; policy does not recover it",
                       InstanceState.STOPPED, only_if_hosts=(job.subject,))
        for iid, sub in sorted(data["instances"].items()) if sub["state"] == "skipped")
    return replace(d, host_state=HostState.RECOVERING, host_reason="moving its instances",
                   instances=stopped)


def _decide_evacuating(job: Job, ctx: JobContext, now: float) -> Decision:
    data = _data(job)
    subs: dict[str, dict[str, Any]] = data["instances"]
    replan = tuple(sorted(i for i, s in subs.items() if s["state"] == "replan"))
    if replan and not ctx.blocked:
        excluded = sorted({h for i in replan for h in subs[i]["excluded"]})
        return Decision(job, intents=(PlanEvacuation(job.id, job.generation, job.subject,
                                                     replan, tuple(excluded)),))
    intents: list[Intent] = []
    for iid in sorted(subs):
        s = subs[iid]
        if s["state"] == "verifying":
            intents.append(VerifyInstance(job.id, job.generation, iid, s["target"],
                                          s["stopped"], s["attempt"]))
        elif s["state"] == "evacuating":  # interrupted by a restart
            intents.append(_evacuate(job, iid, s, resume=True))
    updates: list[InstanceUpdate] = []
    slots = ctx.max_parallel - len(intents)
    for iid in _by_order(subs):
        if ctx.blocked or slots <= 0:
            break
        s = subs[iid]
        s["state"], s["attempt"] = "evacuating", s["attempt"] + 1
        intents.append(_evacuate(job, iid, s, resume=False))
        updates.append(InstanceUpdate(iid, "instance.evacuating",
                                      f"moving from {job.subject} to {s['target']}",
                                      InstanceState.RECOVERING, s["target"],
                                      only_if_hosts=(job.subject, *s["excluded"])))
        slots -= 1
    if intents:
        return Decision(replace(job, data=data), tuple(intents), instances=tuple(updates))
    return _finish_or_wait(job, data, ctx, now)


def _by_order(subs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Pending instances in plan order (the planner's priority order)."""
    pending = [i for i, s in subs.items() if s["state"] == "pending" and s["target"]]
    return sorted(pending, key=lambda i: (subs[i].get("order", 0), i))


def _evacuate(job: Job, iid: str, s: Mapping[str, Any], resume: bool) -> Evacuate:
    return Evacuate(job.id, job.generation, iid, job.subject, s["target"], s["stopped"],
                    s["attempt"], resume)


def _finish_or_wait(job: Job, data: dict[str, Any], ctx: JobContext, now: float) -> Decision:
    subs = data["instances"]
    if any(s["state"] not in DONE_STATES for s in subs.values()):
        return Decision(job, wait_until=None)  # blocked: wait for a poke
    counts: dict[str, int] = {}
    for s in subs.values():
        counts[s["state"]] = counts.get(s["state"], 0) + 1
    summary = ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in sorted(counts.items()))
    summary = summary or "no instances"
    d = _move(job, JobState.DONE, f"recovery finished: {summary}", now, data)
    return replace(d, host_state=HostState.RECOVERED, host_reason=f"recovered: {summary}")


# -- results ------------------------------------------------------------------


def apply(job: Job, result: Result, now: float) -> Decision:
    """Fold one intent's outcome into the job; stale results are ignored."""
    intent = result.intent
    if isinstance(intent, Publish | EnableHost) or intent.generation != job.generation:
        return Decision(job)
    data = _data(job)
    if isinstance(intent, FenceHost):
        return _apply_fence_off(job, data, result, now)
    if isinstance(intent, ConfirmFenced):
        return _apply_confirm(job, data, result, now)
    if isinstance(intent, DisableCompute):
        data["disabled"] = True  # a failure to disable does not block recovery
        return Decision(replace(job, data=data, updated_at=now))
    if isinstance(intent, PlanEvacuation):
        return _apply_plan(job, data, result, now)
    return _apply_instance(job, data, result, now)


def _apply_fence_off(job: Job, data: dict[str, Any], r: Result, now: float) -> Decision:
    fence = data["fence"]
    if r.ok:
        fence["phase"], fence["started"] = "confirm", True
    else:
        fence["level"], fence["phase"] = fence["level"] + 1, "off"
    return Decision(replace(job, data=data, updated_at=now))


def _apply_confirm(job: Job, data: dict[str, Any], r: Result, now: float) -> Decision:
    fence = data["fence"]
    if r.ok:
        return _fenced(job, data, r.detail, now)
    if r.retry_at is not None:
        return Decision(job, wait_until=r.retry_at)
    fence["level"], fence["phase"] = fence["level"] + 1, "off"
    return Decision(replace(job, data=data, updated_at=now))


def _apply_plan(job: Job, data: dict[str, Any], r: Result, now: float) -> Decision:
    subs = data["instances"]
    plan = r.plan or Plan()
    updates: list[InstanceUpdate] = []
    for order, p in enumerate(plan.placements):
        s = subs[p.instance]
        s.update(state="pending", target=p.host, stopped=p.stopped, order=order)
    for u in plan.unplaced:
        subs[u.instance].update(state="unplaceable", reason=u.reason)
        updates.append(InstanceUpdate(u.instance, "instance.unplaceable", u.reason,
                                      InstanceState.ERROR, only_if_hosts=(job.subject,)))
    data["planned"] = True
    return Decision(replace(job, data=data, updated_at=now), instances=tuple(updates))


def _apply_instance(job: Job, data: dict[str, Any], r: Result, now: float) -> Decision:
    intent = r.intent
    assert isinstance(intent, Evacuate | VerifyInstance)
    s = data["instances"].get(intent.instance)
    if s is None or s["attempt"] != intent.attempt:
        return Decision(job)  # an older attempt
    updates: list[InstanceUpdate] = []
    if r.ok and isinstance(intent, Evacuate):
        s["state"] = "verifying"
    elif r.ok:
        s["state"] = "done"
        state = InstanceState.STOPPED if intent.stopped else InstanceState.RUNNING
        updates.append(InstanceUpdate(intent.instance, "instance.evacuated",
                                      f"now {state.value} on {intent.target}", state,
                                      intent.target, only_if_hosts=(intent.target,)))
    elif r.handed_over:
        s.update(state="handed_over", reason=r.detail)
    else:
        s["state"] = "replan"
        s["excluded"] = sorted({*s["excluded"], intent.target})
        s["reason"] = r.detail
    return Decision(replace(job, data=data, updated_at=now), instances=tuple(updates))


def fence_started(job: Job) -> bool:
    """Whether a power-off was requested (the host may be going down)."""
    return bool(job.data.get("fence", {}).get("started"))


def subs_of(job: Job) -> Mapping[str, Mapping[str, Any]]:
    subs: Mapping[str, Mapping[str, Any]] = job.data.get("instances", {})
    return subs

