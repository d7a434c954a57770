"""Guest and application failures: events from agents -> recovery jobs.

Called by the Engine for every guest or application event of an instance
(the `InstanceEvent` command, and the agents' domain reports through
vmha.engine.reports). What to do is `vmha.domain.restart.instance_event`;
a recovery runs as a durable `instance_recovery` job whose steps
vmha.domain.escalation moves on (one unfinished job per instance). This
module records the new state and events, and performs each step through
the Cloud port (`exec:` and `reboot` through its GuestControl part), one
task per job.

Nothing is kept only in memory: the restart history is the jobs' started
steps, the backoff (`due_at`) and the application's grace time
(`grace_until`) are stored, so a new controller resumes every unfinished
job where it stood (`resume`), with the budget already spent. A step that
was running when the old controller stopped is not run again (a second
reset is not harmless): the application gets its grace time instead.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import replace

from vmha.domain import escalation, restart
from vmha.domain.errors import ValidationError, VmhaError
from vmha.domain.jobs import ActionData, DecisionData
from vmha.domain.model import HostState, Instance, Job, JobKind, JobState
from vmha.domain.policy import HAPolicy
from vmha.engine.settings import ControllerSettings
from vmha.engine.state import Cluster
from vmha.engine.tasks import cancel_all
from vmha.ports import Clock, Cloud, GuestControl, IdGen, list_all_async

log = logging.getLogger("vmha.engine.instances")
EXEC_TIMEOUT_S = 60.0  # an in-guest restart command may take this long
# which layer's recovery an event of this kind makes unnecessary
SETTLES = {"started": "guest", "guest_responsive": "guest", "app_ok": "app",
           "app_recovered": "app"}
SETTLED_WORDS = {"started": "the guest started again by itself",
                 "guest_responsive": "the guest agent answers again",
                 "app_ok": "the application answers again",
                 "app_recovered": "the application answers again"}


class InstanceWatcher:
    def __init__(self, settings: ControllerSettings, cluster: Cluster, clock: Clock,
                 cloud: Cloud, ids: IdGen) -> None:
        self.settings = settings
        self.cluster = cluster
        self.clock = clock
        self.cloud = cloud
        self.ids = ids
        self.pending: dict[str, asyncio.Task[None]] = {}  # job id -> its task
        # custom policy: (instance, layer, reason) -> offer a decision (the Engine)
        self.on_ask: Callable[[Instance, str, str], Awaitable[None]] | None = None

    # -- events ---------------------------------------------------------------

    async def event(self, instance_id: str, kind: str, detail: str = "") -> None:
        if kind not in restart.INSTANCE_EVENT_KINDS:
            allowed = ", ".join(sorted(restart.INSTANCE_EVENT_KINDS))
            raise ValidationError("kind", f"{kind!r} is not one of {allowed}")
        inst = await self.cluster.get_instance(instance_id)
        if inst is None:
            log.warning("event %s for unknown instance %s ignored", kind, instance_id)
            return
        now = self.clock.now()
        policy = await self._policy(inst)
        history = await self.restart_times(instance_id, now, policy.window_s)
        reaction = restart.instance_event(inst, kind, history, now, self.settings.backoff(),
                                          policy, detail)
        if reaction.state is not None or reaction.events:
            state, events = reaction.state, list(reaction.events)
            inst = await self.cluster.change_instance(
                instance_id, lambda cur: (replace(cur, state=state or cur.state), events)) or inst
        job = await self.unfinished(instance_id)
        if reaction.cancel_restart and job is not None and \
                escalation.data(job).layer == SETTLES.get(kind):
            words = SETTLED_WORDS[kind]
            await self._settle(job, f"{words}: {detail}" if detail else words)
        if reaction.ask is not None and self.on_ask is not None and reaction.events:
            await self.on_ask(inst, reaction.ask, str(reaction.events[0].payload["reason"]))
        if reaction.restart_in is not None and job is None:
            await self._open(inst, policy, reaction, now)

    async def _open(self, inst: Instance, policy: HAPolicy, reaction: restart.Reaction,
              now: float, cause: str = "") -> Job:
        if not cause and reaction.events:
            cause = str(reaction.events[0].payload["reason"])
        assert reaction.restart_in is not None
        mode = policy.app if reaction.layer == "app" else policy.guest
        opened = escalation.new_job(self.ids.new_id(), inst, reaction.layer, reaction.steps,
                                    cause, now, now + reaction.restart_in,
                                    notify=mode.value == "auto+notify")
        await self.cluster.durable()
        job = await self.cluster.io.create_job(opened.job, list(opened.events))
        self.start(job.id)
        return job

    async def escalate_decision(self, decision: Job) -> Job | None:
        """A custom app decision whose `auto` fallback applies: the
        application's escalation as a recovery job, its first step at once
        (the decision waited already; the budget is checked before each
        step). None when one runs already or the instance is gone."""
        inst = await self.cluster.get_instance(decision.subject)
        if inst is None or await self.unfinished(inst.id) is not None:
            return None
        policy = await self._policy(inst)
        asked = decision.data
        failed = asked.cause if isinstance(asked, DecisionData) else ""
        cause = f"{failed}; decision {decision.id} timed out, fallback auto"
        steps = tuple(str(s) for s in policy.app_actions)
        return await self._open(inst, policy, restart.Reaction(restart_in=0.0, steps=steps,
                                                                layer="app"),
                                self.clock.now(), cause)

    async def _settle(self, job: Job, why: str) -> None:
        """The instance is well again: a waiting job ends (its task, asleep,
        is cancelled); one whose step runs ends when the step returns."""
        moved = escalation.recovered(job, self.clock.now(), why)
        if moved is None:
            return
        await self._save(job, moved)
        if moved.job.finished:
            task = self.pending.pop(job.id, None)
            if task is not None and task is not asyncio.current_task():
                task.cancel()

    # -- jobs -------------------------------------------------------------------

    async def unfinished(self, instance_id: str) -> Job | None:
        jobs = await self._jobs(JobKind.INSTANCE_RECOVERY, instance_id)
        return next((j for j in jobs if not j.finished), None)

    async def _jobs(self, kind: JobKind, subject: str | None = None) -> list[Job]:
        filters = {"kind": kind.value} | ({"subject": subject} if subject is not None else {})
        return await list_all_async(self.cluster.io.list_jobs, filters)

    async def restart_times(self, instance_id: str, now: float, window_s: float) -> list[float]:
        """The restarts `instance_id`'s budget has used within the window:
        every step of its recovery jobs, and every restart a custom
        decision's `auto` fallback made (its action jobs); all from the store."""
        jobs = await self._jobs(JobKind.INSTANCE_RECOVERY, instance_id)
        times = escalation.restart_times(jobs, now, window_s)
        actions = await self._jobs(JobKind.ACTION, instance_id)
        times += [j.created_at for j in actions if isinstance(j.data, ActionData)
                  and j.data.by == "fallback" and now - j.created_at < window_s]
        return sorted(times)

    async def resume(self) -> None:
        """After a controller restart: every unfinished recovery job goes on
        where it stood (its backoff, grace time and budget are stored)."""
        for job in await self._jobs(JobKind.INSTANCE_RECOVERY):
            if job.finished:
                continue
            if job.state is JobState.EVACUATING:
                inst = await self.cluster.get_instance(job.subject)
                policy = await self._policy(inst) if inst is not None else HAPolicy()
                await self._save(job, escalation.interrupted(job, policy, self.clock.now()))
            self.start(job.id)

    def start(self, job_id: str) -> None:
        if job_id in self.pending and not self.pending[job_id].done():
            return
        self.pending[job_id] = asyncio.ensure_future(self._run(job_id))

    async def _run(self, job_id: str) -> None:
        try:
            while True:
                job = await self.cluster.io.get_job(job_id)
                if job.finished:
                    return
                await self._round(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("recovery job %s failed", job_id)
        finally:
            if self.pending.get(job_id) is asyncio.current_task():
                del self.pending[job_id]

    async def _round(self, job: Job) -> None:
        """One move of `job`: wait for its time, then begin or run a step."""
        d = escalation.data(job)
        if job.state is not JobState.EVACUATING:
            wake = d.due_at if job.state is JobState.PENDING else d.grace_until
            delay = wake - self.clock.now()
            if delay > 0:
                await self.clock.sleep(delay)
                return  # read it again: it may have settled meanwhile
        inst = await self.cluster.get_instance(job.subject)
        now = self.clock.now()
        if inst is None:
            await self._abandon(job, f"instance {job.subject} no longer exists")
            return
        if d.host and inst.host != d.host:  # a host recovery moved it meanwhile
            await self._abandon(job, f"instance {inst.id} moved from {d.host} to {inst.host}; "
                                     "this recovery ends there")
            return
        policy = await self._policy(inst)
        used = await self.restart_times(inst.id, now, policy.window_s)
        if job.state is JobState.PENDING:
            await self._save(job, escalation.begin_step(job, inst, policy, used, now))
        elif job.state is JobState.VERIFYING:
            await self._save(job, escalation.grace_over(job, inst, policy, used, now))
        else:
            await self._perform(job, inst, policy)

    async def _perform(self, job: Job, inst: Instance, policy: HAPolicy) -> None:
        step = escalation.data(job).action
        host = self.cluster.hosts.get(inst.host or "")
        if host is None or host.state is not HostState.UP:
            await self._abandon(job, f"host {inst.host} of instance {inst.id} is "
                                     f"{host.state.value if host else 'unknown'}, not up: its "
                                     "host recovery owns the instance")
            return
        try:
            ok, detail = await self._step(inst, host.name, step)
        except (VmhaError, TimeoutError) as exc:
            ok, detail = False, f"{exc or 'timed out'}"
        now = self.clock.now()
        fresh = await self.cluster.io.get_job(job.id)  # it may have learnt the app recovered
        if fresh.finished or fresh.state is not JobState.EVACUATING:
            return
        used = await self.restart_times(inst.id, now, policy.window_s)
        await self._save(fresh, escalation.step_finished(fresh, inst, policy, ok, detail, now,
                                                   len(used)))

    async def _step(self, inst: Instance, host: str, step: str) -> tuple[bool, str]:
        kind, _, command = step.partition(":")
        timeout = self.settings.evacuate_timeout_s
        if kind in ("exec", "reboot"):
            if not isinstance(self.cloud, GuestControl):
                return False, f"the configured cloud cannot {kind} inside guests"
            if kind == "reboot":
                await asyncio.wait_for(self.cloud.reboot_instance(inst, host), timeout)
                return True, f"guest of {inst.id} asked to reboot on {host}"
            argv = shlex.split(command)
            result = await asyncio.wait_for(
                self.cloud.exec_in_guest(inst, host, argv, EXEC_TIMEOUT_S),
                EXEC_TIMEOUT_S + timeout)
            return result.ok, f"{argv[0]} in the guest on {host}: {result.detail}"
        if kind == "reset":
            await asyncio.wait_for(self.cloud.reset_instance(inst, host), timeout)
        elif kind == "rebuild":
            rebuild = getattr(self.cloud, "rebuild_instance", None)
            if rebuild is None:  # a policy from before, or from a cloud's metadata
                return False, "the configured cloud cannot rebuild an instance"
            await asyncio.wait_for(rebuild(inst, host), timeout)
            return True, f"rebuild of {inst.id} on {host} from its image"
        else:
            await asyncio.wait_for(self.cloud.stop_instance(inst, host), timeout)
            await asyncio.wait_for(self.cloud.start_instance(inst, host), timeout)
        return True, f"{kind} of {inst.id} on {host}"

    async def _abandon(self, job: Job, why: str) -> None:
        await self._save(job, escalation.abandon(job, why, self.clock.now()))

    async def _save(self, before: Job, moved: escalation.Outcome) -> Job:
        await self.cluster.durable()
        saved = await self.cluster.io.save_job(moved.job, before.generation,
                                               list(moved.events))
        if moved.state is not None:
            state = moved.state
            await self.cluster.change_instance(
                before.subject, lambda cur: None if cur.state is state else
                (replace(cur, state=state), []))
        return saved

    async def _policy(self, inst: Instance) -> HAPolicy:
        return await self.cluster.policy_of(inst, self.cluster.hosts.get(inst.host or ""))

    async def restarts(self, instance_id: str) -> int:
        inst = await self.cluster.get_instance(instance_id)
        if inst is None:
            return 0
        window = (await self._policy(inst)).window_s
        return len(await self.restart_times(instance_id, self.clock.now(), window))

    async def stop(self) -> None:
        await cancel_all(self.pending)
