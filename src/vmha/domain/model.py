"""The vocabulary of vmha: segments, hosts, instances, events and jobs.

Values are frozen dataclasses; states change only through
vmha.domain.transitions (which validates a change against the tables here,
records the reason and returns the event that announces it), and only the
engine calls it: everything else sends the engine commands.

Standard library only; time arrives as `now` (seconds since the epoch).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vmha.domain.errors import ValidationError
from vmha.domain.policy import HAPolicy
from vmha.domain.spec import InstanceSpec

if TYPE_CHECKING:
    from vmha.domain.jobs import JobData

NAME_MAX = 64
# check_name's rule as a regular expression (for OpenAPI): 1-64 letters,
# digits, '-', '_', '.', but not '.' or '..'.
NAME_PATTERN = (r"^(?:[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}|\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}"
                r"|\.\.[A-Za-z0-9._-]{1,62})$")
# the characters and length check_name allows, for its quick yes: names are
# checked on every record read from the store (1,000 hosts to a page)
_NAME_CHARS = re.compile(rf"[A-Za-z0-9._-]{{1,{NAME_MAX}}}")


class FenceMethod(str, enum.Enum):
    """How a fence level proves a host off (docs/fencing.md)."""

    IPMI = "ipmi"
    REDFISH = "redfish"
    FENCE_AGENT = "fence_agent"
    AGENT_WATCHDOG = "agent_watchdog"  # the agent's self-fence deadline
    MANUAL = "manual"  # an operator's acknowledgement


FENCE_METHODS = tuple(m.value for m in FenceMethod)
# the methods that can power a host off (the others only prove it off)
POWER_METHODS = frozenset({FenceMethod.IPMI, FenceMethod.REDFISH, FenceMethod.FENCE_AGENT})


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
    # failed -> fenced without fencing: proven dead while fencing was paused
    # (the BMC reads power off, or the agent's self-fence deadline passed)
    HostState.FAILED: frozenset(
        {HostState.FENCING, HostState.FENCED, HostState.UP, HostState.MAINTENANCE}
    ),
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
    """A resource name: 1-64 characters of letters, digits, `-`, `_`, `.`,
    except `.` and `..` (NAME_PATTERN says the same for OpenAPI)."""
    if isinstance(value, str) and _NAME_CHARS.fullmatch(value) and value not in (".", ".."):
        return value
    if not value or len(value) > NAME_MAX:
        raise ValidationError(field_name, f"must be 1 to {NAME_MAX} characters long")
    if not all(c.isascii() and (c.isalnum() or c in "-_.") for c in value):
        raise ValidationError(
            field_name, f"{value!r} may contain only letters, digits, '-', '_' and '.'"
        )
    if value in (".", ".."):  # URLs and paths resolve them: never reachable
        raise ValidationError(field_name, f"{value!r} is not a usable name")
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
    # The stored record's version (see VERSIONED), not part of its value.
    version: int = field(default=0, compare=False)

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
    version: int = field(default=0, compare=False)  # the stored record's (see VERSIONED)

    def __post_init__(self) -> None:
        if not self.id:
            raise ValidationError("id", "must not be empty")
        check_name("name", self.name)

    @property
    def group_key(self) -> tuple[str, str] | None:
        """The anti-affinity group scoped by project: two tenants' groups of
        the same name never meet (None: no group)."""
        return (self.project, self.anti_affinity_group) if self.anti_affinity_group else None


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


class StepState(str, enum.Enum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class JobStep:
    name: str
    state: StepState
    started_at: float
    finished_at: float | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", StepState(self.state))  # "done" is read as DONE


_BLANK: Any = None  # Job.data left out: replaced by the kind's blank record

# Optimistic concurrency (DESIGN.md, "One writer"): hosts, instances and jobs
# carry the version of the stored record they were read from. The store
# writes a record only while its stored version is still that one (and then
# adds one), else StaleWrite: a change made on an old copy is refused, never
# silently written over someone else's. Version 0 means "not read from the
# store" (a new record, or seeding and tests): such a write is not checked.
# The version is not part of a record's value: equality ignores it.
VERSIONED = ("hosts", "instances", "jobs")


@dataclass(frozen=True)
class Job:
    """A durable recovery. `generation` grows on every state change so that
    late results of an older attempt can be recognised and ignored. `data`
    is the kind's typed record (vmha.domain.jobs); left out, the kind's
    blank record for `subject`."""

    id: str
    kind: JobKind
    subject: str
    state: JobState = JobState.PENDING
    generation: int = 1
    steps: tuple[JobStep, ...] = ()
    created_at: float = 0.0
    updated_at: float = 0.0
    reason: str = ""
    # the kind's typed record; None (or a stored mapping) is read with
    # vmha.domain.jobs.data_from_storage
    data: JobData = _BLANK
    version: int = field(default=0, compare=False)  # the stored record's (see VERSIONED)

    def __post_init__(self) -> None:
        if self.data is None or isinstance(self.data, Mapping):
            from vmha.domain.jobs import data_from_storage  # jobs imports this module

            record = data_from_storage(self.kind, self.data, self.subject)
            object.__setattr__(self, "data", record)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_JOB_STATES
