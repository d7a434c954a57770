"""The recovery job executor: turns the job's intents into port calls.

Run by the Engine, one asyncio task per unfinished host-recovery job.
Each round: `recovery.decide` says what to do; every intent is recorded as
a started step and saved *before* it runs, performed through the ports,
then recorded as finished and folded back with `recovery.apply` and saved
again. A new controller loading the job re-issues only what was not
finished; `Evacuate` first checks whether the instance already runs on its
target. The decisions are the domain's; this module only does I/O.

Every store call of a job's round is awaited through the cluster's `io`
(vmha.ports.AsyncJobs, AsyncInstances: a real database's calls run in the
store adapter's threads, not on the event loop), and a job's saves wait
until the host changes queued before them are durable (`Cluster.durable`):
a job's step is never recorded before the host state that caused it, and
its steps are saved strictly in order (each save is awaited before the
next round).
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
from vmha.domain.health import PowerReading
from vmha.domain.isolation import Sample
from vmha.domain.jobs import MoveState
from vmha.domain.model import (
    TERMINAL_JOB_STATES,
    Event,
    Host,
    HostState,
    Instance,
    Job,
    JobKind,
    JobState,
    Severity,
    StepState,
    SubjectKind,
)
from vmha.domain.policy import LayerMode
from vmha.domain.recovery import Decision, Intent, Result
from vmha.domain.restart import make_event
from vmha.domain.transitions import finish_step, start_step
from vmha.engine.detection import HostMonitor
from vmha.engine.moves import Mover
from vmha.engine.settings import ControllerSettings
from vmha.engine.state import Cluster
from vmha.engine.tasks import cancel_all
from vmha.ports import Clock, Cloud, Fencer, IdGen, PowerState, list_all_async

# a host-recovery job in one of these still has work to do
OPEN_JOB_STATES = tuple(s for s in JobState if s not in TERMINAL_JOB_STATES)

log = logging.getLogger("vmha.engine.jobs")
MAX_STEPS = 200
# A self-fence sample may start this much later than `confirm_retry_s` asks
# (a busy event loop, a slow store write) before its window counts as broken.
SAMPLE_SLACK_S = 1.0
ERROR_EVENTS = frozenset({"instance.unplaceable", "instance.recovery_failed",
                          "instance.host_failed"})
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
        self.mover = Mover(settings, cluster, clock, cloud, monitor)  # the one move path
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.pokes: dict[str, asyncio.Event] = {}
        self.budgets: dict[str, FenceBudget] = {}
        self.acks: dict[str, str] = {}  # host -> operator, not yet folded into its job
        # host -> (operator, levels): an operator's fence, not yet folded into its job
        self.requests: dict[str, tuple[str, Levels]] = {}
        self.fence_queue: dict[str, list[tuple[float, str]]] = {}  # segment -> waiting jobs
        # Called once a job's fence is confirmed with its custom-policy
        # instances (the Engine offers them decisions).
        self.on_fenced: Callable[[Job, tuple[str, ...]], Awaitable[None]] | None = None

    # -- starting -------------------------------------------------------------

    async def unfinished(self) -> list[Job]:
        """Host-recovery jobs not finished, oldest first: queried by state, so
        the cost follows the open jobs, not every job ever made."""
        kind = JobKind.HOST_RECOVERY.value
        jobs = [job for state in OPEN_JOB_STATES
                for job in await list_all_async(self.cluster.io.list_jobs,
                                                {"kind": kind, "state": state.value})]
        return sorted(jobs, key=lambda j: (j.created_at, j.id))  # the store's default order

    async def job_for(self, host: str) -> Job | None:
        """The host's unfinished recovery job (queried by the host: its jobs only)."""
        filters = {"kind": JobKind.HOST_RECOVERY.value, "subject": host}
        jobs = await list_all_async(self.cluster.io.list_jobs, filters)
        return next((j for j in jobs if not j.finished), None)

    async def resume_all(self) -> None:
        for job in await self.unfinished():
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
        existing = await self.job_for(host.name)
        if existing is not None:
            self.start(existing.id)
            self.poke()
            return existing
        instances = await self.cluster.instances(host.name)
        policies = {i.id: await self.cluster.policy_of(i, host) for i in instances}
        protected = {iid: p.protected for iid, p in policies.items()}
        job = recovery.new_host_job(
            self.ids.new_id(), host, instances, protected, self.monitor.last_seen(host.name),
            now, host.state_reason, self.settings.default_fence_levels,
            requested_by=requested_by, levels=levels)
        job = decisions.mark_custom(job, frozenset(
            iid for iid, p in policies.items() if p.host is LayerMode.CUSTOM))
        reason = f"recovering {len(instances)} instances of failed host {host.name}"
        event = Event(type="job.started", subject=job.id, time=now, subject_kind=SubjectKind.JOB,
                      payload={"job": job.id, "kind": job.kind.value, "subject": host.name,
                               "host": host.name, "segment": host.segment, "reason": reason})
        await self.cluster.durable()  # its host's failure first, then the job
        await self.cluster.io.create_job(job, [event])
        self.start(job.id)
        return job

    async def stop(self) -> None:
        await cancel_all(self.tasks)

    # -- the loop -------------------------------------------------------------

    async def _run(self, job_id: str) -> None:
        job = await self.cluster.io.get_job(job_id)
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
                job = await self.cluster.io.get_job(job_id)

    async def _round(self, job: Job) -> Job:
        self.pokes[job.id].clear()
        if job.subject not in self.cluster.hosts:
            await self.cluster.catch_up()  # created a moment ago, or really gone?
        now = self.clock.now()
        if job.subject in self.acks:
            job = recovery.acknowledge(job, self.acks.pop(job.subject), now)
        if job.subject in self.requests:
            who, levels = self.requests.pop(job.subject)
            job = recovery.request_fence(job, who, levels, now)
        decision = recovery.decide(job, await self._context(job, now), now)
        seg = recovery.host_data(job).segment
        if decision.host_state is HostState.FENCING:
            self.budgets[seg] = self.budgets.get(seg, FenceBudget()).record(now)
        self._track_queue(seg, job, decision)
        changed = decision.job is not job or bool(decision.events)
        job = await self._commit(job, decision, now)
        if decision.intents:
            job, wait_until = await self._perform_all(job, decision.intents)
            if wait_until is not None:
                await self._wait(job.id, wait_until)
        elif not changed and not job.finished:
            await self._wait(job.id, decision.wait_until)
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

    async def _context(self, job: Job, now: float) -> recovery.JobContext:
        seg = recovery.host_data(job).segment
        budget = self.budgets.get(seg, FenceBudget())
        s = self.settings
        allowed = budget.next_allowed(now, s.fence_rate_burst, s.fence_rate_interval_s)
        queue = self.fence_queue.get(seg, [])
        ahead = sum(1 for key in queue if key < (job.created_at, job.id))
        if ahead:  # older jobs of the segment fence first, one interval apart
            allowed = max(allowed, now) + ahead * s.fence_rate_interval_s
        return recovery.JobContext(
            blocked=self.monitor.blocked(seg),
            moves_blocked=self.monitor.blocked(seg) if self.monitor.isolated else "",
            fence_allowed_at=allowed,
            host_returned=self.monitor.returned(job.subject, now)
            and self.monitor.heard_since(job.subject, job.created_at),
            host_alive=self.monitor.heard_since(job.subject, job.created_at)
            and not self.monitor.blocked_host(job.subject),
            max_parallel=s.max_parallel_evacuations,
            fence_retry_s=s.fence_retry_s,
            self_fence_deadline_s=s.self_fence_deadline_s,
            # a sample: peer probes, then maybe peers' BMC reads, each bounded so
            sample_gap_s=s.confirm_retry_s + 2 * s.peer_probe_timeout_s + SAMPLE_SLACK_S,
            host_exists=job.subject in self.cluster.hosts,
            proof_retry_s=s.proof_retry_s,
            notify=await self._notify(job) if job.state is JobState.FENCED else frozenset(),
        )

    async def _notify(self, job: Job) -> frozenset[str]:
        """The job's left-behind instances whose host policy is `notify`."""
        host = self.cluster.hosts.get(job.subject)
        found = set()
        for iid, move in recovery.host_data(job).instances.items():
            if move.state is not MoveState.SKIPPED:
                continue
            inst = await self.cluster.get_instance(iid)
            if inst is not None and (await self.cluster.policy_of(inst, host)).host \
                    is LayerMode.NOTIFY:
                found.add(iid)
        return frozenset(found)

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

    async def _commit(self, before: Job, d: Decision, now: float) -> Job:
        job = before
        if d.job is not before or d.events:
            await self.cluster.durable()  # what caused this step is written first
            job = await self.cluster.io.save_job(d.job, before.generation, d.events)
        if d.host_state is not None:
            self._move_host(job.subject, d.host_state, d.host_reason, now, d.host_event, job.id)
        for update in d.instances:
            await self._update_instance(update, job, now)
        asked = decisions.offered_after_fence(before, job)
        if asked and self.on_fenced is not None:
            await self.on_fenced(job, asked)
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

    async def _update_instance(self, u: recovery.InstanceUpdate, job: Job, now: float) -> None:
        severity = Severity.ERROR if u.event_type in ERROR_EVENTS else Severity.INFO

        def change(inst: Instance) -> tuple[Instance, list[Event]] | None:
            if u.only_if_hosts and inst.host not in u.only_if_hosts:
                return None  # another job took it over meanwhile
            new = replace(inst, state=u.state or inst.state, host=u.host or inst.host)
            return new, [make_event(new, u.event_type, now, u.reason, severity, job=job.id,
                                    source=job.subject, target=new.host)] if u.event_type else []

        await self.cluster.change_instance(u.instance, change)

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
            if not any(s.name == name and s.state is StepState.RUNNING for s in started.steps):
                started = start_step(started, name, now)
        job = await self._commit(job, Decision(started), now)
        results = await asyncio.gather(*(self._perform(i) for i in intents))
        wait_until: float | None = None
        for result in results:
            now = self.clock.now()
            name = recovery.step_name(result.intent)
            detail = result.detail if result.retry_at is None else f"not yet: {result.detail}"
            finished = finish_step(job, name, now, ok=result.ok, detail=detail)
            decision = recovery.apply(finished, result, now)
            job = await self._commit(job, decision, now)
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
            await self._bounded(self.cloud.disable_host(intent.host, intent.reason),
                                self.settings.evacuate_timeout_s)
            return Result(intent, True, "compute service disabled")
        if isinstance(intent, recovery.PlanEvacuation):
            return await self._plan(intent)
        if isinstance(intent, recovery.Evacuate):
            return await self._evacuate(intent)
        if isinstance(intent, recovery.VerifyInstance):
            return await self._verify(intent)
        return Result(intent, True)

    async def _bounded(self, call: Awaitable[T], timeout: float) -> T:
        return await asyncio.wait_for(call, timeout)

    # fencing

    async def _power_off(self, i: recovery.FenceHost) -> Result:
        host = self.cluster.hosts.get(i.host)
        if host is None:
            return Result(i, False, f"host {i.host} no longer exists")
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
        host = self.cluster.hosts.get(i.host)
        if host is None:
            return Result(i, False, f"host {i.host} no longer exists")
        if i.passive:
            return await self._read_power_off(i, host)
        for method in i.methods:
            fencer = self.fencers.get(method)
            if fencer is None:
                return Result(i, False, f"no {method} fencer configured")
            failure = await self._wait_power_off(fencer, host)
            if failure:
                return Result(i, False, failure)
        return Result(i, True, f"{'+'.join(i.methods)} reports power off")

    async def _read_power_off(self, i: recovery.ConfirmFenced, host: Host) -> Result:
        """One status read per method, no action: OFF proves the host dead."""
        for method in i.methods:
            fencer = self.fencers.get(method)
            if fencer is None:
                return Result(i, False, f"no {method} fencer configured")
            try:
                state = await self._bounded(fencer.power_status(host),
                                            self.settings.bmc_status_timeout_s)
            except (VmhaError, TimeoutError) as exc:
                return Result(i, False, f"{method} status read failed: {exc or 'timeout'}")
            if state is not PowerState.OFF:
                return Result(i, False, f"{method} reads power {state.value}")
        return Result(i, True, f"{'+'.join(i.methods)} reads power off "
                               "(no power-off sent: fencing is paused)")

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
        """One peer sample (vmha.domain.isolation): does the host look cut off
        from us and from a majority of its peers, as its agent counts them
        (the other hosts of its segment)? A peer that cannot be asked counts
        as reaching it unless its BMC reads power off now. The job folds the
        sample into its window and decides; while the host looks cut off the
        next sample is due `confirm_retry_s` later."""
        host = self.cluster.hosts.get(i.host)
        if host is None:
            return Result(i, False, f"host {i.host} no longer exists")
        peers = [h.name for h in self.cluster.hosts_of(host.segment) if h.name != i.host]
        if self.monitor.heard_since(i.host, i.last_seen):  # no need to ask the peers
            sample = Sample(self.clock.now(), len(peers), heard=True)
            return Result(i, False, "heartbeats resumed: it is not cut off, no self-fence",
                          sample=sample)
        need = Sample(0.0, len(peers)).cannot_reach_needed()
        evidence = await self.monitor.gather_evidence(
            i.host, power=False, want=max(self.settings.confirm_peers, need))
        answered = {p: v for p, v in zip(evidence.asked, evidence.peer_votes, strict=True)
                    if v is not None}
        off, cannot = 0, list(answered.values()).count(False)
        if not any(answered.values()) and cannot < need:
            off = await self._peers_off([p for p in peers if p not in answered], need - cannot)
        votes = list(answered.values())
        sample = Sample(self.clock.now(), len(peers), reach=votes.count(True),
                        cannot_reach=votes.count(False) + off,
                        heard=self.monitor.heard_since(i.host, i.last_seen))  # during the round
        if not sample.cut_off and (sample.heard or sample.reach):  # contact: the level fails
            return Result(i, False, f"cannot prove it is cut off: {sample.why_not()}",
                          sample=sample)
        if not sample.cut_off:  # too few answers: the window restarts, sampled on
            return Result(i, False, f"cannot prove it is cut off yet: {sample.why_not()}; "
                                    "sampling again", retry_at=sample.at
                          + self.settings.confirm_retry_s, sample=sample)
        return Result(i, False, f"cut off: {sample.cannot_reach} of {len(peers)} peers cannot "
                                "reach it; sampling until the self-fence deadline",
                      retry_at=sample.at + self.settings.confirm_retry_s, sample=sample)

    async def _peers_off(self, names: Sequence[str], want: int) -> int:
        """How many of `names` their BMCs read powered off (status reads, as
        quick as a peer probe: a sample must not stretch the gap to the next).
        Only `want` are read, those the controller does not see up first:
        the peers that could still complete the proof, not a whole segment."""
        up = HostState.UP
        order = sorted(names, key=lambda n: (
            getattr(self.cluster.hosts.get(n), "state", up) is up, n))
        timeout = self.settings.peer_probe_timeout_s
        readings = await asyncio.gather(*(self.monitor.power_reading(n, timeout)
                                          for n in order[:want]))
        return sum(1 for r in readings if r is PowerReading.OFF)

    # planning and moving instances

    async def _plan(self, i: recovery.PlanEvacuation) -> Result:
        host = self.cluster.hosts.get(i.host)  # None: deleted after its fence
        everyone = await self.cluster.instances()
        wanted = set(i.instances)
        todo = [x for x in everyone if x.id in wanted]
        order = {iid: n for n, iid in enumerate(i.instances)}
        todo.sort(key=lambda x: order[x.id])  # the job's order
        ids = {x.id for x in todo}
        placed = [x for x in everyone if x.id not in ids]
        policies = {x.id: await self.cluster.policy_of(x, host) for x in todo}
        plan = self.mover.plan(todo, placed, policies, i.segment, (i.host, *i.exclude))
        missing = tuple(planner.Unplaced(iid, "instance no longer exists")
                        for iid in i.instances if iid not in ids)
        plan = replace(plan, unplaced=(*plan.unplaced, *missing))
        return Result(i, True, f"{len(plan.placements)} placed, {len(plan.unplaced)} not",
                      plan=plan)

    async def _evacuate(self, i: recovery.Evacuate) -> Result:
        inst = await self.cluster.get_instance(i.instance)
        if inst is None:
            return Result(i, False, "instance no longer exists", handed_over=True)
        step = await self.mover.start(inst, i.target, i.stopped, i.resume)
        return Result(i, step.ok, step.detail, handed_over=step.handed_over)

    async def _verify(self, i: recovery.VerifyInstance) -> Result:
        inst = await self.cluster.get_instance(i.instance)
        if inst is None:
            return Result(i, False, "instance no longer exists", handed_over=True)
        step = await self.mover.verify(inst, i.target, i.stopped)
        return Result(i, step.ok, step.detail, handed_over=step.handed_over, host=step.host)
