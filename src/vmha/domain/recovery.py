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

Everything the job needs to resume is its `HostRecoveryData`
(vmha.domain.jobs): fence levels and progress, the operator's ack or
request, the pause, and one `Move` per instance. Move states: pending
(target chosen), evacuating (start sent), verifying, done, replan (its start
failed and it was stopped there again: plan again, avoiding that host),
handed_over (its target failed while it was moving: the instance is
recorded on the target, whose own recovery job fences that host and moves
it; re-planning it here could run it twice), unplaceable (no host fits:
`instance.unplaceable` at the first plan, `instance.recovery_failed` when
a re-plan after a failed move finds none), skipped (policy does not
recover it).

The agent_watchdog level is proven by peer samples, not by the clock
alone: its ConfirmFenced runs every `confirm_retry_s`, each answer carries
a `Sample` (vmha.domain.isolation), and the deadline counts only once an
unbroken chain of samples shows the host cut off from the controller and
from a majority of its peers (the agent's own rule) for the whole
self-fence window; a sample that does not restarts the window (and, while
fencing actively, passes on to the next level as before).

Every intent carries the job's id and generation; a result whose generation
(or, for an instance, whose attempt) is not the current one is ignored.
Safety: Evacuate intents are only produced once the fence is confirmed
(`fence.confirmed_by` set, job past `fenced`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from vmha.domain.isolation import CutOffWindow, Sample, observe, proven
from vmha.domain.jobs import (
    FencePhase,
    FenceProgress,
    HostRecoveryData,
    Move,
    MoveState,
    PauseCause,
    levels_of,
)
from vmha.domain.model import (
    POWER_METHODS,
    Event,
    FenceMethod,
    Host,
    HostState,
    Instance,
    InstanceState,
    Job,
    JobKind,
    JobState,
    SubjectKind,
)
from vmha.domain.planner import SCHEDULER, Plan
from vmha.domain.transitions import transition_job

DEFAULT_LEVELS: tuple[tuple[str, ...], ...] = (("agent_watchdog",), ("manual",))
SCHEDULED = "the host the cloud's scheduler picks"  # a move's target, in words
# agent_watchdog: samples that only lack answers are taken again for up to
# this many self-fence deadlines after the host's last contact; then the
# level fails as any unproven one (retried on schedule)
INCONCLUSIVE_SAMPLING = 3


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
    `deadline` (agent_watchdog: one peer sample per intent, see
    vmha.domain.isolation) or an operator ack (manual). `passive`: a
    proof looked for while fencing is paused, after no power-off: one
    status read, never an action."""

    job: str
    generation: int
    host: str
    level: int
    methods: tuple[str, ...]
    deadline: float = 0.0  # agent_watchdog: last_seen + deadline_s
    last_seen: float = 0.0  # agent_watchdog: the window's start (its last possible contact)
    passive: bool = False
    deadline_s: float = 0.0  # agent_watchdog: the self-fence deadline after the last contact
    max_gap_s: float = 0.0  # agent_watchdog: samples further apart break the window
    # agent_watchdog: a sample short of proof only for want of answers (no
    # heartbeat, no peer reaching it) is taken again until then, not failed
    sample_until: float = 0.0


# How a job's reason for taking a host out of the cloud's scheduling starts
# (Nova's `disabled_reason`): the inventory knows vmha's own holds by it.
HOLD_REASON_PREFIX = "vmha job "


@dataclass(frozen=True)
class DisableCompute:
    job: str
    generation: int
    host: str

    @property
    def reason(self) -> str:
        return f"{HOLD_REASON_PREFIX}{self.job}: host failed and fenced"


@dataclass(frozen=True)
class PlanEvacuation:
    """Plan targets for `instances` (ids), avoiding `exclude` per instance."""

    job: str
    generation: int
    host: str
    instances: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    segment: str = ""  # the failed host's segment (the host record may be gone)


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


Intent = FenceHost | ConfirmFenced | DisableCompute | PlanEvacuation | Evacuate | VerifyInstance


def _names(methods: Sequence[FenceMethod]) -> tuple[str, ...]:
    return tuple(m.value for m in methods)


def step_name(intent: Intent) -> str:
    """The name under which an intent is recorded in `job.steps`."""
    if isinstance(intent, FenceHost):
        return f"fence:{intent.level}:{'+'.join(intent.methods)}:off"
    if isinstance(intent, ConfirmFenced) and intent.passive:
        return f"proof:{'+'.join(intent.methods)}"
    if isinstance(intent, ConfirmFenced):
        return f"fence:{intent.level}:{'+'.join(intent.methods)}:confirm"
    if isinstance(intent, DisableCompute):
        return "disable_compute"
    if isinstance(intent, PlanEvacuation):
        return "plan"
    if isinstance(intent, Evacuate):
        return f"evacuate:{intent.instance}@{intent.target}#{intent.attempt}"
    return f"verify:{intent.instance}@{intent.target}#{intent.attempt}"


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
    host: str = ""  # a move to the cloud's scheduler: where it landed
    sample: Sample | None = None  # agent_watchdog: what the peers said (retry_at: next one)


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

    blocked: str = ""  # why no fencing action may run (segment paused, controller isolated)
    moves_blocked: str = ""  # why even a proven-dead host's instances may not move (isolated)
    fence_allowed_at: float = 0.0  # fence rate limit of the segment
    host_returned: bool = False  # heartbeats healthy for the return period
    host_alive: bool = False  # heartbeating again right now: do not start fencing it
    host_exists: bool = True  # False: the host's record is gone (deleted, or an old job)
    proof_retry_s: float = 10.0  # while fencing is paused: look for proof of death this often
    max_parallel: int = 4
    fence_retry_s: float = 60.0
    self_fence_deadline_s: float = 20.0
    # agent_watchdog: two peer samples further apart than this leave a gap
    # in which the host may have had contact (confirm_retry_s + probe time)
    sample_gap_s: float = 4.0
    # instances whose host policy is `notify` (filled while the job is fenced):
    # left where they are, each published as `instance.host_failed`
    notify: frozenset[str] = frozenset()


def new_host_job(
    job_id: str, host: Host, instances: Sequence[Instance], protected: Mapping[str, bool],
    last_seen: float, now: float, reason: str,
    default_levels: tuple[tuple[str, ...], ...] = DEFAULT_LEVELS,
    requested_by: str | None = None, levels: Sequence[Sequence[str]] | None = None,
) -> Job:
    """A pending recovery job for failed `host` and its instances; with
    `requested_by`, an operator's fence through `levels` (power levels only)."""
    moves = {}
    for inst in instances:
        ok = protected.get(inst.id, True)
        moves[inst.id] = Move(MoveState.PENDING if ok else MoveState.SKIPPED,
                              reason="" if ok else "policy does not recover it")
    data = HostRecoveryData(
        host=host.name, segment=host.segment,
        levels=levels_of(levels or host.fence_levels or default_levels), last_seen=last_seen,
        requested_by=requested_by, instances=moves, cut_off=CutOffWindow.starting(last_seen))
    return Job(id=job_id, kind=JobKind.HOST_RECOVERY, subject=host.name, created_at=now,
               updated_at=now, reason=reason, data=data)


def host_data(job: Job) -> HostRecoveryData:
    """The job's record; only host-recovery jobs have one."""
    assert isinstance(job.data, HostRecoveryData), f"job {job.id} is a {job.kind.value} job"
    return job.data


def acknowledge(job: Job, who: str, now: float) -> Job:
    """An operator says the host is off (manual fence)."""
    data = host_data(job)
    fence = replace(data.fence, retry_at=now)
    return replace(job, data=replace(data, acked_by=who, fence=fence), updated_at=now)


def request_fence(job: Job, who: str, levels: Sequence[Sequence[str]], now: float) -> Job:
    """An operator asks to fence the job's host now through `levels`: the
    fence restarts at the first of them, even if the host still answers."""
    data = host_data(job)
    fence = replace(data.fence, level=0, phase=FencePhase.OFF, retry_at=now)
    new = replace(data, requested_by=who, levels=levels_of(levels), fence=fence)
    return replace(job, data=new, updated_at=now)


def fence_confirmed(job: Job) -> bool:
    """The job's host is confirmed fenced (BMC, self-fence deadline or ack)."""
    return isinstance(job.data, HostRecoveryData) and bool(job.data.fence.confirmed_by)


def fence_started(job: Job) -> bool:
    """Whether a power-off was requested (the host may be going down)."""
    return isinstance(job.data, HostRecoveryData) and job.data.fence.started


def moving(job: Job, instance: str) -> bool:
    """Whether the job still has `instance` to move (or is moving it)."""
    move = host_data(job).instances.get(instance)
    return move is not None and not move.done


def _move(job: Job, to: JobState, reason: str, now: float,
          data: HostRecoveryData | None = None) -> Decision:
    new, event = transition_job(replace(job, data=data or job.data), to, reason, now)
    return Decision(new, events=(event,))


def _with(job: Job, data: HostRecoveryData, now: float) -> Job:
    return replace(job, data=data, updated_at=now)


def decide(job: Job, ctx: JobContext, now: float) -> Decision:
    """What the job should do next. Call only when no intent is in flight."""
    if job.finished:
        return Decision(job)
    if not ctx.host_exists and not fence_confirmed(job):
        return _abandon(job, now)
    handler = {
        JobState.PENDING: _decide_pending,
        JobState.PAUSED: _decide_paused,
        JobState.FENCING: _decide_fencing,
        JobState.FENCED: _decide_fenced,
        JobState.EVACUATING: _decide_evacuating,
        JobState.VERIFYING: _decide_evacuating,
    }[job.state]
    return handler(job, host_data(job), ctx, now)


def _cancel(job: Job, now: float) -> Decision:
    reason = "host returned before it was fenced; nothing was moved"
    d = _move(job, JobState.FAILED, reason, now)
    return replace(d, host_state=HostState.UP, host_reason="heartbeats resumed before fencing")


def _abandon(job: Job, now: float) -> Decision:
    """The host's record is gone before its fence was confirmed: nothing can
    fence it (no BMC, no levels) and nothing may move, so the job ends. A
    job whose fence was confirmed carries on: its instances still need a home."""
    reason = (f"host {job.subject} no longer exists and was never fenced; "
              "nothing was moved")
    return _move(job, JobState.FAILED, reason, now)


def _pause(job: Job, data: HostRecoveryData, reason: str, now: float) -> Decision:
    paused = replace(data, paused_for=PauseCause.BLOCKED, resume_to=job.state)
    return _move(job, JobState.PAUSED, reason, now, paused)


def _decide_pending(job: Job, data: HostRecoveryData, ctx: JobContext, now: float) -> Decision:
    # an operator's fence goes ahead while the host still answers, and is
    # not held by the rate limit (a person asked, not a storm)
    requested = bool(data.requested_by)
    if ctx.host_returned and not requested:
        return _cancel(job, now)
    if ctx.blocked:
        return _pause(job, data, ctx.blocked, now)
    if ctx.host_alive and not data.acked_by and not requested:
        return Decision(job, wait_until=None)  # stale verdict: wait for return or failure
    if not data.acked_by and not requested and ctx.fence_allowed_at > now:
        return _rate_limited(job, data, ctx.fence_allowed_at, now)
    d = _move(job, JobState.FENCING, "fencing the failed host", now)
    return replace(d, host_state=HostState.FENCING, host_reason="fencing started")


def _rate_limited(job: Job, data: HostRecoveryData, until: float, now: float) -> Decision:
    """Wait for the segment's fence rate limit; say so once per wait."""
    if data.rate_limited_until == until:
        return Decision(job, wait_until=until)
    reason = (f"fence rate limit of segment {data.segment}: fencing "
              f"{job.subject} in {until - now:.1f} s")
    event = Event(type="job.step", subject=job.id, time=now, subject_kind=SubjectKind.JOB,
                  payload={"job": job.id, "kind": job.kind.value, "subject": job.subject,
                           "from": job.state.value, "to": job.state.value, "reason": reason})
    waiting = _with(job, replace(data, rate_limited_until=until), now)
    return Decision(waiting, events=(event,), wait_until=until)


def _decide_paused(job: Job, data: HostRecoveryData, ctx: JobContext, now: float) -> Decision:
    fence, requested = data.fence, bool(data.requested_by)
    if ctx.host_returned and not fence.confirmed_by and not requested:
        return _cancel(job, now)
    if ctx.host_alive and not data.acked_by and not fence.confirmed_by and not requested:
        return Decision(job, wait_until=None)  # alive again: no fencing while it talks to us
    if ctx.blocked and not ctx.moves_blocked and not fence.confirmed_by:
        if data.acked_by:
            return _fenced(job, data, f"operator {data.acked_by} acknowledged the fence", now)
        return _prove_dead(job, data, ctx, now)
    if data.paused_for is PauseCause.BLOCKED:
        if ctx.blocked and (ctx.moves_blocked or not fence.confirmed_by):
            return Decision(job, wait_until=None)
        to = data.resume_to or JobState.PENDING
        why = ("host proven dead: its instances move while fencing is paused" if ctx.blocked
               else "recovery resumed")
        return _move(job, to, why, now, replace(data, paused_for=None, resume_to=None))
    # paused because every fence level failed: retry on schedule or on ack
    if ctx.blocked:
        return Decision(job, wait_until=None)
    if now < fence.retry_at and not data.acked_by and not requested:
        return Decision(job, wait_until=fence.retry_at)
    retry = replace(data, fence=replace(fence, level=0, phase=FencePhase.OFF),
                    paused_for=None, resume_to=None)
    d = _move(job, JobState.FENCING, "retrying fencing", now, retry)
    return replace(d, host_state=HostState.FENCING, host_reason="retrying fencing")


def _prove_dead(job: Job, data: HostRecoveryData, ctx: JobContext, now: float) -> Decision:
    """Fencing is paused (mass failure, isolation), so no power-off may be
    sent; but a host already proven dead may still be recovered: ask every
    power method of its levels for one status read (OFF proves it), and,
    with an agent_watchdog level, whether its self-fence deadline passed
    while it was provably cut off. Again every `proof_retry_s`."""
    if now < data.fence.proof_at:
        return Decision(job, wait_until=data.fence.proof_at)
    intents: list[Intent] = []
    seen: set[FenceMethod] = set()
    for level, methods in enumerate(data.levels):
        for method in methods:
            if method in seen or method is FenceMethod.MANUAL:
                continue
            seen.add(method)
            intents.append(_confirm_intent(job, data, ctx, level, (method,), passive=True))
    if not intents:  # manual levels only: an operator's ack is the one proof
        return Decision(job, wait_until=None)
    fence = replace(data.fence, proof_at=now + ctx.proof_retry_s)
    return Decision(_with(job, replace(data, fence=fence), now), tuple(intents))


def _decide_fencing(job: Job, data: HostRecoveryData, ctx: JobContext, now: float) -> Decision:
    fence, levels = data.fence, data.levels
    if data.acked_by:
        return _fenced(job, data, f"operator {data.acked_by} acknowledged the fence", now)
    if ctx.blocked:
        return _pause(job, data, ctx.blocked, now)
    if fence.level >= len(levels):
        return _fence_failed(job, data, ctx, now)
    methods = levels[fence.level]
    if _is_power(methods) and fence.phase is FencePhase.OFF:
        return Decision(job, intents=(FenceHost(job.id, job.generation, job.subject,
                                                fence.level, _names(methods)),))
    return Decision(job, intents=(_confirm_intent(job, data, ctx, fence.level, methods),))


def _confirm_intent(job: Job, data: HostRecoveryData, ctx: JobContext, level: int,
                    methods: Sequence[FenceMethod], passive: bool = False) -> ConfirmFenced:
    window = data.cut_off
    return ConfirmFenced(job.id, job.generation, job.subject, level, _names(methods),
                         window.deadline(ctx.self_fence_deadline_s), window.since, passive,
                         ctx.self_fence_deadline_s, ctx.sample_gap_s,
                         data.last_seen + INCONCLUSIVE_SAMPLING * ctx.self_fence_deadline_s)


def _is_power(methods: Sequence[FenceMethod]) -> bool:
    return all(m in POWER_METHODS for m in methods)


def _fenced(job: Job, data: HostRecoveryData, reason: str, now: float) -> Decision:
    fenced = replace(data, fence=replace(data.fence, confirmed_by=reason), paused_for=None,
                     resume_to=None)
    d = _move(job, JobState.FENCED, reason, now, fenced)
    return replace(d, host_state=HostState.FENCED, host_reason=reason)


def _fence_failed(job: Job, data: HostRecoveryData, ctx: JobContext, now: float) -> Decision:
    if data.requested_by and ctx.host_alive:
        return _request_failed(job, data, now)
    # retried on schedule from now on, like any fence
    fence = replace(data.fence, level=0, phase=FencePhase.OFF, retry_at=now + ctx.fence_retry_s)
    paused = replace(data, requested_by=None, fence=fence, paused_for=PauseCause.FENCE_FAILED,
                     resume_to=JobState.FENCING)
    reason = (f"every fence level failed; nothing will be recovered; retrying in "
              f"{ctx.fence_retry_s:g} s or on operator fence-ack")
    d = _move(job, JobState.PAUSED, reason, now, paused)
    return replace(d, host_state=HostState.FAILED, host_reason=reason,
                   host_event="host.fence_failed")


def _request_failed(job: Job, data: HostRecoveryData, now: float) -> Decision:
    """An operator's fence failed on every level while the host still
    answers: it keeps running its instances, so nothing may move."""
    reason = (f"operator {data.requested_by}'s fence failed on every level and "
              f"{job.subject} still answers: left up, nothing was moved")
    d = _move(job, JobState.FAILED, reason, now)
    return replace(d, host_state=HostState.UP, host_reason=reason,
                   host_event="host.fence_failed")


def _decide_fenced(job: Job, data: HostRecoveryData, ctx: JobContext, now: float) -> Decision:
    if not data.disabled:
        return Decision(job, intents=(DisableCompute(job.id, job.generation, job.subject),))
    if ctx.moves_blocked:  # a fenced host is proven dead: only isolation holds it
        return _pause(job, data, ctx.moves_blocked, now)
    if not data.planned:
        todo = tuple(sorted(i for i, m in data.instances.items()
                            if m.state is MoveState.PENDING))
        return Decision(job, intents=(PlanEvacuation(job.id, job.generation, job.subject,
                                                     todo, segment=data.segment),))
    d = _move(job, JobState.EVACUATING, "moving instances", now)
    stopped = tuple(_left_behind(job, data, iid, iid in ctx.notify)
                    for iid, m in sorted(data.instances.items()) if m.state is MoveState.SKIPPED)
    return replace(d, host_state=HostState.RECOVERING, host_reason="moving its instances",
                   instances=stopped)


def _left_behind(job: Job, data: HostRecoveryData, iid: str, notify: bool) -> InstanceUpdate:
    """An instance whose policy does not recover it went down with the host;
    one whose host policy is `notify` is published (its owner acts: the
    host is fenced, so moving it now is safe)."""
    if notify:
        return InstanceUpdate(iid, "instance.host_failed",
                              f"host {job.subject} failed and was fenced "
                              f"({data.fence.confirmed_by}); host policy notify: not moved",
                              InstanceState.STOPPED, only_if_hosts=(job.subject,))
    return InstanceUpdate(iid, "", f"its host {job.subject} was fenced; policy does not "
                                   "recover it", InstanceState.STOPPED,
                          only_if_hosts=(job.subject,))


def _decide_evacuating(job: Job, data: HostRecoveryData, ctx: JobContext,
                       now: float) -> Decision:
    moves = data.instances
    replan = tuple(sorted(i for i, m in moves.items() if m.state is MoveState.REPLAN))
    if replan and not ctx.moves_blocked:
        excluded = tuple(sorted({h for i in replan for h in moves[i].excluded}))
        return Decision(job, intents=(PlanEvacuation(job.id, job.generation, job.subject,
                                                     replan, excluded, data.segment),))
    intents: list[Intent] = []
    for iid in sorted(moves):
        m = moves[iid]
        if m.state is MoveState.VERIFYING:
            intents.append(VerifyInstance(job.id, job.generation, iid, str(m.target),
                                          m.stopped, m.attempt))
        elif m.state is MoveState.EVACUATING:  # interrupted by a restart
            intents.append(_evacuate(job, iid, m, resume=True))
    updates: list[InstanceUpdate] = []
    slots = ctx.max_parallel - len(intents)
    for iid in _by_order(moves):
        if ctx.moves_blocked or slots <= 0:
            break
        m = replace(moves[iid], state=MoveState.EVACUATING, attempt=moves[iid].attempt + 1)
        data = data.with_move(iid, m)
        intents.append(_evacuate(job, iid, m, resume=False))
        by_cloud = m.target == SCHEDULER  # recorded where it is until it landed
        updates.append(InstanceUpdate(iid, "instance.evacuating",
                                      f"moving from {job.subject} to "
                                      f"{SCHEDULED if by_cloud else m.target}",
                                      InstanceState.RECOVERING, None if by_cloud else m.target,
                                      only_if_hosts=(job.subject, *m.excluded)))
        slots -= 1
    if intents:
        return Decision(replace(job, data=data), tuple(intents), instances=tuple(updates))
    return _finish_or_wait(job, data, now)


def _by_order(moves: Mapping[str, Move]) -> list[str]:
    """Pending instances in plan order (the planner's priority order)."""
    pending = [i for i, m in moves.items() if m.state is MoveState.PENDING and m.target]
    return sorted(pending, key=lambda i: (moves[i].order, i))


def _evacuate(job: Job, iid: str, m: Move, resume: bool) -> Evacuate:
    return Evacuate(job.id, job.generation, iid, job.subject, str(m.target), m.stopped,
                    m.attempt, resume)


def _finish_or_wait(job: Job, data: HostRecoveryData, now: float) -> Decision:
    if any(not m.done for m in data.instances.values()):
        return Decision(job, wait_until=None)  # blocked: wait for a poke
    counts: dict[str, int] = {}
    for m in data.instances.values():
        counts[m.state.value] = counts.get(m.state.value, 0) + 1
    summary = ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in sorted(counts.items()))
    summary = summary or "no instances"
    d = _move(job, JobState.DONE, f"recovery finished: {summary}", now)
    return replace(d, host_state=HostState.RECOVERED, host_reason=f"recovered: {summary}")


# -- results ------------------------------------------------------------------


def apply(job: Job, result: Result, now: float) -> Decision:
    """Fold one intent's outcome into the job; stale results are ignored."""
    intent = result.intent
    if intent.generation != job.generation:
        return Decision(job)
    data = host_data(job)
    if isinstance(intent, FenceHost):
        return _apply_fence_off(job, data, result, now)
    if isinstance(intent, ConfirmFenced):
        return _apply_confirm(job, data, intent, result, now)
    if isinstance(intent, DisableCompute):  # a failure to disable does not block recovery
        return Decision(_with(job, replace(data, disabled=True), now))
    if isinstance(intent, PlanEvacuation):
        return _apply_plan(job, data, result, now)
    return _apply_instance(job, data, intent, result, now)


def _next_level(fence: FenceProgress) -> FenceProgress:
    return replace(fence, level=fence.level + 1, phase=FencePhase.OFF)


def _apply_fence_off(job: Job, data: HostRecoveryData, r: Result, now: float) -> Decision:
    fence = (replace(data.fence, phase=FencePhase.CONFIRM, started=True) if r.ok
             else _next_level(data.fence))
    return Decision(_with(job, replace(data, fence=fence), now))


def _apply_confirm(job: Job, data: HostRecoveryData, intent: ConfirmFenced, r: Result,
                   now: float) -> Decision:
    if r.sample is not None:
        return _apply_sample(job, data, intent, r, r.sample, now)
    if r.ok:
        return _fenced(job, data, r.detail, now)
    return _not_confirmed(job, data, intent, r, now)


def _apply_sample(job: Job, data: HostRecoveryData, intent: ConfirmFenced, r: Result,
                  sample: Sample, now: float) -> Decision:
    """One peer sample of an agent_watchdog proof (vmha.domain.isolation):
    fenced once the chain of cut-off samples reaches the deadline; a sample
    short of "cut off" restarts the window, and while fencing actively the
    level then fails as any unproven level does (the next level, then the
    retry on schedule, sample a fresh window)."""
    window = observe(data.cut_off, sample, intent.max_gap_s)
    data = replace(data, cut_off=window)
    if proven(window, intent.deadline_s):
        return _fenced(job, data, (
            f"agent self-fence deadline passed: cut off for {sample.at - window.since:.1f} s "
            f"({window.samples} peer samples in a row)"), now)
    if intent.passive or sample.cut_off:
        return _not_confirmed(job, data, intent, r, now, saved=True)
    if r.retry_at is not None and sample.at < intent.sample_until:
        # too few peers answered to tell, and none reached it: no sign of
        # contact, so the (restarted) window is sampled on rather than the
        # level failed (a peer that failed meanwhile is no evidence of life)
        return _not_confirmed(job, data, intent, r, now, saved=True)
    return Decision(_with(job, replace(data, fence=_next_level(data.fence)), now))


def _not_confirmed(job: Job, data: HostRecoveryData, intent: ConfirmFenced, r: Result,
                   now: float, saved: bool = False) -> Decision:
    """No proof yet: ask again when the result says (or at the next proof
    time while paused), else the level failed. `saved`: `data` differs from
    the job's and must be kept."""
    if saved:
        job = _with(job, data, now)
    if intent.passive:  # no proof yet: look again at the next proof time
        proof_at = data.fence.proof_at or now
        if r.retry_at is not None and r.retry_at < proof_at:
            fence = replace(data.fence, proof_at=r.retry_at)
            return Decision(_with(job, replace(data, fence=fence), now), wait_until=r.retry_at)
        return Decision(job, wait_until=proof_at)
    if r.retry_at is not None:
        return Decision(job, wait_until=r.retry_at)
    return Decision(_with(job, replace(data, fence=_next_level(data.fence)), now))


def _apply_plan(job: Job, data: HostRecoveryData, r: Result, now: float) -> Decision:
    plan = r.plan or Plan()
    updates: list[InstanceUpdate] = []
    for order, p in enumerate(plan.placements):
        m = replace(data.instances[p.instance], state=MoveState.PENDING, target=p.host,
                    stopped=p.stopped, order=order)
        data = data.with_move(p.instance, m)
    for u in plan.unplaced:
        before = data.instances[u.instance]
        data = data.with_move(u.instance, replace(before, state=MoveState.UNPLACEABLE,
                                                  reason=u.reason))
        updates.append(_unplaced(job, before, u.instance, u.reason))
    return Decision(_with(job, replace(data, planned=True), now), instances=tuple(updates))


def _unplaced(job: Job, before: Move, iid: str, reason: str) -> InstanceUpdate:
    """No host for it: `instance.unplaceable` at the first plan; after a
    move failed (a re-plan), `instance.recovery_failed`, and it is recorded
    back on the failed host (where its record was moved to the failed
    target, and where the cloud still has it)."""
    if not before.excluded:
        return InstanceUpdate(iid, "instance.unplaceable", reason, InstanceState.ERROR,
                              only_if_hosts=(job.subject,))
    tried = len(before.excluded)
    what = (f"{tried} moves failed (the last: {before.reason})" if tried > 1
            else f"its move failed ({before.reason})")
    return InstanceUpdate(iid, "instance.recovery_failed", f"{what}; {reason}",
                          InstanceState.ERROR, job.subject,
                          only_if_hosts=(job.subject, *before.excluded))


def _apply_instance(job: Job, data: HostRecoveryData, intent: Evacuate | VerifyInstance,
                    r: Result, now: float) -> Decision:
    m = data.instances.get(intent.instance)
    if m is None or m.attempt != intent.attempt:
        return Decision(job)  # an older attempt
    updates: list[InstanceUpdate] = []
    if r.ok and isinstance(intent, Evacuate):
        m = replace(m, state=MoveState.VERIFYING)
    elif r.ok:
        m = replace(m, state=MoveState.DONE)
        state = InstanceState.STOPPED if intent.stopped else InstanceState.RUNNING
        by_cloud = intent.target == SCHEDULER
        where = r.host if by_cloud else intent.target
        updates.append(InstanceUpdate(intent.instance, "instance.evacuated",
                                      f"now {state.value} on {where or SCHEDULED}", state,
                                      where or None, only_if_hosts=(
                                          job.subject if by_cloud else intent.target,)))
    elif r.handed_over:
        m = replace(m, state=MoveState.HANDED_OVER, reason=r.detail)
    else:
        m = replace(m, state=MoveState.REPLAN, excluded=tuple(sorted({*m.excluded,
                                                                       intent.target})),
                    reason=r.detail)
    return Decision(_with(job, data.with_move(intent.instance, m), now),
                    instances=tuple(updates))
