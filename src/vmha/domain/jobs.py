"""Typed durable progress of every job kind: what `Job.data` holds.

One frozen dataclass per kind: the host-recovery record (fence progress
and one `Move` per instance), the action, the custom decision, and the
guest/app instance recovery. The store keeps them as JSON: `to_storage()`
gives plain JSON (the keys the API shows as a job's `data`), and
`data_from_storage(kind, raw, subject)` reads a stored mapping back,
taking the default for a key a row lacks (migration 0008 completed the rows
older vmha versions wrote).
Changes go through `dataclasses.replace`; nobody mutates a record.

Adding a job kind: a JobKind member in vmha.domain.model, a dataclass here
with `from_storage`/`to_storage`, and its entry in `DATA_TYPES`.

Used by the domain's job logic (recovery, decisions), the store codec and
the API's job schema. Pure, standard library only.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

from vmha.domain.isolation import CutOffWindow
from vmha.domain.model import FenceMethod, JobKind, JobState

Levels = tuple[tuple[FenceMethod, ...], ...]


class FencePhase(str, enum.Enum):
    """Where the current fence level stands."""

    OFF = "off"  # its power-off is still to be sent (power methods)
    CONFIRM = "confirm"  # sent (or nothing to send): prove the host is off


class MoveState(str, enum.Enum):
    """One instance of a host-recovery job."""

    PENDING = "pending"  # target chosen (or still to plan)
    EVACUATING = "evacuating"  # start sent
    VERIFYING = "verifying"  # started: waiting to see it run
    DONE = "done"
    FAILED = "failed"
    REPLAN = "replan"  # its start failed and it was stopped there: plan again
    HANDED_OVER = "handed_over"  # its target failed meanwhile: that host's job owns it
    UNPLACEABLE = "unplaceable"
    SKIPPED = "skipped"  # its policy does not recover it (or a custom decision will)


MOVE_DONE = frozenset({MoveState.DONE, MoveState.FAILED, MoveState.UNPLACEABLE,
                       MoveState.SKIPPED, MoveState.HANDED_OVER})


class PauseCause(str, enum.Enum):
    BLOCKED = "blocked"  # the segment is paused or the controller isolated
    FENCE_FAILED = "fence_failed"  # every fence level failed: retried on schedule


def _levels(raw: Any) -> Levels:
    return tuple(tuple(FenceMethod(m) for m in level) for level in raw or ())


def _opt_str(raw: Any) -> str | None:
    return None if raw is None else str(raw)


def _opt_float(raw: Any) -> float | None:
    return None if raw is None else float(raw)


def _enum_or_none(kind: type[enum.Enum], raw: Any) -> Any:
    return None if raw in (None, "") else kind(raw)


@dataclass(frozen=True)
class FenceProgress:
    level: int = 0  # index into the job's levels
    phase: FencePhase = FencePhase.OFF
    started: bool = False  # a power-off was accepted: the host may be going down
    confirmed_by: str | None = None  # the proof, once the host is fenced
    retry_at: float = 0.0  # every level failed: try again then
    proof_at: float = 0.0  # fencing paused: look for proof of death again then

    @classmethod
    def from_storage(cls, raw: Mapping[str, Any]) -> FenceProgress:
        return cls(level=int(raw.get("level", 0)), phase=FencePhase(raw.get("phase", "off")),
                   started=bool(raw.get("started", False)),
                   confirmed_by=_opt_str(raw.get("confirmed_by")),
                   retry_at=float(raw.get("retry_at", 0.0)),
                   proof_at=float(raw.get("proof_at", 0.0)))

    def to_storage(self) -> dict[str, Any]:
        return {"level": self.level, "phase": self.phase.value, "started": self.started,
                "confirmed_by": self.confirmed_by, "retry_at": self.retry_at,
                "proof_at": self.proof_at}


@dataclass(frozen=True)
class Move:
    """One instance of a host-recovery job: where it goes, which attempt."""

    state: MoveState = MoveState.PENDING
    target: str | None = None
    attempt: int = 0  # results of an older attempt are ignored
    stopped: bool = False  # evacuate to stopped (policy)
    reason: str = ""
    excluded: tuple[str, ...] = ()  # hosts a start failed on: not again
    order: int = 0  # the planner's priority order
    custom: bool = False  # a custom host policy: its owner decides after the fence

    @property
    def done(self) -> bool:
        return self.state in MOVE_DONE

    @classmethod
    def from_storage(cls, raw: Mapping[str, Any]) -> Move:
        return cls(state=MoveState(raw.get("state", "pending")), target=_opt_str(raw.get("target")),
                   attempt=int(raw.get("attempt", 0)), stopped=bool(raw.get("stopped", False)),
                   reason=str(raw.get("reason", "")),
                   excluded=tuple(str(h) for h in raw.get("excluded", ())),
                   order=int(raw.get("order", 0)), custom=bool(raw.get("custom", False)))

    def to_storage(self) -> dict[str, Any]:
        return {"state": self.state.value, "target": self.target, "attempt": self.attempt,
                "stopped": self.stopped, "reason": self.reason, "excluded": list(self.excluded),
                "order": self.order, "custom": self.custom}


@dataclass(frozen=True)
class HostRecoveryData:
    """Fence a failed host, then move its instances (vmha.domain.recovery)."""

    kind: ClassVar[JobKind] = JobKind.HOST_RECOVERY
    host: str
    segment: str = ""
    levels: Levels = ()
    last_seen: float = 0.0  # last heartbeat (or peer contact) when the host failed
    # agent_watchdog: the peer samples showing it cut off since its last
    # possible contact; the self-fence deadline counts from `cut_off.since`
    # (a row of an older vmha has none: its first sample starts the window)
    cut_off: CutOffWindow = field(default_factory=CutOffWindow)
    fence: FenceProgress = field(default_factory=FenceProgress)
    disabled: bool = False  # the compute service was disabled
    planned: bool = False
    acked_by: str | None = None  # an operator acknowledged the fence
    paused_for: PauseCause | None = None
    resume_to: JobState | None = None
    requested_by: str | None = None  # an operator asked for this fence
    rate_limited_until: float | None = None
    instances: Mapping[str, Move] = field(default_factory=dict)

    @classmethod
    def from_storage(cls, raw: Mapping[str, Any], subject: str) -> HostRecoveryData:
        return cls(
            host=str(raw.get("host", subject)), segment=str(raw.get("segment", "")),
            levels=_levels(raw.get("levels")), last_seen=float(raw.get("last_seen", 0.0)),
            cut_off=CutOffWindow.from_storage(raw.get("cut_off")),
            fence=FenceProgress.from_storage(raw.get("fence") or {}),
            disabled=bool(raw.get("disabled", False)), planned=bool(raw.get("planned", False)),
            acked_by=_opt_str(raw.get("acked_by")),
            paused_for=_enum_or_none(PauseCause, raw.get("paused_for")),
            resume_to=_enum_or_none(JobState, raw.get("resume_to")),
            requested_by=_opt_str(raw.get("requested_by")),
            rate_limited_until=_opt_float(raw.get("rate_limited_until")),
            instances={str(iid): Move.from_storage(m)
                       for iid, m in (raw.get("instances") or {}).items()},
        )

    def to_storage(self) -> dict[str, Any]:
        return {
            "host": self.host, "segment": self.segment,
            "levels": [[m.value for m in level] for level in self.levels],
            "last_seen": self.last_seen, "cut_off": self.cut_off.to_storage(),
            "fence": self.fence.to_storage(),
            "disabled": self.disabled, "planned": self.planned, "acked_by": self.acked_by,
            "paused_for": None if self.paused_for is None else self.paused_for.value,
            "resume_to": None if self.resume_to is None else self.resume_to.value,
            "requested_by": self.requested_by, "rate_limited_until": self.rate_limited_until,
            "instances": {iid: m.to_storage() for iid, m in sorted(self.instances.items())},
        }

    def with_move(self, instance: str, move: Move) -> HostRecoveryData:
        return replace(self, instances={**self.instances, instance: move})


@dataclass(frozen=True)
class ActionData:
    """An operator's or user's instance action (vmha.domain.decisions)."""

    kind: ClassVar[JobKind] = JobKind.ACTION
    instance: str
    action: str = "ignore"
    target: str | None = None  # evacuate: the host asked for
    by: str = ""
    decision: str | None = None  # the decision job that led to it
    source: str | None = None  # the instance's host when it was asked
    project: str = ""
    # evacuate: the target of the move under way, recorded before its start
    # (a resumed job looks there first instead of starting it elsewhere)
    moving_to: str | None = None

    @classmethod
    def from_storage(cls, raw: Mapping[str, Any], subject: str) -> ActionData:
        return cls(instance=str(raw.get("instance", subject)),
                   action=str(raw.get("action", "ignore")), target=_opt_str(raw.get("target")),
                   by=str(raw.get("by") or ""), decision=_opt_str(raw.get("decision")),
                   source=_opt_str(raw.get("source")), project=str(raw.get("project") or ""),
                   moving_to=_opt_str(raw.get("moving_to")))

    def to_storage(self) -> dict[str, Any]:
        out = {"instance": self.instance, "action": self.action, "target": self.target,
               "by": self.by, "decision": self.decision, "source": self.source,
               "project": self.project}
        if self.moving_to is not None:  # only once a move started: older rows stay equal
            out["moving_to"] = self.moving_to
        return out


@dataclass(frozen=True)
class DecisionData:
    """A custom-policy question waiting for its owner's answer. Holds the
    SHA-256 of the token's secret, never the secret."""

    kind: ClassVar[JobKind] = JobKind.DECISION
    instance: str
    name: str = ""
    project: str = ""
    host: str | None = None
    layer: str = "guest"  # host | guest | app
    cause: str = ""
    allowed: tuple[str, ...] = ()
    deadline: float = 0.0
    fallback: str = "auto"  # the policy's custom_fallback: auto | none
    token_sha256: str = ""
    host_job: str | None = None  # the host-recovery job that fenced its host
    outcome: str | None = None  # answered | timed_out
    action: str | None = None
    by: str | None = None
    action_job: str | None = None
    answered_at: float | None = None

    @classmethod
    def from_storage(cls, raw: Mapping[str, Any], subject: str) -> DecisionData:
        return cls(
            instance=str(raw.get("instance", subject)), name=str(raw.get("name") or ""),
            project=str(raw.get("project") or ""), host=_opt_str(raw.get("host")),
            layer=str(raw.get("layer", "guest")), cause=str(raw.get("cause") or ""),
            allowed=tuple(str(a) for a in raw.get("allowed", ())),
            deadline=float(raw.get("deadline", 0.0)), fallback=str(raw.get("fallback", "auto")),
            token_sha256=str(raw.get("token_sha256") or ""),
            host_job=_opt_str(raw.get("host_job")), outcome=_opt_str(raw.get("outcome")),
            action=_opt_str(raw.get("action")), by=_opt_str(raw.get("by")),
            action_job=_opt_str(raw.get("action_job")),
            answered_at=_opt_float(raw.get("answered_at")),
        )

    def to_storage(self) -> dict[str, Any]:
        return {
            "instance": self.instance, "name": self.name, "project": self.project,
            "host": self.host, "layer": self.layer, "cause": self.cause,
            "allowed": list(self.allowed), "deadline": self.deadline, "fallback": self.fallback,
            "token_sha256": self.token_sha256, "host_job": self.host_job,
            "outcome": self.outcome, "action": self.action, "by": self.by,
            "action_job": self.action_job, "answered_at": self.answered_at,
        }


@dataclass(frozen=True)
class InstanceRecoveryData:
    """A guest or application recovery of one instance: its escalation
    (vmha.domain.escalation). `steps` run in order, `step` is the current
    one; the first waits until `due_at` (the restart backoff), each later
    one runs once the application still fails at `grace_until`. The
    instance's restart budget counts the steps started (job steps), so a
    restarted controller neither forgets a spent budget nor a backoff."""

    kind: ClassVar[JobKind] = JobKind.INSTANCE_RECOVERY
    instance: str
    layer: str = "guest"  # guest | app
    action: str = "restart"  # the current step (exec:<command>, reboot, reset, restart)
    reason: str = ""  # what failed
    steps: tuple[str, ...] = ()  # the escalation (empty in old rows: `action` alone)
    step: int = 0
    host: str | None = None  # where the instance ran when it failed
    project: str = ""
    due_at: float = 0.0  # the first step not before (backoff)
    grace_until: float = 0.0  # the app may still fail until then after a step
    recovered: bool = False  # the app answered again while a step ran
    notify: bool = False  # auto+notify: an instance event for every step

    @property
    def escalation(self) -> tuple[str, ...]:
        """The steps (a row older vmha versions wrote has only its action)."""
        return self.steps or (self.action,)

    @classmethod
    def from_storage(cls, raw: Mapping[str, Any], subject: str) -> InstanceRecoveryData:
        action = str(raw.get("action", "restart"))
        return cls(instance=str(raw.get("instance", subject)),
                   layer=str(raw.get("layer", "guest")), action=action,
                   reason=str(raw.get("reason") or ""),
                   steps=tuple(str(s) for s in raw.get("steps") or ()),
                   step=int(raw.get("step", 0)), host=_opt_str(raw.get("host")),
                   project=str(raw.get("project") or ""),
                   due_at=float(raw.get("due_at", 0.0)),
                   grace_until=float(raw.get("grace_until", 0.0)),
                   recovered=bool(raw.get("recovered", False)),
                   notify=bool(raw.get("notify", False)))

    def to_storage(self) -> dict[str, Any]:
        return {"instance": self.instance, "layer": self.layer, "action": self.action,
                "reason": self.reason, "steps": list(self.steps), "step": self.step,
                "host": self.host, "project": self.project, "due_at": self.due_at,
                "grace_until": self.grace_until, "recovered": self.recovered,
                "notify": self.notify}


JobData = HostRecoveryData | ActionData | DecisionData | InstanceRecoveryData


class _Stored(Protocol):
    @classmethod
    def from_storage(cls, raw: Mapping[str, Any], subject: str) -> JobData: ...


DATA_TYPES: Mapping[JobKind, type[_Stored]] = {
    JobKind.HOST_RECOVERY: HostRecoveryData,
    JobKind.ACTION: ActionData,
    JobKind.DECISION: DecisionData,
    JobKind.INSTANCE_RECOVERY: InstanceRecoveryData,
}


def data_from_storage(kind: JobKind, raw: Mapping[str, Any] | None, subject: str) -> JobData:
    """The typed record of a `kind` job from its stored mapping ({} or None:
    the kind's blank record for `subject`)."""
    return DATA_TYPES[kind].from_storage(raw or {}, subject)


# The kinds about one instance: their record keeps the instance's project
# from the job's creation on (a later instance of the same id in another
# project does not inherit them). A host recovery belongs to no project.
INSTANCE_JOB_KINDS = frozenset({JobKind.INSTANCE_RECOVERY, JobKind.ACTION, JobKind.DECISION})


def project_of(kind: JobKind, data: JobData) -> str | None:
    """The project a job is about (what a `project:` token may read), or
    None: a host recovery, or an instance job of no project."""
    if kind not in INSTANCE_JOB_KINDS or isinstance(data, HostRecoveryData):
        return None
    return data.project or None


def levels_of(raw: Sequence[Sequence[str]]) -> Levels:
    """Fence levels given as names (configuration, API, host records)."""
    return _levels(raw)
