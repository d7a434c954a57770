"""Instance actions (restart, reset, stop, start, evacuate, rebuild, ignore)
as durable jobs, performed through the Cloud port.

Called by the Engine for the `InstanceAction` command (the API's
`POST /v1/instances/{id}/actions`) and for settled custom decisions
(vmha.engine.decisions). `submit` checks the safety rules of
`vmha.domain.decisions.refusal` (Conflict with the reason when refused),
stores an `action` job with its `job.started` event and runs it in a task;
`resume` restarts the unfinished ones after a controller restart (every
Cloud call is idempotent, so a step that was interrupted is simply
performed again). The rules are checked again when the job runs: the world
may have changed since it was accepted.

An evacuation never starts the instance elsewhere unless its host is
fenced or in maintenance; from a host in maintenance (still running) the
instance is stopped there first. It moves the instance on the same path
as automatic recovery (vmha.engine.moves): a target that may receive
instances now (heartbeats current, enabled again), chosen by the planner
unless the request names one; the target recorded in the job before the
start, so a resumed job looks there first and never starts it on a second
host; the move counted only once the cloud says it runs there; a failed
attempt undone on its target and planned again elsewhere (up to
MOVE_TARGETS targets; a named target is tried alone), an instance whose
target failed meanwhile left to that target's recovery. Decisions about
what is allowed live in the domain; this module only does I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from vmha.domain import decisions
from vmha.domain.errors import Conflict, NotFound, VmhaError
from vmha.domain.model import (
    Event,
    HostState,
    Instance,
    InstanceState,
    Job,
    JobKind,
    Severity,
    SubjectKind,
)
from vmha.domain.restart import make_event
from vmha.domain.transitions import finish_step, start_step
from vmha.engine.moves import Mover, Step
from vmha.engine.settings import ControllerSettings
from vmha.engine.state import Cluster
from vmha.engine.tasks import cancel_all
from vmha.ports import Clock, Cloud, IdGen, list_all_async

log = logging.getLogger("vmha.engine.actions")
MOVE_TARGETS = 3  # targets an evacuation tries before it gives up

# action -> (event type on success, new state, words for the log)
OUTCOME: dict[str, tuple[str, InstanceState, str]] = {
    "restart": ("instance.restarted", InstanceState.RUNNING, "restarted"),
    "reset": ("instance.restarted", InstanceState.RUNNING, "reset"),
    "stop": ("instance.stopped", InstanceState.STOPPED, "stopped"),
    "start": ("instance.started", InstanceState.RUNNING, "started"),
    "rebuild": ("instance.rebuilt", InstanceState.RUNNING, "rebuilt"),
}


@dataclass(frozen=True)
class Done:
    ok: bool
    detail: str
    host: str | None = None  # where the instance is now (evacuate)
    state: InstanceState | None = None
    event_type: str = ""


class ActionRunner:
    """Accepts, stores and performs action jobs."""

    def __init__(self, settings: ControllerSettings, cluster: Cluster, clock: Clock,
                 ids: IdGen, cloud: Cloud, moving: Callable[[Instance], Awaitable[str]],
                 mover: Mover) -> None:
        self.settings = settings
        self.cluster = cluster
        self.clock = clock
        self.ids = ids
        self.cloud = cloud
        self.moving = moving  # id of a host-recovery job moving the instance, or ""
        self.mover = mover  # the one path of every move (shared with the job runner)
        self.tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def can_rebuild(self) -> bool:
        return callable(getattr(self.cloud, "rebuild_instance", None))

    # -- accepting ------------------------------------------------------------

    async def refusal(self, inst: Instance, action: str, target: str | None) -> str:
        host = self.cluster.hosts.get(inst.host or "")
        tgt = self.cluster.hosts.get(target) if target else None
        return decisions.refusal(action, inst, host, tgt, target, await self.moving(inst),
                                 self.can_rebuild)

    async def submit(self, instance_id: str, action: str, target: str | None, by: str,
                     decision: str | None = None) -> Job:
        """Check, store and start an action job; Conflict says why not."""
        decisions.check_action_name(action)
        await self.cluster.catch_up()  # hosts changed through the API must count now
        inst = await self.cluster.get_instance(instance_id)
        if inst is None:
            raise NotFound("instance", instance_id)
        if target is not None and action != "evacuate":
            raise Conflict(f"a target host only makes sense for evacuate, not {action}")
        why = await self.refusal(inst, action, target) or await self._busy(instance_id)
        if why:
            raise Conflict(f"{action} of instance {instance_id} refused: {why}")
        job, event = decisions.new_action_job(self.ids.new_id(), inst, action, target, by,
                                              self.clock.now(), decision)
        await self.cluster.durable()
        await self.cluster.io.create_job(job, [event])
        self.start(job.id)
        return job

    async def _busy(self, instance_id: str) -> str:
        """One action at a time per instance: two could start it twice."""
        jobs = await list_all_async(self.cluster.io.list_jobs,
                                    {"kind": JobKind.ACTION.value, "subject": instance_id})
        for job in jobs:
            if not job.finished:
                return (f"its action job {job.id} ({decisions.action_data(job).action}) "
                        "is not finished; "
                        "wait for it (vmha job show)")
        return ""

    def start(self, job_id: str) -> None:
        if job_id in self.tasks and not self.tasks[job_id].done():
            return
        self.tasks[job_id] = asyncio.ensure_future(self._run(job_id))

    async def resume(self) -> None:
        jobs = await list_all_async(self.cluster.io.list_jobs, {"kind": JobKind.ACTION.value})
        for job in jobs:
            if not job.finished:
                self.start(job.id)

    async def stop(self) -> None:
        await cancel_all(self.tasks)

    # -- performing -------------------------------------------------------------

    async def _run(self, job_id: str) -> None:
        try:
            job = await self.cluster.io.get_job(job_id)
            if job.finished:
                return
            action = decisions.action_data(job).action
            now = self.clock.now()
            job = await self._save(job, start_step(job, action, now),
                                   [self._step_event(job, now)])
            result = await self._perform(job)
            job = await self.cluster.io.get_job(job_id)  # an evacuation records its target
            now = self.clock.now()
            finished = finish_step(job, action, now, ok=result.ok, detail=result.detail)
            done, event = decisions.finish_action(finished, result.ok, result.detail, now)
            await self._save(job, done, [event])
            await self._record(job, result, now)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("action job %s failed", job_id)
        finally:
            if self.tasks.get(job_id) is asyncio.current_task():
                del self.tasks[job_id]

    async def _save(self, before: Job, after: Job, events: list[Event]) -> Job:
        await self.cluster.durable()
        return await self.cluster.io.save_job(after, before.generation, events)

    def _step_event(self, job: Job, now: float) -> Event:
        d = decisions.action_data(job)
        where = f" to {d.target}" if d.target else ""
        reason = f"performing {d.action} of instance {d.instance}{where}"
        return Event(type="job.step", subject=job.id, time=now, subject_kind=SubjectKind.JOB,
                     project=d.project,
                     payload={"job": job.id, "kind": job.kind.value, "subject": job.subject,
                              "from": job.state.value, "to": job.state.value,
                              "reason": reason})

    async def _perform(self, job: Job) -> Done:
        d = decisions.action_data(job)
        action, iid = d.action, d.instance
        inst = await self.cluster.get_instance(iid)
        if inst is None:
            return Done(False, f"instance {iid} no longer exists")
        if action == "ignore":
            return Done(True, f"ignored: instance {iid} left as it is")
        target = d.target
        await self.cluster.catch_up()
        why = await self.refusal(inst, action, target)
        if why:
            return Done(False, f"refused when it ran: {why}")
        try:
            if action == "evacuate":
                return await self._evacuate(job, inst, target)
            return await self._on_host(inst, action)
        except (VmhaError, TimeoutError) as exc:
            return Done(False, f"{action} of instance {iid} on {inst.host} failed: "
                               f"{exc or 'timeout'}")

    async def _on_host(self, inst: Instance, action: str) -> Done:
        host = str(inst.host)
        timeout = self.settings.evacuate_timeout_s
        if action == "restart":
            await asyncio.wait_for(self.cloud.stop_instance(inst, host), timeout)
            await asyncio.wait_for(self.cloud.start_instance(inst, host), timeout)
        elif action == "reset":
            await asyncio.wait_for(self.cloud.reset_instance(inst, host), timeout)
        elif action == "stop":
            await asyncio.wait_for(self.cloud.stop_instance(inst, host), timeout)
        elif action == "start":
            await asyncio.wait_for(self.cloud.start_instance(inst, host), timeout)
        else:  # rebuild: only offered when the cloud has it
            rebuild = getattr(self.cloud, "rebuild_instance")  # noqa: B009
            await asyncio.wait_for(rebuild(inst, host), timeout)
        etype, state, words = OUTCOME[action]
        return Done(True, f"{words} on {host}", host, state, etype)

    async def _evacuate(self, job: Job, inst: Instance, target: str | None) -> Done:
        """Move it (vmha.engine.moves); a failed attempt on a target of the
        planner's is planned again without that target."""
        source = str(inst.host)
        if target is not None and (why := self.mover.target_refusal(target)):
            return Done(False, f"refused when it ran: {why}")
        if self.cluster.hosts[source].state is HostState.MAINTENANCE:
            # the host still runs: stop it there first so it never runs twice
            await asyncio.wait_for(self.cloud.stop_instance(inst, source),
                                   self.settings.evacuate_timeout_s)
        resumed = decisions.action_data(job).moving_to  # a restart interrupted this move
        excluded: list[str] = []
        step = Step(False, f"no host of the segment may receive instance {inst.id} now")
        for _ in range(MOVE_TARGETS):
            chosen = resumed or target
            if chosen is None:
                placement = await self.mover.place(inst, tuple(excluded))
                if placement is None:
                    break
                chosen = placement.host
            job = await self._moving_to(job, inst, source, chosen)
            # started running, as asked (a recovery job's move may leave it stopped)
            step = await self.mover.start(inst, chosen, False, resume=resumed is not None)
            if step.ok:
                step = await self.mover.verify(inst, chosen, False)
            if step.ok:
                where = step.host or chosen
                return Done(True, f"now running on {where}", where, InstanceState.RUNNING,
                            "instance.evacuated")
            if step.handed_over or target is not None:
                break
            resumed = None
            excluded.append(chosen)
        if step.handed_over:  # it may run there: that host's recovery owns it now
            return Done(False, step.detail)
        return Done(False, step.detail, source, InstanceState.ERROR, "instance.recovery_failed")

    async def _moving_to(self, job: Job, inst: Instance, source: str, chosen: str) -> Job:
        """Record the target before the start, and the instance as moving."""
        data = decisions.action_data(job)
        if data.moving_to != chosen:
            job = await self._save(job, replace(job, data=replace(data, moving_to=chosen)), [])
        now, why = self.clock.now(), f"moving from {source} to {chosen} (action)"
        await self.cluster.change_instance(inst.id, lambda cur: (
            replace(cur, state=InstanceState.RECOVERING),
            [make_event(cur, "instance.evacuating", now, why, Severity.INFO, source=source,
                        target=chosen)]))
        return job

    async def _record(self, job: Job, result: Done, now: float) -> None:
        """The instance's new state and event, tagged with the job."""
        d = decisions.action_data(job)
        if not result.event_type:
            return
        severity = Severity.INFO if result.ok else Severity.ERROR

        def change(inst: Instance) -> tuple[Instance, list[Event]]:
            new = replace(inst, state=result.state or inst.state, host=result.host or inst.host)
            return new, [make_event(new, result.event_type, now,
                                    f"{result.detail} (job {job.id})", severity, job=job.id,
                                    action=d.action)]

        await self.cluster.change_instance(d.instance, change)
