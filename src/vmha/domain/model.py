"""The vocabulary of vmha: segments, hosts, instances, events and jobs.

Values are frozen dataclasses; change them with `dataclasses.replace` or the
`transition_*` functions, which validate a state change against its table,
record the reason and return the event that announces it. Callers (the
engine, the store, the API) persist the new value and the event together.

Standard library only; time arrives as `now` (seconds since the epoch).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from vmha.domain.errors import InvalidTransition, ValidationError
from vmha.domain.policy import HAPolicy
from vmha.domain.spec import InstanceSpec

NAME_MAX = 64
FENCE_METHODS = ("ipmi", "redfish", "fence_agent", "agent_watchdog", "manual")


class RecoveryMethod(str, enum.Enum):
    """How a segment recovers a failed host's instances (Masakari's names)."""

    AUTO = "auto"  # any up host of the segment with room
    RESERVED_HOST = "reserved_host"  # only hosts flagged reserved
    AUTO_PRIORITY = "auto_priority"  # auto, then reserved hosts
    RH_PRIORITY = "rh_priority"  # reserved hosts, then auto


class HostState(str, enum.Enum):
    UP = "up"
    SUSPECT = "suspect"
    PARTITIONED = "partitioned"
    FAILED = "failed"
    FENCING = "fencing"
    FENCED = "fenced"
    RECOVERING = "recovering"
    RECOVERED = "recovered"
    MAINTENANCE = "maintenance"


# Allowed host state changes (DESIGN.md, "State machines"). Every state may
# enter maintenance; leaving maintenance goes back to `up` (the detector
# then re-evaluates). `fence_failed` leaves the host `failed` and pauses the
# job; a new fence attempt moves it to `fencing` again.
HOST_TRANSITIONS: Mapping[HostState, frozenset[HostState]] = {
    HostState.UP: frozenset({HostState.SUSPECT, HostState.MAINTENANCE}),
    HostState.SUSPECT: frozenset(
        {HostState.UP, HostState.PARTITIONED, HostState.FAILED, HostState.MAINTENANCE}
    ),
    HostState.PARTITIONED: frozenset(
        {HostState.UP, HostState.SUSPECT, HostState.FAILED, HostState.MAINTENANCE}
    ),
    HostState.FAILED: frozenset({HostState.FENCING, HostState.UP, HostState.MAINTENANCE}),
    HostState.FENCING: frozenset({HostState.FENCED, HostState.FAILED, HostState.MAINTENANCE}),
    HostState.FENCED: frozenset({HostState.RECOVERING, HostState.MAINTENANCE}),
    HostState.RECOVERING: frozenset({HostState.RECOVERED, HostState.MAINTENANCE}),
    HostState.RECOVERED: frozenset({HostState.UP, HostState.MAINTENANCE}),
    HostState.MAINTENANCE: frozenset({HostState.UP}),
}


class InstanceState(str, enum.Enum):
    BUILDING = "building"
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    CRASHED = "crashed"
    RECOVERING = "recovering"
    ERROR = "error"
    UNKNOWN = "unknown"


class JobState(str, enum.Enum):
    PENDING = "pending"
    FENCING = "fencing"
    FENCED = "fenced"
    EVACUATING = "evacuating"
    VERIFYING = "verifying"
    DONE = "done"
    FAILED = "failed"
    PAUSED = "paused"


TERMINAL_JOB_STATES = frozenset({JobState.DONE, JobState.FAILED})

JOB_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset(
        {JobState.FENCING, JobState.EVACUATING, JobState.PAUSED, JobState.FAILED,
         JobState.DONE}  # DONE: actions and decisions settle in one step
    ),
    JobState.FENCING: frozenset({JobState.FENCED, JobState.PAUSED, JobState.FAILED}),
    JobState.FENCED: frozenset({JobState.EVACUATING, JobState.PAUSED, JobState.FAILED}),
    JobState.EVACUATING: frozenset(
        {JobState.VERIFYING, JobState.PAUSED, JobState.FAILED, JobState.DONE}
    ),
    JobState.VERIFYING: frozenset(
        {JobState.DONE, JobState.EVACUATING, JobState.PAUSED, JobState.FAILED}
    ),
    JobState.PAUSED: frozenset(
        {JobState.PENDING, JobState.FENCING, JobState.FENCED, JobState.EVACUATING,
         JobState.FAILED}
    ),
    JobState.DONE: frozenset(),
    JobState.FAILED: frozenset(),
}


class JobKind(str, enum.Enum):
    HOST_RECOVERY = "host_recovery"  # fence a failed host, move its instances
    INSTANCE_RECOVERY = "instance_recovery"  # restart/reset one instance
    ACTION = "action"  # an operator's or user's action through the API
    DECISION = "decision"  # a custom-policy question waiting for the user's answer


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class SubjectKind(str, enum.Enum):
    SEGMENT = "segment"
    HOST = "host"
    INSTANCE = "instance"
    JOB = "job"


def check_name(field_name: str, value: str) -> str:
    """A resource name: 1-64 characters of letters, digits, `-`, `_`, `.`."""
    if not value or len(value) > NAME_MAX:
        raise ValidationError(field_name, f"must be 1 to {NAME_MAX} characters long")
    if not all(c.isascii() and (c.isalnum() or c in "-_.") for c in value):
        raise ValidationError(
            field_name, f"{value!r} may contain only letters, digits, '-', '_' and '.'"
        )
    return value


@dataclass(frozen=True)
class Segment:
    """A failure domain: hosts that recover into each other."""

    name: str
    recovery_method: RecoveryMethod = RecoveryMethod.AUTO
    enabled: bool = True
    mass_failure_threshold: float = 0.5
    description: str = ""
    default_policy: str | None = None  # name of a stored policy
    hold_recovered_hosts: bool = False  # keep returning hosts out of scheduling

    def __post_init__(self) -> None:
        check_name("name", self.name)
        if not 0.0 < self.mass_failure_threshold <= 1.0:
            raise ValidationError(
                "mass_failure_threshold",
                f"{self.mass_failure_threshold} is outside (0, 1]; the default is 0.5",
            )


@dataclass(frozen=True)
class Capacity:
    vcpus: int = 0
    ram_mb: int = 0
    disk_gb: int = 0

    def __post_init__(self) -> None:
        for name in ("vcpus", "ram_mb", "disk_gb"):
            if getattr(self, name) < 0:
                raise ValidationError(name, "must be zero or more")

    def fits(self, need: Capacity) -> bool:
        return (
            need.vcpus <= self.vcpus
            and need.ram_mb <= self.ram_mb
            and need.disk_gb <= self.disk_gb
        )

    def minus(self, other: Capacity) -> Capacity:
        return Capacity(
            max(0, self.vcpus - other.vcpus),
            max(0, self.ram_mb - other.ram_mb),
            max(0, self.disk_gb - other.disk_gb),
        )


@dataclass(frozen=True)
class Host:
    """A hypervisor. `state` changes only through `transition_host`."""

    name: str
    segment: str
    address: str = ""
    state: HostState = HostState.UP
    capacity: Capacity = field(default_factory=Capacity)
    reserved: bool = False
    maintenance: bool = False
    bmc: str | None = None  # reference to BMC settings (fencing issue)
    # Fence levels, tried in order; a level is a tuple of methods that must
    # all confirm, e.g. (("redfish",), ("ipmi",), ("agent_watchdog",)).
    fence_levels: tuple[tuple[str, ...], ...] = ()
    state_reason: str = ""
    state_since: float = 0.0

    def __post_init__(self) -> None:
        check_name("name", self.name)
        check_name("segment", self.segment)
        for level in self.fence_levels:
            for method in level:
                if method not in FENCE_METHODS:
                    raise ValidationError(
                        "fence_levels",
                        f"{method!r} is not a fence method; allowed: {', '.join(FENCE_METHODS)}",
                    )

    @property
    def schedulable(self) -> bool:
        """May receive instances: up, not in maintenance."""
        return self.state is HostState.UP and not self.maintenance


@dataclass(frozen=True)
class Instance:
    """A VM protected (or merely watched) by vmha."""

    id: str
    name: str
    host: str | None
    project: str = ""
    resources: Capacity = field(default_factory=Capacity)
    state: InstanceState = InstanceState.RUNNING
    policy: HAPolicy | None = None  # inline policy, wins over policy_name
    policy_name: str | None = None
    anti_affinity_group: str | None = None
    spec: InstanceSpec | None = None  # libvirt mode: how vmha defines it

    def __post_init__(self) -> None:
        if not self.id:
            raise ValidationError("id", "must not be empty")
        check_name("name", self.name)


@dataclass(frozen=True)
class Event:
    """Something that happened; published to every subscriber.

    `id` is assigned by the store (monotonic, usable as a cursor); an event
    built by the domain has id 0 until stored.
    """

    type: str
    subject: str
    time: float
    subject_kind: SubjectKind = SubjectKind.HOST
    project: str = ""
    severity: Severity = Severity.INFO
    payload: Mapping[str, Any] = field(default_factory=dict)
    id: int = 0


@dataclass(frozen=True)
class JobStep:
    name: str
    state: str  # "running" | "done" | "failed" | "skipped"
    started_at: float
    finished_at: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class Job:
    """A durable recovery. `generation` grows on every state change so that
    late results of an older attempt can be recognised and ignored."""

    id: str
    kind: JobKind
    subject: str
    state: JobState = JobState.PENDING
    generation: int = 1
    steps: tuple[JobStep, ...] = ()
    created_at: float = 0.0
    updated_at: float = 0.0
    reason: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_JOB_STATES


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
    step = JobStep(name=name, state="running", started_at=now)
    return replace(job, steps=(*job.steps, step), updated_at=now)


def finish_step(job: Job, name: str, now: float, ok: bool = True, detail: str = "") -> Job:
    """Record the end of the latest running step called `name`."""
    steps = list(job.steps)
    for i in range(len(steps) - 1, -1, -1):
        if steps[i].name == name and steps[i].state == "running":
            steps[i] = replace(
                steps[i], state="done" if ok else "failed", finished_at=now, detail=detail
            )
            return replace(job, steps=tuple(steps), updated_at=now)
    raise InvalidTransition("job step", f"{job.id}/{name}", "not running", "finished")
