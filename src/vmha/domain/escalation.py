"""Guest and application recoveries of one instance, as durable jobs.

When a guest fails (a crash, an unexpected stop, a watchdog whose action
is `restart`, a guest agent that stopped answering) or its application's
probes fail, and the layer's mode recovers (`auto`, `auto+notify`),
vmha.domain.restart says so; this module turns it into an
`instance_recovery` job and moves the job step by step:

    pending      waits for `due_at` (the restart backoff)
    evacuating   a step runs (exec:<command>, reboot, reset, restart, rebuild)
    verifying    app layer: the step is done; the application has until
                 `grace_until` to answer again (`app_recovered`)
    done         the guest step succeeded, or the application answers again
    failed       a step failed with no step left, the application still
                 fails after the last step, or the budget is spent

(`evacuating` and `verifying` are the shared job table's names; for this
kind they mean "a step runs" and "waiting for the application".) A step
that fails (the guest agent does not answer, the host refuses) escalates
at once to the next one.

The restart budget counts every step started against `max_restarts` per
`window_s` (`restart_times`, read from the instance's jobs): the history
lives in the store, so a restarted controller neither resets a spent
budget nor forgets a backoff (`due_at` and `grace_until` are stored too).

Used by vmha.engine.instances, which stores each returned job with its
events and performs the steps. Pure: time comes in as `now`, ids are
passed in. Standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from vmha.domain.jobs import InstanceRecoveryData
from vmha.domain.model import (
    Event,
    Instance,
    InstanceState,
    Job,
    JobKind,
    JobState,
    Severity,
    StepState,
    SubjectKind,
)
from vmha.domain.policy import HAPolicy
from vmha.domain.restart import make_event
from vmha.domain.transitions import finish_step, start_step, transition_job

LAYERS = ("guest", "app")
RESTARTING_STEPS = frozenset({"reboot", "reset", "restart", "rebuild"})  # the guest starts again
_DONE_WORDS = {"reboot": "rebooted", "reset": "reset", "restart": "restarted",
               "rebuild": "rebuilt from its image"}


@dataclass(frozen=True)
class Outcome:
    """A job moved: store `job` with `events`; the instance's recorded state
    becomes `state` (None: unchanged)."""

    job: Job
    events: tuple[Event, ...] = ()
    state: InstanceState | None = None


def data(job: Job) -> InstanceRecoveryData:
    """The job's record; only instance_recovery jobs have one."""
    assert isinstance(job.data, InstanceRecoveryData), f"job {job.id} is a {job.kind.value} job"
    return job.data


def step_kind(step: str) -> str:
    """`exec:/etc/init.d/app restart` -> `exec`; `reset` -> `reset`."""
    return step.partition(":")[0]


def restart_times(jobs: Iterable[Job], now: float, window_s: float) -> list[float]:
    """When the steps of these instance_recovery jobs started, within the
    window: the restarts the instance's budget has used."""
    times = [s.started_at for j in jobs if j.kind is JobKind.INSTANCE_RECOVERY
             for s in j.steps]
    return sorted(t for t in times if now - t < window_s)


def new_job(
    job_id: str, instance: Instance, layer: str, steps: Sequence[str], cause: str,
    now: float, due_at: float, notify: bool = False,
) -> Outcome:
    """A pending recovery of `instance` (its first step due at `due_at`)
    and its `job.started` event."""
    assert layer in LAYERS and steps, (layer, steps)
    record = InstanceRecoveryData(
        instance=instance.id, layer=layer, action=steps[0], reason=cause, steps=tuple(steps),
        host=instance.host, project=instance.project, due_at=due_at, notify=notify)
    plan = " then ".join(steps)
    reason = f"{layer} recovery of instance {instance.id}: {plan} ({cause})"
    job = Job(id=job_id, kind=JobKind.INSTANCE_RECOVERY, subject=instance.id,
              created_at=now, updated_at=now, reason=reason, data=record)
    event = Event(type="job.started", subject=job_id, time=now, subject_kind=SubjectKind.JOB,
                  project=instance.project,
                  payload={"job": job_id, "kind": job.kind.value, "subject": instance.id,
                           "instance": instance.id, "layer": layer, "steps": list(steps),
                           "due_at": due_at, "reason": reason})
    return Outcome(job, (event,))


def begin_step(job: Job, instance: Instance, policy: HAPolicy, used: Sequence[float],
               now: float, why: str = "") -> Outcome:
    """Start the current step (recorded before it runs), or fail the job
    when the budget is spent (`used`: the restart times in the window)."""
    d = data(job)
    if len(used) >= policy.max_restarts:
        reason = (f"restart budget spent: {len(used)} restarts in {policy.window_s:g} s "
                  f"(max {policy.max_restarts}); no more automatic restarts")
        return _fail(job, instance, f"{why}; {reason}" if why else reason, now)
    step = d.escalation[d.step]
    what = f"step {d.step + 1} of {len(d.escalation)}: {step}"
    moved, event = transition_job(job, JobState.EVACUATING, f"{why}; {what}" if why else what,
                                  now)
    moved = replace(start_step(moved, step, now), data=replace(d, action=step))
    events = [event]
    if d.notify:
        events.append(make_event(instance, "instance.recovery_step", now,
                                 f"{d.layer} recovery {what} (job {job.id})",
                                 Severity.WARNING, job=job.id, layer=d.layer, step=step))
    return Outcome(moved, tuple(events))


def step_finished(job: Job, instance: Instance, policy: HAPolicy, ok: bool, detail: str,
                  now: float, restarts: int) -> Outcome:
    """The current step returned (`ok`, with what happened). `restarts`:
    the budget used, this step included (for the event's words)."""
    d = data(job)
    step = d.action
    job = finish_step(job, step, now, ok=ok, detail=detail)
    if not ok:
        if d.step + 1 >= len(d.escalation):
            return _fail(job, instance, f"{step} failed: {detail}; nothing left to try", now)
        moved, event = transition_job(
            replace(job, data=replace(d, grace_until=now)), JobState.VERIFYING,
            f"{step} failed: {detail}; next: {d.escalation[d.step + 1]}", now)
        return Outcome(moved, (event,))
    events: list[Event] = []
    state = None
    kind = step_kind(step)
    if kind in RESTARTING_STEPS:
        state = InstanceState.RUNNING
        events.append(make_event(
            instance, "instance.restarted", now,
            f"{_DONE_WORDS[kind]} on {instance.host} (restart {restarts} of "
            f"{policy.max_restarts} in {policy.window_s:g} s)", Severity.INFO, job=job.id,
            layer=d.layer))
    if d.layer == "guest" or d.recovered:
        why = detail if d.layer == "guest" else f"{detail}; the application answers again"
        done, event = transition_job(job, JobState.DONE, why, now)
        return Outcome(done, (*events, event), state)
    grace = policy.app_grace_s
    waiting, event = transition_job(
        replace(job, data=replace(d, grace_until=now + grace)), JobState.VERIFYING,
        f"{detail}; the application has {grace:g} s to answer again", now)
    return Outcome(waiting, (*events, event), state)


def grace_over(job: Job, instance: Instance, policy: HAPolicy, used: Sequence[float],
               now: float) -> Outcome:
    """A verifying job whose grace time ran out (the application still
    fails, or its step failed): begin the next step, or fail the job."""
    d = data(job)
    last = job.steps[-1] if job.steps else None
    why = ""  # a step that failed said so when it failed
    if last is None or last.state is StepState.DONE:
        why = f"the application still fails {policy.app_grace_s:g} s after {d.action}"
    if d.step + 1 >= len(d.escalation):
        return _fail(job, instance, f"{why or d.action + ' failed'}; nothing left to try",
                     now)
    return begin_step(replace(job, data=replace(d, step=d.step + 1)), instance, policy, used,
                      now, why)


def _fail(job: Job, instance: Instance, reason: str, now: float) -> Outcome:
    failed, event = transition_job(job, JobState.FAILED, reason, now)
    recovery_failed = make_event(instance, "instance.recovery_failed", now, reason,
                                 Severity.ERROR, job=job.id, layer=data(job).layer)
    return Outcome(failed, (recovery_failed, event), InstanceState.ERROR)


def abandon(job: Job, why: str, now: float) -> Outcome:
    """Nothing the job can do any more, through no failure of its steps
    (the instance is gone, its host is not up: the host's recovery owns it)."""
    failed, event = transition_job(job, JobState.FAILED, why, now)
    return Outcome(failed, (event,))


def recovered(job: Job, now: float, why: str) -> Outcome | None:
    """The instance is well again (`app_recovered`, or the guest came back
    by itself): a job waiting (pending, verifying) is done; one whose step
    runs remembers it and ends when the step returns. None: nothing changes."""
    d = data(job)
    if job.finished:
        return None
    if job.state is JobState.EVACUATING:
        if d.recovered or d.layer == "guest":
            return None
        return Outcome(replace(job, data=replace(d, recovered=True)))
    done, event = transition_job(job, JobState.DONE, why, now)
    return Outcome(done, (event,))


def interrupted(job: Job, policy: HAPolicy, now: float) -> Outcome:
    """Resumed by a new controller while a step was running: that step may
    have acted (a second reset is not harmless), so it is not run again;
    the application gets its grace time, a guest step counts as done."""
    d = data(job)
    detail = "interrupted by a controller restart; it may have run"
    job = finish_step(job, d.action, now, ok=False, detail=detail)
    if d.layer == "guest" or d.recovered:
        done, event = transition_job(job, JobState.DONE, f"{d.action} {detail}", now)
        return Outcome(done, (event,))
    moved, event = transition_job(
        replace(job, data=replace(d, grace_until=now + policy.app_grace_s)),
        JobState.VERIFYING, f"{d.action} {detail}; the application has "
        f"{policy.app_grace_s:g} s to answer again", now)
    return Outcome(moved, (event,))
