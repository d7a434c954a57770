"""Custom recovery: decisions offered to the user, and instance actions.

A layer whose policy mode is `custom` does not recover by itself: vmha
publishes `decision.requested` with an action token, the allowed actions
and a deadline, and waits. The answer (`POST /v1/decisions/{token}`) or,
at the deadline, the policy's fallback (`auto`: what automatic recovery
would do; `none`: nothing) becomes an *action* job. Actions also arrive
directly through `POST /v1/instances/{id}/actions`.

Both are durable jobs in the store (no extra table):
- a decision is a `decision` job whose subject is the instance; its data
  holds the layer, the allowed actions, the deadline, the fallback and the
  SHA-256 of the token's secret (never the secret itself). The token given
  out is `<job id>.<secret>`. It ends `done` (answered, or timed out with
  the fallback applied; `data.outcome` says which) and never changes again;
- an action is an `action` job (subject: the instance) with `data.action`,
  `data.target`, `data.by` and `data.decision` when a decision caused it.

`refusal(...)` holds the safety rules shared by the API (409 before a job
exists) and the engine (checked again when the job runs): above all, an
`evacuate` never starts an instance elsewhere while its host is not
fenced (or put in maintenance by an operator).

Called by vmha.engine.decisions / vmha.engine.actions and the API routes.
Pure: time comes in as `now`, ids and secrets are passed in. Standard
library only.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from vmha.domain.errors import Conflict, NotFound, ValidationError
from vmha.domain.jobs import ActionData, DecisionData, HostRecoveryData, MoveState
from vmha.domain.model import (
    Event,
    Host,
    HostState,
    Instance,
    Job,
    JobKind,
    JobState,
    Severity,
    SubjectKind,
)
from vmha.domain.policy import CustomFallback, HAPolicy, LayerMode
from vmha.domain.transitions import transition_job

ACTIONS = ("restart", "reset", "stop", "start", "evacuate", "rebuild", "ignore")
LAYERS = ("host", "guest", "app")
# What each layer's decision may be answered with.
ALLOWED: Mapping[str, tuple[str, ...]] = {
    "host": ("evacuate", "ignore"),
    "guest": ("restart", "reset", "stop", "ignore"),
    "app": ("reset", "restart", "stop", "ignore"),
}
# What automatic recovery of a layer does (the `auto` fallback). The app
# layer's is its escalation (the policy's app_actions, an instance_recovery
# job: vmha.domain.escalation), not a single action.
ESCALATE = "escalate"
AUTO_ACTION: Mapping[str, str] = {"host": "evacuate", "guest": "restart", "app": ESCALATE}
FENCED_STATES = frozenset({HostState.FENCED, HostState.RECOVERING, HostState.RECOVERED})
# instance event kind -> layer
LAYER_OF_KIND: Mapping[str, str] = {
    "stopped": "guest", "crashed": "guest", "watchdog": "guest", "guest_unresponsive": "guest",
    "app_failed": "app",
}


def layer_mode(policy: HAPolicy, layer: str) -> LayerMode:
    mode: LayerMode = getattr(policy, layer)
    return mode


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def split_token(token: str) -> tuple[str, str]:
    """`<job id>.<secret>` -> (job id, secret); NotFound when malformed."""
    job_id, dot, secret = token.rpartition(".")
    if not dot or not job_id or not secret:
        raise NotFound("decision", token[:16] + ("..." if len(token) > 16 else ""))
    return job_id, secret


# -- decisions ------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """Why a decision is asked: `layer` failed for `instance` (`reason`)."""

    instance: Instance
    layer: str
    reason: str
    host: str | None = None  # the failed host (host layer)
    job: str | None = None  # the host-recovery job that fenced it


def new_decision(
    job_id: str, secret: str, req: Request, policy: HAPolicy, now: float,
    allowed: Sequence[str] | None = None,
) -> tuple[Job, Event]:
    """A pending decision job and its `decision.requested` event. The event
    carries the token (`<job id>.<secret>`); the job keeps its digest only."""
    if req.layer not in LAYERS:
        raise ValidationError("layer", f"{req.layer!r} is not one of {', '.join(LAYERS)}")
    actions = tuple(allowed or ALLOWED[req.layer])
    deadline = now + policy.custom_deadline_s
    fallback = policy.custom_fallback.value
    inst = req.instance
    data = DecisionData(
        instance=inst.id, name=inst.name, project=inst.project, host=req.host or inst.host,
        layer=req.layer, cause=req.reason, allowed=actions, deadline=deadline,
        fallback=fallback, token_sha256=digest(secret), host_job=req.job)
    job = Job(id=job_id, kind=JobKind.DECISION, subject=inst.id, created_at=now,
              updated_at=now, reason=_asking(req, actions, policy), data=data)
    event = Event(
        type="decision.requested", subject=inst.id, time=now,
        subject_kind=SubjectKind.INSTANCE, project=inst.project, severity=Severity.WARNING,
        payload={"instance": inst.id, "name": inst.name, "host": req.host or inst.host,
                 "layer": req.layer, "token": f"{job_id}.{secret}", "decision": job_id,
                 "allowed": list(actions), "deadline": deadline,
                 "deadline_s": policy.custom_deadline_s, "fallback": fallback,
                 "fallback_action": fallback_action(req.layer, policy.custom_fallback),
                 "reason": job.reason})
    return job, event


def _asking(req: Request, actions: Sequence[str], policy: HAPolicy) -> str:
    then = fallback_action(req.layer, policy.custom_fallback)
    what = f"fallback auto: {_words(then)}" if then else "fallback none: nothing is done"
    return (f"{req.reason}; custom {req.layer} policy asks for one of "
            f"{', '.join(actions)} within {policy.custom_deadline_s:g} s ({what})")


def fallback_action(layer: str, fallback: CustomFallback) -> str | None:
    """The action applied when nobody answers (ESCALATE: the app layer's
    escalation): None for `none`."""
    return AUTO_ACTION[layer] if fallback is CustomFallback.AUTO else None


def _words(action: str) -> str:
    return "its app_actions escalation" if action == ESCALATE else action


@dataclass(frozen=True)
class Resolution:
    """A decision settled: the updated job, its events, and the action to
    perform now (None: nothing to do)."""

    job: Job
    events: tuple[Event, ...]
    action: str | None


def decision_data(job: Job) -> DecisionData:
    """The job's record; only decision jobs have one."""
    assert isinstance(job.data, DecisionData), f"job {job.id} is a {job.kind.value} job"
    return job.data


def action_data(job: Job) -> ActionData:
    """The job's record; only action jobs have one."""
    assert isinstance(job.data, ActionData), f"job {job.id} is a {job.kind.value} job"
    return job.data


def check_token(job: Job, secret: str) -> None:
    """NotFound unless `job` is a decision whose token secret is `secret`
    (constant-time; a wrong secret looks exactly like a missing decision)."""
    wanted = job.data.token_sha256 if isinstance(job.data, DecisionData) else ""
    if job.kind is not JobKind.DECISION or not hmac.compare_digest(digest(secret), wanted):
        raise NotFound("decision", job.id)


def answer(job: Job, action: str, who: str, now: float) -> Resolution:
    """Settle a pending decision with `action`. Conflict when it is settled
    already (the message says what happened instead); ValidationError when
    `action` is not allowed."""
    data = decision_data(job)
    if job.state is not JobState.PENDING:
        raise Conflict(settled_message(job))
    if action not in data.allowed:
        raise ValidationError("body.action", f"{action!r} is not allowed for this decision; "
                              f"allowed: {', '.join(data.allowed)}")
    if now >= data.deadline:  # the engine expires it first (see expire)
        raise Conflict(f"decision {job.id} for instance {data.instance} timed out at "
                       "its deadline; its fallback is applied instead")
    data = replace(data, outcome="answered", action=action, by=who, answered_at=now)
    reason = f"answered by {who}: {action}"
    done, event = transition_job(replace(job, data=data), JobState.DONE, reason, now)
    return Resolution(done, (event,), None if action == "ignore" else action)


def expire(job: Job, now: float) -> Resolution | None:
    """At the deadline: settle with the fallback and publish
    `decision.timed_out`. None while the deadline is ahead or when settled."""
    data = decision_data(job)
    if job.state is not JobState.PENDING or now < data.deadline:
        return None
    action = fallback_action(data.layer, CustomFallback(data.fallback))
    what = f"fallback auto: {_words(action)}" if action else "fallback none: nothing is done"
    data = replace(data, outcome="timed_out", action=action, by="fallback", answered_at=now)
    reason = f"no answer within the deadline; {what}"
    done, job_event = transition_job(replace(job, data=data), JobState.DONE, reason, now)
    timed_out = Event(
        type="decision.timed_out", subject=data.instance, time=now,
        subject_kind=SubjectKind.INSTANCE, project=data.project, severity=Severity.WARNING,
        payload={"instance": data.instance, "name": data.name, "host": data.host,
                 "layer": data.layer, "decision": job.id, "fallback": data.fallback,
                 "action": action, "reason": reason})
    return Resolution(done, (timed_out, job_event), action)


def supersede(job: Job, action: str, action_job: str, who: str, now: float) -> Resolution:
    """A direct instance action while a decision is pending settles it: the
    user has decided; the fallback must not act as well."""
    data = replace(decision_data(job), outcome="answered", action=action, by=who,
                   answered_at=now, action_job=action_job)
    reason = f"answered by {who} with the instance action {action} (job {action_job})"
    done, event = transition_job(replace(job, data=data), JobState.DONE, reason, now)
    return Resolution(done, (event,), None)


def with_action_job(job: Job, action_job: str | None) -> Job:
    """Record which action job carried out the decision."""
    return replace(job, data=replace(decision_data(job), action_job=action_job))


def settled_message(job: Job) -> str:
    """Why a settled decision takes no answer: what was done instead."""
    d = decision_data(job)
    done = f"action {d.action!r}" if d.action else "nothing"
    job_ref = f" (job {d.action_job})" if d.action_job else ""
    if d.outcome == "timed_out":
        return (f"decision {job.id} for instance {d.instance} timed out before this answer; "
                f"its fallback {d.fallback!r} was applied: {done} was done "
                f"instead{job_ref}")
    return (f"decision {job.id} for instance {d.instance} was already answered by "
            f"{d.by}: {done}{job_ref}")


# -- actions --------------------------------------------------------------------


def check_action_name(action: str) -> str:
    if action not in ACTIONS:
        raise ValidationError("body.action", f"{action!r} is not one of {', '.join(ACTIONS)}")
    return action


def refusal(
    action: str, instance: Instance, host: Host | None, target: Host | None = None,
    target_name: str | None = None, host_job_busy: str = "", can_rebuild: bool = False,
) -> str:
    """Why `action` may not run on `instance` now ("" when it may).
    `host`: the instance's host; `target`: the evacuate target, if named;
    `host_job_busy`: a host-recovery job that is moving this instance."""
    name = f"instance {instance.id}"
    if action == "ignore":
        return ""
    if action == "rebuild" and not can_rebuild:
        return "rebuild needs the OpenStack adapter; the configured cloud cannot rebuild"
    if host is None:
        return f"{name} has no known host; nothing can act on it"
    if host_job_busy:
        return (f"{name} is being moved by the recovery job {host_job_busy} of host "
                f"{host.name}; wait for it to finish")
    if action == "evacuate":
        return _evacuate_refusal(name, host, target, target_name)
    if host.state is not HostState.UP:
        return (f"host {host.name} of {name} is {host.state.value}, not up: {action} "
                "needs a running hypervisor; use evacuate once the host is fenced")
    return ""


def _evacuate_refusal(name: str, host: Host, target: Host | None,
                      target_name: str | None) -> str:
    if host.state not in FENCED_STATES and host.state is not HostState.MAINTENANCE:
        return (f"host {host.name} of {name} is {host.state.value} and not fenced: "
                "evacuating could run the instance twice; fence it first (or "
                "acknowledge its power-off with fence-ack) or put it in maintenance")
    if target_name is not None:
        if target is None:
            return f"target host {target_name!r} does not exist"
        if target.name == host.name:
            return f"target host {target.name} is the instance's own host"
        if not target.schedulable:
            return (f"target host {target.name} is {target.state.value}"
                    f"{' (maintenance)' if target.maintenance else ''}: not schedulable")
    return ""


def new_action_job(
    job_id: str, instance: Instance, action: str, target: str | None, by: str, now: float,
    decision: str | None = None,
) -> tuple[Job, Event]:
    """A pending action job and its `job.started` event."""
    check_action_name(action)
    where = f" to {target}" if target else ""
    via = f" (decision {decision})" if decision else ""
    reason = f"{action} of instance {instance.id}{where} requested by {by}{via}"
    data = ActionData(instance=instance.id, action=action, target=target, by=by,
                      decision=decision, source=instance.host, project=instance.project)
    job = Job(id=job_id, kind=JobKind.ACTION, subject=instance.id, created_at=now,
              updated_at=now, reason=reason, data=data)
    event = Event(type="job.started", subject=job_id, time=now, subject_kind=SubjectKind.JOB,
                  project=instance.project,
                  payload={"job": job_id, "kind": JobKind.ACTION.value, "subject": instance.id,
                           "instance": instance.id, "action": action, "target": target,
                           "by": by, "reason": reason})
    return job, event


def finish_action(job: Job, ok: bool, detail: str, now: float) -> tuple[Job, Event]:
    """An action job's end: done or failed, with what happened."""
    return transition_job(job, JobState.DONE if ok else JobState.FAILED, detail, now)


# -- the host layer -------------------------------------------------------------

CUSTOM_HOST_REASON = "custom host policy: its owner decides once the host is fenced"


def mark_custom(job: Job, instance_ids: Sequence[str] | frozenset[str]) -> Job:
    """In a new host-recovery job, set aside the instances whose host policy
    is `custom`: the job does not move them; once the fence is confirmed
    (`offered_after_fence`) a decision is offered for each."""
    data = job.data
    assert isinstance(data, HostRecoveryData)
    for iid in instance_ids:
        move = data.instances.get(iid)
        if move is not None:
            data = data.with_move(iid, replace(move, state=MoveState.SKIPPED,
                                               reason=CUSTOM_HOST_REASON, custom=True))
    return replace(job, data=data)


def offered_after_fence(before: Job, after: Job) -> tuple[str, ...]:
    """The instances to ask about now: those marked custom, at the moment the
    host job leaves `fenced` (its fence is confirmed), never earlier."""
    if before.kind is not JobKind.HOST_RECOVERY or before.state is not JobState.FENCED:
        return ()
    data = after.data
    if after.state is not JobState.EVACUATING or not isinstance(data, HostRecoveryData):
        return ()
    if not data.fence.confirmed_by:
        return ()
    return tuple(sorted(i for i, m in data.instances.items() if m.custom))
