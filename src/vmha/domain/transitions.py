"""The state machines' moves: the one function per kind that changes a state.

`transition_host` and `transition_job` validate a change against the
tables of vmha.domain.model, record the reason and return the new value
with the event that announces it; `start_step`/`finish_step` record a job's
steps. Only the engine (and the domain logic it runs) calls these: the API,
the agents, the dashboard and the CLI send the engine commands instead, and
an import-linter contract keeps it so. Callers persist the new value and
the event together (the outbox). Pure, standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from vmha.domain.errors import InvalidTransition
from vmha.domain.jobs import project_of
from vmha.domain.model import (
    HOST_TRANSITIONS,
    JOB_TRANSITIONS,
    Event,
    Host,
    HostState,
    Job,
    JobState,
    JobStep,
    Severity,
    StepState,
    SubjectKind,
)

HOST_EVENT_SEVERITY: Mapping[HostState, Severity] = {
    HostState.SUSPECT: Severity.WARNING,
    HostState.PARTITIONED: Severity.WARNING,
    HostState.FAILED: Severity.CRITICAL,
    HostState.FENCING: Severity.WARNING,
    HostState.FENCED: Severity.WARNING,
}


def transition_host(host: Host, to: HostState, reason: str, now: float) -> tuple[Host, Event]:
    """Move `host` to `to`, or raise InvalidTransition. Returns the new host
    and its event (`host.<state>`; maintenance gives `host.maintenance_on`)."""
    if to not in HOST_TRANSITIONS[host.state]:
        raise InvalidTransition("host", host.name, host.state.value, to.value)
    new = replace(host, state=to, state_reason=reason, state_since=now)
    kind = "host.maintenance_on" if to is HostState.MAINTENANCE else f"host.{to.value}"
    if host.state is HostState.MAINTENANCE:
        kind = "host.maintenance_off"
    event = Event(
        type=kind,
        subject=host.name,
        time=now,
        subject_kind=SubjectKind.HOST,
        severity=HOST_EVENT_SEVERITY.get(to, Severity.INFO),
        payload={
            "host": host.name,
            "segment": host.segment,
            "from": host.state.value,
            "to": to.value,
            "reason": reason,
        },
    )
    return new, event


def transition_job(job: Job, to: JobState, reason: str, now: float) -> tuple[Job, Event]:
    """Move `job` to `to` (bumping its generation), or raise."""
    if to not in JOB_TRANSITIONS[job.state]:
        raise InvalidTransition("job", job.id, job.state.value, to.value)
    new = replace(job, state=to, generation=job.generation + 1, reason=reason, updated_at=now)
    if to is JobState.DONE:
        kind, severity = "job.done", Severity.INFO
    elif to is JobState.FAILED:
        kind, severity = "job.failed", Severity.ERROR
    else:
        kind, severity = "job.step", Severity.INFO
    event = Event(
        type=kind,
        subject=job.id,
        time=now,
        subject_kind=SubjectKind.JOB,
        severity=severity,
        project=project_of(job.kind, job.data) or "",  # a tenant follows its own jobs
        payload={
            "job": job.id,
            "kind": job.kind.value,
            "subject": job.subject,
            "from": job.state.value,
            "to": to.value,
            "reason": reason,
        },
    )
    return new, event


def start_step(job: Job, name: str, now: float) -> Job:
    """Record that step `name` started (before it runs)."""
    step = JobStep(name=name, state=StepState.RUNNING, started_at=now)
    return replace(job, steps=(*job.steps, step), updated_at=now)


def finish_step(job: Job, name: str, now: float, ok: bool = True, detail: str = "") -> Job:
    """Record the end of the latest running step called `name`."""
    steps = list(job.steps)
    for i in range(len(steps) - 1, -1, -1):
        if steps[i].name == name and steps[i].state is StepState.RUNNING:
            steps[i] = replace(
                steps[i], state=StepState.DONE if ok else StepState.FAILED, finished_at=now,
                detail=detail,
            )
            return replace(job, steps=tuple(steps), updated_at=now)
    raise InvalidTransition("job step", f"{job.id}/{name}", "not running", "finished")
