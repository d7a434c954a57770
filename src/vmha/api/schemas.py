"""Request and response bodies of the REST API (pydantic v2), and their
conversion to and from the frozen domain values.

Each resource has a Create model (POST), an Update model (PATCH: every
field optional; only the fields sent change; `null` clears the nullable
ones) and an Out model. Pydantic checks types and shapes; the domain
constructors check meaning (names, ranges) and raise vmha ValidationError
naming the field, which the routes prefix with `body.`.

Used by the routers in `vmha.api.routes`; no I/O here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from vmha.domain.bmc import BmcRecord
from vmha.domain.model import (
    FENCE_METHODS,
    NAME_MAX,
    NAME_PATTERN,
    Capacity,
    Event,
    Host,
    HostState,
    Instance,
    InstanceState,
    Job,
    JobKind,
    JobState,
    RecoveryMethod,
    Segment,
    Severity,
    SubjectKind,
    check_name,
)
from vmha.domain.policy import (
    DEFAULT_POLICY,
    PRIORITY_MAX,
    PRIORITY_MIN,
    CustomFallback,
    HAPolicy,
    LayerMode,
    ProbeKind,
    WatchdogAction,
)
from vmha.domain.spec import XML_MAX, InstanceSpec
from vmha.errors import ValidationError
from vmha.ports import NamedPolicy

T = TypeVar("T")
NAME: dict[str, Any] = {"max_length": NAME_MAX, "json_schema_extra": {"pattern": NAME_PATTERN}}
INT_MAX = 2**31 - 1
TEXT_MAX = 1024
D = DEFAULT_POLICY


def unset(**kwargs: Any) -> Any:
    """Default of an Update field that may be omitted but not sent as null:
    pydantic validates only what was sent, and `exclude_unset` skips the rest."""
    return Field(default=None, **kwargs)


def _no_nul(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if isinstance(value, list):
        for item in value:
            _no_nul(item)
    return value


class _In(BaseModel):
    # strict: JSON types as declared (no 0 for false, no "5" for 5), so the
    # OpenAPI document and the server refuse the same bodies. Enum fields
    # say strict=False: their JSON form is the text value.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    # Text goes to the store; PostgreSQL cannot keep NUL characters.
    _text = field_validator("*", mode="after")(_no_nul)

    @field_validator("*", mode="before")
    @classmethod
    def _json_int(cls, value: Any, info: ValidationInfo) -> Any:
        """JSON has one number type: 3.0 is the integer 3 (JSON Schema says
        so too), so an integral float reaches an int field as an int.
        Anything else meets the strict check unchanged (no "3", no true)."""
        if isinstance(value, float) and value.is_integer() and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if annotation is int or annotation == int | None:
                return int(value)
        return value


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CapacityModel(_In):
    vcpus: int = Field(default=0, ge=0, le=INT_MAX)
    ram_mb: int = Field(default=0, ge=0, le=INT_MAX)
    disk_gb: int = Field(default=0, ge=0, le=INT_MAX)

    def to_domain(self) -> Capacity:
        return Capacity(self.vcpus, self.ram_mb, self.disk_gb)

    @classmethod
    def of(cls, c: Capacity) -> CapacityModel:
        return cls(vcpus=c.vcpus, ram_mb=c.ram_mb, disk_gb=c.disk_gb)


class ProbeModel(_In):
    kind: ProbeKind = Field(strict=False)
    target: str = Field(max_length=TEXT_MAX, description="URL (http), PORT or HOST:PORT (tcp), "
                        "command line run in the guest through its guest agent (exec)")
    interval_s: float = Field(default=10.0, gt=0, le=3600)
    timeout_s: float = Field(default=2.0, gt=0, le=3600, description="at most interval_s")
    failure_threshold: int = Field(default=3, ge=1, le=100,
                                   description="failures in a row: the application failed")
    success_threshold: int = Field(default=1, ge=1, le=100,
                                   description="successes in a row: it answers again")
    initial_delay_s: float = Field(default=0.0, ge=0, le=3600, description="no failure "
                                   "counted this long after the guest (re)boots")
    expect: str = Field(default="", max_length=256,
                        description="http: text the answer's body must contain")


# An escalation step as vmha.domain.probes.AppStep.parse reads it (declared in
# OpenAPI; the domain checks it with a clearer message): a step name, or exec:
# and a command line without control characters, spaces around it ignored
# (whether it splits into shell words the server checks: a schema cannot say).
APP_STEP_PATTERN = (r"^\s*(reboot|reset|restart|rebuild|exec\s*:\s*[^\s\x00-\x1f\x7f]"
                    r"([^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?)\s*$")
APP_STEP = Annotated[str, Field(max_length=1024, json_schema_extra={"pattern": APP_STEP_PATTERN})]


def _off_or_1_to_3600(schema: dict[str, Any]) -> None:
    """The schema says what the server takes: 0 (off) or 1 to 3600 (the
    domain's check), not every number in between."""
    schema.pop("minimum", None)
    schema.pop("maximum", None)
    schema["anyOf"] = [{"const": 0}, {"minimum": 1, "maximum": 3600}]


class PolicyModel(_In):
    """An HA policy. Omitted keys take the built-in defaults shown here."""

    host: LayerMode = Field(default=D.host, strict=False)
    guest: LayerMode = Field(default=D.guest, strict=False)
    app: LayerMode = Field(default=D.app, strict=False)
    priority: int = Field(default=D.priority, ge=PRIORITY_MIN, le=PRIORITY_MAX)
    max_restarts: int = Field(default=D.max_restarts, ge=0, le=1000)
    window_s: float = Field(default=D.window_s, gt=0, le=604800)
    evacuate_to_stopped: bool = D.evacuate_to_stopped
    watchdog_action: WatchdogAction = Field(default=D.watchdog_action, strict=False)
    probes: list[ProbeModel] = Field(default_factory=list)
    custom_deadline_s: float = Field(default=D.custom_deadline_s, gt=0, le=3600)
    custom_fallback: CustomFallback = Field(default=D.custom_fallback, strict=False)
    app_actions: list[APP_STEP] = Field(
        default_factory=lambda: [str(s) for s in D.app_actions], min_length=1, max_length=8,
        description="the application escalation, in order: exec:<command> (in the guest, "
        "through its guest agent), reboot, reset, restart, rebuild (OpenStack: Nova "
        "rebuilds the server from its current image)")
    app_grace_s: float = Field(default=D.app_grace_s, gt=0, le=3600, description="how long "
                               "the application may still fail after a step before the next")
    guest_ping_s: float = Field(default=D.guest_ping_s, ge=0, le=3600,
                                description="guest-agent ping interval (0: off; else >= 1)",
                                json_schema_extra=_off_or_1_to_3600)
    guest_ping_failures: int = Field(default=D.guest_ping_failures, ge=1, le=100,
                                     description="pings missed in a row: unresponsive")

    def to_domain(self) -> HAPolicy:
        try:
            return HAPolicy.from_dict(self.model_dump(mode="json"))
        except ValidationError as exc:  # name the field from the body's root
            raise ValidationError(f"policy.{exc.field}", exc.reason) from exc

    @classmethod
    def of(cls, policy: HAPolicy) -> PolicyModel:
        return cls.model_validate(policy.to_dict())


class SpecModel(_In):
    """How vmha defines the instance in libvirt mode: a template (`image`,
    `address` ...) or a whole domain `xml`. Not used with OpenStack."""

    image: str = Field(default="", max_length=255,
                       description="image name under the controller's [cloud] image_dir")
    address: str = Field(default="", max_length=64, description="guest ADDRESS/PREFIX")
    gateway: str = Field(default="", max_length=64)
    mac: str = Field(default="", max_length=17, description="derived from the id when empty")
    bridge: str = Field(default="br0", max_length=64)
    health_url: str = Field(default="", max_length=1024,
                            description="answers 200 when the application is up")
    watchdog_s: int = Field(default=3, ge=1, le=60, description="guest watchdog heartbeat")
    xml: str = Field(default="", max_length=XML_MAX, description="a whole libvirt domain",
                     json_schema_extra={"pattern": r"^(|[^\x00]*<domain[^\x00]*)$"})

    def to_domain(self) -> InstanceSpec:
        try:
            return InstanceSpec.from_dict(self.model_dump())
        except ValidationError as exc:
            field = "spec" if exc.field == "spec" else f"spec.{exc.field}"
            raise ValidationError(field, exc.reason) from exc

    @classmethod
    def of(cls, spec: InstanceSpec) -> SpecModel:
        return cls.model_validate(spec.to_dict())


# -- segments ----------------------------------------------------------------


class SegmentCreate(_In):
    name: str = Field(**NAME)
    recovery_method: RecoveryMethod = Field(default=RecoveryMethod.AUTO, strict=False)
    enabled: bool = True
    mass_failure_threshold: float = Field(default=0.5, gt=0, le=1)
    description: str = Field(default="", max_length=TEXT_MAX)
    default_policy: str | None = Field(default=None, **NAME,
                                       description="name of a stored policy")
    hold_recovered_hosts: bool = False

    def to_domain(self) -> Segment:
        return Segment(**self.model_dump())


class SegmentUpdate(_In):
    recovery_method: RecoveryMethod = unset(strict=False)
    enabled: bool = unset()
    mass_failure_threshold: float = unset(gt=0, le=1)
    description: str = unset(max_length=TEXT_MAX)
    default_policy: str | None = Field(default=None, **NAME)
    hold_recovered_hosts: bool = unset()

    def apply(self, segment: Segment) -> Segment:
        return replace(segment, **self.model_dump(exclude_unset=True))


class SegmentOut(_Out):
    name: str
    recovery_method: RecoveryMethod
    enabled: bool
    mass_failure_threshold: float
    description: str
    default_policy: str | None
    hold_recovered_hosts: bool
    recovery_paused: bool = Field(
        default=False, description="the mass-failure guard paused automatic fencing and "
        "recovery in this segment (an operator may resume it)")
    paused_reason: str = Field(default="", description="why, while paused")

    @classmethod
    def of(cls, s: Segment, paused_reason: str | None = None) -> SegmentOut:
        return cls(
            name=s.name, recovery_method=s.recovery_method, enabled=s.enabled,
            mass_failure_threshold=s.mass_failure_threshold, description=s.description,
            default_policy=s.default_policy, hold_recovered_hosts=s.hold_recovered_hosts,
            recovery_paused=paused_reason is not None, paused_reason=paused_reason or "",
        )


# -- hosts -------------------------------------------------------------------

FenceMethodName = Literal[FENCE_METHODS]  # type: ignore[valid-type]
FenceLevels = list[list[FenceMethodName]]


class HostCreate(_In):
    name: str = Field(**NAME)
    segment: str = Field(**NAME)
    address: str = Field(default="", max_length=255)
    capacity: CapacityModel = CapacityModel()
    reserved: bool = False
    bmc: str | None = Field(default=None, max_length=255)
    fence_levels: FenceLevels = Field(
        default_factory=list,
        description="fence levels tried in order, e.g. [[\"redfish\"], [\"ipmi\"]]",
    )

    def to_domain(self) -> Host:
        return Host(
            name=self.name, segment=self.segment, address=self.address,
            capacity=self.capacity.to_domain(), reserved=self.reserved, bmc=self.bmc,
            fence_levels=tuple(tuple(level) for level in self.fence_levels),
        )


class HostUpdate(_In):
    """Host fields an admin may change. `state` and `maintenance` are not
    here: they change through the state machine (POST .../maintenance)."""

    segment: str = unset(**NAME)
    address: str = unset(max_length=255)
    capacity: CapacityModel = unset()
    reserved: bool = unset()
    bmc: str | None = unset(max_length=255)
    fence_levels: FenceLevels = unset()

    def apply(self, host: Host) -> Host:
        changes: dict[str, Any] = self.model_dump(exclude_unset=True)
        if "capacity" in changes:
            changes["capacity"] = self.capacity.to_domain()
        if "fence_levels" in changes:
            changes["fence_levels"] = tuple(tuple(level) for level in self.fence_levels)
        return replace(host, **changes)


class MaintenanceRequest(_In):
    enabled: bool
    reason: str = Field(default="", max_length=TEXT_MAX)


class HostOut(_Out):
    name: str
    segment: str
    address: str
    state: HostState
    state_reason: str
    state_since: float
    maintenance: bool
    schedulable: bool
    capacity: CapacityModel
    reserved: bool
    bmc: str | None
    fence_levels: FenceLevels
    heartbeat_age_s: float | None = Field(
        default=None, description="seconds since the last heartbeat (null: none heard)")
    phi: float | None = Field(default=None, description="the failure detector's suspicion")

    @classmethod
    def of(cls, h: Host, live: Any = None) -> HostOut:
        return cls(
            name=h.name, segment=h.segment, address=h.address, state=h.state,
            state_reason=h.state_reason, state_since=h.state_since,
            maintenance=h.maintenance, schedulable=h.schedulable,
            capacity=CapacityModel.of(h.capacity), reserved=h.reserved, bmc=h.bmc,
            fence_levels=[list(level) for level in h.fence_levels],
            heartbeat_age_s=None if live is None else live.heartbeat_age_s,
            phi=None if live is None else live.phi,
        )

    @staticmethod
    def plain(h: Host, live: Any = None) -> dict[str, Any]:
        """`of(h, live).model_dump(mode="json")`, built without a model: a
        page of 1,000 hosts costs ~3 ms instead of ~25 (the domain model has
        validated the values already; tests/api/test_api_lists.py holds the
        two equal)."""
        c = h.capacity
        return {
            "name": h.name, "segment": h.segment, "address": h.address,
            "state": h.state.value, "state_reason": h.state_reason,
            "state_since": h.state_since, "maintenance": h.maintenance,
            "schedulable": h.schedulable,
            "capacity": {"vcpus": c.vcpus, "ram_mb": c.ram_mb, "disk_gb": c.disk_gb},
            "reserved": h.reserved, "bmc": h.bmc,
            "fence_levels": [list(level) for level in h.fence_levels],
            "heartbeat_age_s": None if live is None else live.heartbeat_age_s,
            "phi": None if live is None else live.phi,
        }


class PowerStatusOut(_Out):
    host: str
    methods: dict[str, str] = Field(
        description='per power method: "on", "off" or "error: <why>"')


class FenceAckOut(_Out):
    host: str
    acknowledged_by: str
    forced: bool = False


class FenceAckRequest(_In):
    force: bool = Field(default=False, description=(
        "acknowledge even though the host's heartbeats are current or peers reach it "
        "(audited in the host.fence_acked event)"))


class FenceRequest(_In):
    method: Literal["ipmi", "redfish", "fence_agent"] | None = Field(
        default=None, description="only this power method; null: the host's power levels")


class SegmentResumeOut(_Out):
    segment: str
    resumed_by: str


class FenceOut(_Out):
    host: str
    job: str = Field(description="the host's recovery job: GET /v1/jobs/{job} for the attempts")
    requested_by: str
    levels: list[list[str]]


class HostAction(_In):
    action: Literal["fence", "fence-ack", "enable", "disable"]
    method: Literal["ipmi", "redfish", "fence_agent"] | None = None  # fence
    force: bool = False  # fence-ack
    reason: str = Field(default="", max_length=255)  # enable / disable


class HostActionOut(_Out):
    host: str
    action: str
    by: str
    job: str | None = None
    forced: bool = False


class BmcIn(_In):
    ipmi_address: str = Field(default="", max_length=255)
    ipmi_port: int = Field(default=623, gt=0, lt=65536)
    redfish_url: str = Field(default="", max_length=255, pattern=r"^(https?://.+)?$")
    redfish_system: str = Field(default="", max_length=255)
    username: str = Field(min_length=1, max_length=255)
    password: SecretStr = Field(description="write-only: never shown again")
    fence_agent: str = Field(default="", max_length=64, pattern=r"^(fence_[A-Za-z0-9_]+)?$")
    fence_agent_options: dict[str, str] = Field(default_factory=dict)


class BmcOut(_Out):
    host: str
    ipmi_address: str
    ipmi_port: int
    redfish_url: str
    redfish_system: str
    username: str
    password: str = Field(default="***", description="always ***: the password is write-only")
    fence_agent: str
    fence_agent_options: dict[str, str]
    updated_at: float

    @classmethod
    def of(cls, b: BmcRecord) -> BmcOut:
        return cls(host=b.host, ipmi_address=b.ipmi_address, ipmi_port=b.ipmi_port,
                   redfish_url=b.redfish_url, redfish_system=b.redfish_system,
                   username=b.username, fence_agent=b.fence_agent,
                   fence_agent_options=dict(b.fence_agent_options), updated_at=b.updated_at)


# -- instances ---------------------------------------------------------------


class InstanceCreate(_In):
    id: str | None = Field(default=None, **NAME, description="generated when omitted")
    name: str = Field(**NAME)
    host: str | None = Field(default=None, **NAME)
    project: str | None = Field(
        default=None, max_length=64,
        description="defaults to the caller's project for project tokens",
    )
    resources: CapacityModel = CapacityModel()
    policy: PolicyModel | None = Field(
        default=None, description="inline policy; wins over policy_name"
    )
    policy_name: str | None = Field(default=None, **NAME)
    anti_affinity_group: str | None = Field(default=None, max_length=64)
    spec: SpecModel | None = Field(default=None, description="libvirt mode: its definition")

    def to_domain(self, instance_id: str, project: str) -> Instance:
        check_name("id", instance_id)  # ids travel in URLs: keep them plain
        return Instance(
            id=instance_id, name=self.name, host=self.host, project=project,
            resources=self.resources.to_domain(),
            policy=None if self.policy is None else self.policy.to_domain(),
            policy_name=self.policy_name, anti_affinity_group=self.anti_affinity_group,
            spec=None if self.spec is None else self.spec.to_domain(),
        )


class InstanceUpdate(_In):
    """`policy` replaces the whole inline policy; `null` removes it."""

    name: str = unset(**NAME)
    host: str | None = unset(**NAME)
    project: str = unset(max_length=64)
    resources: CapacityModel = unset()
    policy: PolicyModel | None = None
    policy_name: str | None = unset(**NAME)
    anti_affinity_group: str | None = unset(max_length=64)
    spec: SpecModel | None = None

    def apply(self, instance: Instance) -> Instance:
        changes: dict[str, Any] = self.model_dump(exclude_unset=True)
        if "spec" in changes:
            changes["spec"] = None if self.spec is None else self.spec.to_domain()
        if "resources" in changes:
            changes["resources"] = self.resources.to_domain()
        if "policy" in changes:
            changes["policy"] = None if self.policy is None else self.policy.to_domain()
        return replace(instance, **changes)


class InstanceOut(_Out):
    id: str
    name: str
    host: str | None
    project: str
    state: InstanceState
    resources: CapacityModel
    policy: PolicyModel | None
    policy_name: str | None
    anti_affinity_group: str | None
    spec: SpecModel | None = None

    @classmethod
    def of(cls, i: Instance) -> InstanceOut:
        return cls(
            id=i.id, name=i.name, host=i.host, project=i.project, state=i.state,
            resources=CapacityModel.of(i.resources),
            policy=None if i.policy is None else PolicyModel.of(i.policy),
            policy_name=i.policy_name, anti_affinity_group=i.anti_affinity_group,
            spec=None if i.spec is None else SpecModel.of(i.spec),
        )


PolicySource = Literal["inline", "named", "segment", "default"]


class EffectivePolicyOut(_Out):
    instance: str
    source: PolicySource = Field(
        description="inline (the instance's own), named (policy_name), "
        "segment (its host's segment default) or default (built in)"
    )
    name: str | None = Field(description="the stored policy's name for named/segment")
    policy: PolicyModel


# -- named policies ----------------------------------------------------------


class PolicyCreate(_In):
    name: str = Field(**NAME)
    description: str = Field(default="", max_length=TEXT_MAX)
    policy: PolicyModel = PolicyModel()

    def to_domain(self) -> NamedPolicy:
        check_name("name", self.name)
        return NamedPolicy(self.name, self.policy.to_domain(), self.description)


class PolicyUpdate(_In):
    description: str = unset(max_length=TEXT_MAX)
    policy: PolicyModel = unset(description="replaces the whole policy")

    def apply(self, named: NamedPolicy) -> NamedPolicy:
        changes: dict[str, Any] = {}
        if "description" in self.model_fields_set:
            changes["description"] = self.description
        if "policy" in self.model_fields_set:
            changes["policy"] = self.policy.to_domain()
        return replace(named, **changes)


class PolicyOut(_Out):
    name: str
    description: str
    policy: PolicyModel

    @classmethod
    def of(cls, p: NamedPolicy) -> PolicyOut:
        return cls(name=p.name, description=p.description, policy=PolicyModel.of(p.policy))


# -- events and jobs ---------------------------------------------------------


class EventOut(_Out):
    id: int
    type: str
    subject: str
    subject_kind: SubjectKind
    project: str
    severity: Severity
    time: float
    payload: dict[str, Any]

    @classmethod
    def of(cls, e: Event) -> EventOut:
        return cls(
            id=e.id, type=e.type, subject=e.subject, subject_kind=e.subject_kind,
            project=e.project, severity=e.severity, time=e.time, payload=dict(e.payload),
        )


class EventPage(_Out):
    items: list[EventOut]
    next_since: int = Field(description="pass as `since` to get the events after these")


class JobStepOut(_Out):
    name: str
    state: str
    started_at: float
    finished_at: float | None
    duration_s: float | None = Field(description="null while the step runs")
    detail: str


class JobOut(_Out):
    id: str
    kind: JobKind
    subject: str
    state: JobState
    generation: int
    created_at: float
    updated_at: float
    reason: str
    data: dict[str, Any]
    steps: list[JobStepOut]

    @classmethod
    def of(cls, j: Job) -> JobOut:
        steps = [
            JobStepOut(
                name=s.name, state=s.state.value, started_at=s.started_at,
                finished_at=s.finished_at,
                duration_s=None if s.finished_at is None else s.finished_at - s.started_at,
                detail=s.detail,
            )
            for s in j.steps
        ]
        return cls(
            id=j.id, kind=j.kind, subject=j.subject, state=j.state, generation=j.generation,
            created_at=j.created_at, updated_at=j.updated_at, reason=j.reason,
            data=j.data.to_storage(), steps=steps,
        )


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    next_marker: str | None = Field(
        description="pass as `marker` to get the next page; null on the last page"
    )


class Status(_Out):
    status: str


# -- custom recovery: instance actions and decisions ---------------------------

InstanceAction = Literal["restart", "reset", "stop", "start", "evacuate", "rebuild", "ignore"]


class ActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    action: InstanceAction
    host: str | None = Field(None, description="evacuate only: the target host "
                                              "(default: chosen like automatic recovery)")


class DecisionAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    action: InstanceAction


class DecisionAnswerWithToken(DecisionAnswer):
    token: str = Field(min_length=1, max_length=512,
                       description="the token of the decision.requested event")


class DecisionOut(BaseModel):
    decision: JobOut
    job: JobOut | None = None


# -- what-if -----------------------------------------------------------------


class WhatIfRequest(_In):
    fail: list[str] = Field(min_length=1, max_length=1000,
                            description="names of the hosts that would fail at once")


class WhatIfInstanceOut(_Out):
    instance: str
    name: str
    source: str = Field(description="the failed host it runs on")
    action: Literal["move", "unplaceable", "notify", "custom", "off"]
    target: str | None
    stopped: bool = Field(description="evacuate_to_stopped: defined on the target, not started")
    priority: int
    reason: str


class WhatIfSegmentOut(_Out):
    segment: str
    hosts: int = Field(description="hosts not in maintenance")
    down: int = Field(description="hosts that would look down")
    failing: int = Field(description="of those, the hosts asked about")
    threshold: float
    already_paused: bool
    would_pause: bool
    recovers: bool = Field(description="automatic fencing and recovery would run")
    reason: str


class WhatIfOut(_Out):
    failed: list[str]
    absorbed: bool = Field(description="every protected instance finds a host and "
                                       "recovery is not held by the guard")
    isolated: bool = Field(description="every host would look down: the controller "
                                       "assumes it is cut off and fences nothing")
    instances: list[WhatIfInstanceOut]
    segments: list[WhatIfSegmentOut]
    notes: list[str]

    @classmethod
    def of(cls, w: Any) -> WhatIfOut:
        return cls(
            failed=list(w.failed), absorbed=w.absorbed, isolated=w.isolated,
            instances=[WhatIfInstanceOut(
                instance=o.instance, name=o.name, source=o.source, action=o.action,
                target=o.target, stopped=o.stopped, priority=o.priority, reason=o.reason)
                for o in w.outcomes],
            segments=[WhatIfSegmentOut(
                segment=s.segment, hosts=s.hosts, down=s.down, failing=s.failing,
                threshold=s.threshold, already_paused=s.already_paused,
                would_pause=s.would_pause, recovers=s.recovers, reason=s.reason)
                for s in w.segments],
            notes=list(w.notes),
        )


class SingleFailureOut(_Out):
    host: str
    segment: str
    absorbed: bool
    moved: int
    unplaceable: list[WhatIfInstanceOut]
    not_recovered: int = Field(description="instances whose policy does not move them "
                                           "(notify, custom, off)")
    reason: str = Field(description="why it is not absorbed (empty when it is)")


class SingleFailuresOut(_Out):
    hosts: list[SingleFailureOut]
    all_absorbed: bool
