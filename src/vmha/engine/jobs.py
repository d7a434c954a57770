"""The recovery job executor: turns the job's intents into port calls.

Run by the Controller, one asyncio task per unfinished host-recovery job.
Each round: `recovery.decide` says what to do; every intent is recorded as
a started step and saved *before* it runs, performed through the ports,
then recorded as finished and folded back with `recovery.apply` and saved
again. A new controller loading the job re-issues only what was not
finished; `Evacuate` first checks whether the instance already runs on its
target. The decisions are the domain's; this module only does I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

from vmha.domain import decisions, planner, recovery
from vmha.domain.errors import Conflict, InvalidTransition, VmhaError
from vmha.domain.guard import FenceBudget
from vmha.domain.health import Verdict, confirm
from vmha.domain.model import (
    Event,
    Host,
    HostState,
    InstanceState,
    Job,
    JobKind,
    JobState,
    RecoveryMethod,
    Severity,
    SubjectKind,
    finish_step,
    start_step,
)
from vmha.domain.policy import LayerMode
from vmha.domain.recovery import Decision, Intent, Result
from vmha.domain.restart import make_event
from vmha.engine.detection import HostMonitor
from vmha.engine.settings import ControllerSettings
from vmha.engine.state import Cluster, list_all
from vmha.engine.tasks import cancel_all
from vmha.ports import Clock, Cloud, Fencer, IdGen, PowerState

log = logging.getLogger("vmha.engine.jobs")
MAX_STEPS = 200
T = TypeVar("T")
Levels = tuple[tuple[str, ...], ...]


class JobRunner:
    """Starts, resumes and drives host-recovery jobs."""

    def __init__(
        self, settings: ControllerSettings, cluster: Cluster, clock: Clock, ids: IdGen,
        fencers: Mapping[str, Fencer], cloud: Cloud, monitor: HostMonitor,
    ) -> None:
        self.settings = settings
        self.cluster = cluster
        self.clock = clock
        self.ids = ids
        self.fencers = fencers
        self.cloud = cloud
        self.monitor = monitor
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.pokes: dict[str, asyncio.Event] = {}
        self.budgets: dict[str, FenceBudget] = {}
        self.acks: dict[str, str] = {}  # host -> operator, not yet folded into its job
        # host -> (operator, levels): an operator's fence, not yet folded into its job
        self.requests: dict[str, tuple[str, Levels]] = {}
        self.fence_queue: dict[str, list[tuple[float, str]]] = {}  # segment -> waiting jobs
        # Called once a job's fence is confirmed with its custom-policy
        # instances (the Controller offers them decisions).
        self.on_fenced: Callable[[Job, tuple[str, ...]], None] | None = None

    # -- starting -------------------------------------------------------------

    def unfinished(self) -> list[Job]:
        jobs = list_all(self.cluster.store.list_jobs, {"kind": JobKind.HOST_RECOVERY.value})
        return [j for j in jobs if not j.finished]

    def job_for(self, host: str) -> Job | None:
        for job in self.unfinished():
            if job.subject == host:
                return job
        return None

    def resume_all(self) -> None:
        for job in self.unfinished():
            self.start(job.id)

    def start(self, job_id: str) -> None:
        if job_id in self.tasks and not self.tasks[job_id].done():
            return
        self.pokes[job_id] = asyncio.Event()
        self.tasks[job_id] = asyncio.ensure_future(self._run(job_id))

    def poke(self) -> None:
        for event in self.pokes.values():
            event.set()

    async def host_failed(self, host: Host, now: float, requested_by: str | None = None,
                          levels: Levels | None = None) -> Job:
        """`host` was confirmed failed, or an operator (`requested_by`) asked
        to fence it through `levels`: start its recovery job (once)."""
        existing = self.job_for(host.name)
        if existing is not None:
            self.start(existing.id)
            self.poke()
            return existing
        instances = self.cluster.instances(host.name)
        protected = {i.id: self.cluster.policy_of(i, host).protected for i in instances}
        job = recovery.new_host_job(
            self.ids.new_id(), host, instances, protected, self.monitor.last_seen(host.name),
            now, host.state_reason, self.settings.default_fence_levels,
            requested_by=requested_by, levels=levels)
        job = decisions.mark_custom(job, frozenset(
            i.id for i in instances if self.cluster.policy_of(i, host).host is LayerMode.CUSTOM))
        reason = f"recovering {len(instances)} instances of failed host {host.name}"
        event = Event(type="job.started", subject=job.id, time=now, subject_kind=SubjectKind.JOB,
                      payload={"job": job.id, "kind": job.kind.value, "subject": host.name,
                               "host": host.name, "segment": host.segment, "reason": reason})
        self.cluster.store.create_job(job, [event])
        self.cluster.note_sent([event])
        self.start(job.id)
        return job

    async def stop(self) -> None:
        await cancel_all(self.tasks)

    # -- the loop -------------------------------------------------------------

    async def _run(self, job_id: str) -> None:
        job = self.cluster.store.get_job(job_id)
        while not job.finished:
            try:
                job = await self._round(job)
            except Conflict as exc:
                log.warning("job %s: another controller owns it (%s); leaving it", job_id, exc)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job %s: round failed; retrying", job_id)
                await self.clock.sleep(self.settings.job_poll_s)
                job = self.cluster.store.get_job(job_id)
        await self.cluster.flush()

    async def _round(self, job: Job) -> Job:
        self.pokes[job.id].clear()
        now = self.clock.now()
        if job.subject in self.acks:
            job = recovery.acknowledge(job, self.acks.pop(job.subject), now)
        if job.subject in self.requests:
            who, levels = self.requests.pop(job.subject)
            job = recovery.request_fence(job, who, levels, now)
        decision = recovery.decide(job, self._context(job, now), now)
        seg = job.data["segment"]
        if decision.host_state is HostState.FENCING:
            self.budgets[seg] = self.budgets.get(seg, FenceBudget()).record(now)
        self._track_queue(seg, job, decision)
        changed = decision.job is not job or bool(decision.events)
        job = self._commit(job, decision, now)
        if decision.intents:
            job, wait_until = await self._perform_all(job, decision.intents)
            if wait_until is not None:
                await self._wait(job.id, wait_until)
        elif not changed and not job.finished:
            await self._wait(job.id, decision.wait_until)
        await self.cluster.flush()
        return job

    def _track_queue(self, seg: str, job: Job, decision: Decision) -> None:
        """Jobs waiting for their segment's fence rate limit, oldest first."""
        queue = self.fence_queue.setdefault(seg, [])
        key = (job.created_at, job.id)
        waiting = decision.job.state is JobState.PENDING and decision.wait_until is not None
        if waiting and key not in queue:
            queue.append(key)
            queue.sort()
        elif not waiting and key in queue:
            queue.remove(key)
            self.poke()  # the next one in line may go when the limit allows

    def _context(self, job: Job, now: float) -> recovery.JobContext:
        seg = job.data["segment"]
        budget = self.budgets.get(seg, FenceBudget())
        s = self.settings
        allowed = budget.next_allowed(now, s.fence_rate_burst, s.fence_rate_interval_s)
        queue = self.fence_queue.get(seg, [])
        ahead = sum(1 for key in queue if key < (job.created_at, job.id))
        if ahead:  # older jobs of the segment fence first, one interval apart
            allowed = max(allowed, now) + ahead * s.fence_rate_interval_s
        return recovery.JobContext(
            blocked=self.monitor.blocked(seg),
            fence_allowed_at=allowed,
            host_returned=self.monitor.returned(job.subject, now)
            and self.monitor.heard_since(job.subject, job.created_at),
            host_alive=self.monitor.heard_since(job.subject, job.created_at)
            and not self.monitor.blocked_host(job.subject),
            max_parallel=s.max_parallel_evacuations,
            fence_retry_s=s.fence_retry_s,
            self_fence_deadline_s=s.self_fence_deadline_s,
        )

    async def _wait(self, job_id: str, until: float | None) -> None:
        now = self.clock.now()
        delay = self.settings.job_poll_s if until is None else max(0.0, until - now)
        if delay <= 0:
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(delay))
        waiter = asyncio.ensure_future(self.pokes[job_id].wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waiter.cancel()

    # -- persistence ------------------------------------------------------------

    def _commit(self, before: Job, d: Decision, now: float) -> Job:
        job = before
        if d.job is not before or d.events:
            job = self.cluster.store.save_job(d.job, before.generation, d.events)
            self.cluster.note_sent(d.events)
        if d.host_state is not None:
            self._move_host(job.subject, d.host_state, d.host_reason, now, d.host_event, job.id)
        for update in d.instances:
            self._update_instance(update, job, now)
        asked = decisions.offered_after_fence(before, job)
        if asked and self.on_fenced is not None:
            self.on_fenced(job, asked)
        return job

    def _move_host(self, name: str, to: HostState, reason: str, now: float,
                   event_type: str | None, job_id: str) -> None:
        try:
            host = self.cluster.hosts.get(name)
            if to is HostState.UP and host is not None and host.state is HostState.FENCING:
                self.cluster.move_host(name, HostState.FAILED, reason, now, job=job_id)
            self.cluster.move_host(name, to, reason, now, event_type=event_type, job=job_id)
        except InvalidTransition as exc:
            log.warning("host %s not moved to %s: %s", name, to.value, exc)

    def _update_instance(self, u: recovery.InstanceUpdate, job: Job, now: float) -> None:
        inst = self.cluster.get_instance(u.instance)
        if inst is None or (u.only_if_hosts and inst.host not in u.only_if_hosts):
            return
        new = replace(inst, state=u.state or inst.state, host=u.host or inst.host)
        severity = Severity.ERROR if u.event_type == "instance.unplaceable" else Severity.INFO
        events = [make_event(new, u.event_type, now, u.reason, severity, job=job.id,
                             source=job.subject, target=new.host)] if u.event_type else []
        self.cluster.update_instance(new, events)

    # -- performing intents -------------------------------------------------------

    async def _perform_all(
        self, job: Job, intents: Sequence[Intent]
    ) -> tuple[Job, float | None]:
        now = self.clock.now()
        # retries (fence every minute, self-fence re-checks) must not grow
        # the job forever: keep the latest steps only
        started = replace(job, steps=job.steps[-MAX_STEPS:])
        for intent in intents:
            name = recovery.step_name(intent)
            if not any(s.name == name and s.state == "running" for s in started.steps):
                started = start_step(started, name, now)
        job = self._commit(job, Decision(started), now)
        results = await asyncio.gather(*(self._perform(i) for i in intents))
        wait_until: float | None = None
        for result in results:
            now = self.clock.now()
            name = recovery.step_name(result.intent)
            detail = result.detail if result.retry_at is None else f"not yet: {result.detail}"
            finished = finish_step(job, name, now, ok=result.ok, detail=detail)
            decision = recovery.apply(finished, result, now)
            job = self._commit(job, decision, now)
            if decision.wait_until is not None:
                wait_until = decision.wait_until
        return job, wait_until

    async def _perform(self, intent: Intent) -> Result:
        try:
            return await self._dispatch(intent)
        except (VmhaError, TimeoutError) as exc:
            return Result(intent, False, f"{type(exc).__name__}: {exc}")

    async def _dispatch(self, intent: Intent) -> Result:
        if isinstance(intent, recovery.FenceHost):
            return await self._power_off(intent)
        if isinstance(intent, recovery.ConfirmFenced):
            return await self._confirm(intent)
        if isinstance(intent, recovery.DisableCompute):
            await self._bounded(self.cloud.disable_host(intent.host, "failed and fenced by vmha"),
                                self.settings.evacuate_timeout_s)
            return Result(intent, True, "compute service disabled")
        if isinstance(intent, recovery.PlanEvacuation):
            return self._plan(intent)
        if isinstance(intent, recovery.Evacuate):
            return await self._evacuate(intent)
        if isinstance(intent, recovery.VerifyInstance):
            return await self._verify(intent)
        return Result(intent, True)

    async def _bounded(self, call: Awaitable[T], timeout: float) -> T:
        return await asyncio.wait_for(call, timeout)

    # fencing

    async def _power_off(self, i: recovery.FenceHost) -> Result:
        host = self.cluster.hosts[i.host]
        for method in i.methods:
            fencer = self.fencers.get(method)
            if fencer is None:
                return Result(i, False, f"no {method} fencer configured")
            try:
                await self._bounded(fencer.power_off(host), self.settings.fence_timeout_s)
            except (VmhaError, TimeoutError) as exc:
                return Result(i, False, f"{method} power-off failed: {exc or 'timeout'}")
        return Result(i, True, f"{'+'.join(i.methods)} accepted power-off")

    async def _confirm(self, i: recovery.ConfirmFenced) -> Result:
        if "manual" in i.methods:
            return Result(i, False, "waiting for operator fence-ack")
        if "agent_watchdog" in i.methods:
            return await self._confirm_self_fence(i)
        for method in i.methods:
            fencer = self.fencers.get(method)
            if fencer is None:
                return Result(i, False, f"no {method} fencer configured")
            failure = await self._wait_power_off(fencer, self.cluster.hosts[i.host])
            if failure:
                return Result(i, False, failure)
        return Result(i, True, f"{'+'.join(i.methods)} reports power off")

    async def _wait_power_off(self, fencer: Fencer, host: Host) -> str:
        """Poll power status until OFF; "" on success, else why not."""
        deadline = self.clock.now() + self.settings.fence_timeout_s
        while True:
            try:
                state = await self._bounded(fencer.power_status(host),
                                            self.settings.bmc_status_timeout_s)
            except (VmhaError, TimeoutError):
                state = None
            if state is PowerState.OFF:
                return ""
            if self.clock.now() >= deadline:
                if state is PowerState.ON:
                    return f"{fencer.method} accepted power-off but the host stays on"
                return f"{fencer.method} BMC did not confirm power off"
            await self.clock.sleep(self.settings.fence_poll_s)

    async def _confirm_self_fence(self, i: recovery.ConfirmFenced) -> Result:
        if self.monitor.heard_since(i.host, i.last_seen):
            return Result(i, False, "heartbeats resumed: it is not cut off, no self-fence")
        evidence = await self.monitor.gather_evidence(i.host, power=False)
        verdict = confirm(evidence)
        if verdict.verdict is not Verdict.FAILED:
            return Result(i, False, f"cannot prove it is cut off: {verdict.reason}")
        now = self.clock.now()
        if now < i.deadline:
            return Result(i, False, "cut off; waiting for the self-fence deadline",
                          retry_at=i.deadline)
        return Result(i, True, f"agent self-fence deadline passed: cut off for "
                               f"{now - i.last_seen:.1f} s")

    # planning and moving instances

    def _plan(self, i: recovery.PlanEvacuation) -> Result:
        host = self.cluster.hosts[i.host]
        segment = self.cluster.segments.get(host.segment)
        method = segment.recovery_method if segment else RecoveryMethod.AUTO
        todo = [x for x in (self.cluster.get_instance(iid) for iid in i.instances) if x]
        ids = {x.id for x in todo}
        placed = [x for x in self.cluster.instances() if x.id not in ids]
        candidates = planner.candidates_from(
            self.cluster.hosts_of(host.segment), placed, exclude=(i.host, *i.exclude))
        candidates = [c for c in candidates if not self.monitor.blocked_host(c.host.name)]
        policies = {x.id: self.cluster.policy_of(x, host) for x in todo}
        plan = planner.plan(todo, candidates, method, policies)
        missing = tuple(planner.Unplaced(iid, "instance no longer exists")
                        for iid in i.instances if iid not in ids)
        plan = replace(plan, unplaced=(*plan.unplaced, *missing))
        return Result(i, True, f"{len(plan.placements)} placed, {len(plan.unplaced)} not",
                      plan=plan)

    async def _evacuate(self, i: recovery.Evacuate) -> Result:
        inst = self.cluster.get_instance(i.instance)
        if inst is None:
            return Result(i, False, "instance no longer exists", handed_over=True)
        want = InstanceState.STOPPED if i.stopped else InstanceState.RUNNING
        if i.resume:
            try:
                state = await self._bounded(self.cloud.instance_state(inst, i.target),
                                            self.settings.evacuate_timeout_s)
                if state is want:
                    return Result(i, True, f"already {want.value} on {i.target}")
            except (VmhaError, TimeoutError):
                pass  # cannot tell: starting is idempotent anyway
        try:
            await self._bounded(self.cloud.start_instance(inst, i.target, i.stopped),
                                self.settings.evacuate_timeout_s)
        except (VmhaError, TimeoutError) as exc:
            return await self._undo_start(i, f"start on {i.target} failed: {exc or 'timeout'}")
        return Result(i, True, f"started on {i.target}")

    async def _undo_start(self, i: recovery.Evacuate | recovery.VerifyInstance,
                          why: str) -> Result:
        """Make sure the instance is not left running on a target we give up
        on; if that cannot be proven, the target's own recovery owns it."""
        inst = self.cluster.get_instance(i.instance)
        target = self.cluster.hosts.get(i.target)
        if inst is not None and target is not None and target.state is HostState.UP:
            try:
                await self._bounded(self.cloud.stop_instance(inst, i.target),
                                    self.settings.evacuate_timeout_s)
                return Result(i, False, why)
            except (VmhaError, TimeoutError):
                pass
        return Result(i, False, f"{why}; {i.target} cannot confirm it is stopped, "
                                f"left to {i.target}'s recovery", handed_over=True)

    async def _verify(self, i: recovery.VerifyInstance) -> Result:
        inst = self.cluster.get_instance(i.instance)
        if inst is None:
            return Result(i, False, "instance no longer exists", handed_over=True)
        want = InstanceState.STOPPED if i.stopped else InstanceState.RUNNING
        deadline = self.clock.now() + self.settings.verify_timeout_s
        while True:
            target = self.cluster.hosts.get(i.target)
            if target is None or target.state is not HostState.UP:
                return Result(i, False, f"target {i.target} failed during evacuation; "
                                        "its own recovery takes over", handed_over=True)
            try:
                state = await self._bounded(self.cloud.instance_state(inst, i.target),
                                            self.settings.verify_timeout_s)
            except (VmhaError, TimeoutError):
                state = None
            if state is want:
                return Result(i, True, f"{want.value} on {i.target}")
            if self.clock.now() >= deadline:
                return await self._undo_start(
                    i, f"not {want.value} on {i.target} after "
                       f"{self.settings.verify_timeout_s:g} s")
            await self.clock.sleep(self.settings.verify_poll_s)
