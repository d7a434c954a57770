"""Instance actions (restart, reset, stop, start, evacuate, rebuild, ignore)
as durable jobs, performed through the Cloud port.

Called by the Controller for `POST /v1/instances/{id}/actions` and for
settled custom decisions (vmha.engine.decisions). `submit` checks the
safety rules of `vmha.domain.decisions.refusal` (Conflict with the reason
when refused), stores an `action` job with its `job.started` event and
runs it in a task; `resume` restarts the unfinished ones after a
controller restart (every Cloud call is idempotent, so a step that was
interrupted is simply performed again). The rules are checked again when
the job runs: the world may have changed since it was accepted.

An evacuation never starts the instance elsewhere unless its host is
fenced or in maintenance; from a host in maintenance (still running) the
instance is stopped there first. Decisions about what is allowed live in
the domain; this module only does I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from vmha.domain import decisions, planner
from vmha.domain.errors import Conflict, NotFound, VmhaError
from vmha.domain.model import (
    Event,
    HostState,
    Instance,
    InstanceState,
    Job,
    JobKind,
    RecoveryMethod,
    Severity,
    SubjectKind,
    finish_step,
    start_step,
)
from vmha.domain.restart import make_event
from vmha.engine.settings import ControllerSettings
from vmha.engine.state import Cluster, list_all
from vmha.engine.tasks import cancel_all
from vmha.ports import Clock, Cloud, IdGen

log = logging.getLogger("vmha.engine.actions")

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
                 ids: IdGen, cloud: Cloud, moving: Callable[[Instance], str]) -> None:
        self.settings = settings
        self.cluster = cluster
        self.clock = clock
        self.ids = ids
        self.cloud = cloud
        self.moving = moving  # id of a host-recovery job moving the instance, or ""
        self.tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def can_rebuild(self) -> bool:
        return callable(getattr(self.cloud, "rebuild_instance", None))

    # -- accepting ------------------------------------------------------------

    def refusal(self, inst: Instance, action: str, target: str | None) -> str:
        host = self.cluster.hosts.get(inst.host or "")
        tgt = self.cluster.hosts.get(target) if target else None
        return decisions.refusal(action, inst, host, tgt, target, self.moving(inst),
                                 self.can_rebuild)

    def submit(self, instance_id: str, action: str, target: str | None, by: str,
               decision: str | None = None) -> Job:
        """Check, store and start an action job; Conflict says why not."""
        decisions.check_action_name(action)
        self.cluster.refresh()  # hosts changed through the API must count now
        inst = self.cluster.get_instance(instance_id)
        if inst is None:
            raise NotFound("instance", instance_id)
        if target is not None and action != "evacuate":
            raise Conflict(f"a target host only makes sense for evacuate, not {action}")
        why = self.refusal(inst, action, target) or self._busy(instance_id)
        if why:
            raise Conflict(f"{action} of instance {instance_id} refused: {why}")
        job, event = decisions.new_action_job(self.ids.new_id(), inst, action, target, by,
                                              self.clock.now(), decision)
        self.cluster.store.create_job(job, [event])
        self.cluster.note_sent([event])
        self.start(job.id)
        return job

    def _busy(self, instance_id: str) -> str:
        """One action at a time per instance: two could start it twice."""
        jobs = list_all(self.cluster.store.list_jobs,
                        {"kind": JobKind.ACTION.value, "subject": instance_id})
        for job in jobs:
            if not job.finished:
                return (f"its action job {job.id} ({job.data['action']}) is not finished; "
                        "wait for it (vmha job show)")
        return ""

    def start(self, job_id: str) -> None:
        if job_id in self.tasks and not self.tasks[job_id].done():
            return
        self.tasks[job_id] = asyncio.ensure_future(self._run(job_id))

    def resume(self) -> None:
        jobs = list_all(self.cluster.store.list_jobs, {"kind": JobKind.ACTION.value})
        for job in jobs:
            if not job.finished:
                self.start(job.id)

    async def stop(self) -> None:
        await cancel_all(self.tasks)

    # -- performing -------------------------------------------------------------

    async def _run(self, job_id: str) -> None:
        try:
            job = self.cluster.store.get_job(job_id)
            if job.finished:
                return
            action = str(job.data["action"])
            now = self.clock.now()
            job = self._save(job, start_step(job, action, now), [self._step_event(job, now)])
            await self.cluster.flush()
            result = await self._perform(job)
            now = self.clock.now()
            finished = finish_step(job, action, now, ok=result.ok, detail=result.detail)
            done, event = decisions.finish_action(finished, result.ok, result.detail, now)
            self._save(job, done, [event])
            self._record(job, result, now)
            await self.cluster.flush()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("action job %s failed", job_id)
        finally:
            if self.tasks.get(job_id) is asyncio.current_task():
                del self.tasks[job_id]

    def _save(self, before: Job, after: Job, events: list[Event]) -> Job:
        saved = self.cluster.store.save_job(after, before.generation, events)
        self.cluster.note_sent(events)
        return saved

    def _step_event(self, job: Job, now: float) -> Event:
        d = job.data
        where = f" to {d['target']}" if d.get("target") else ""
        reason = f"performing {d['action']} of instance {d['instance']}{where}"
        return Event(type="job.step", subject=job.id, time=now, subject_kind=SubjectKind.JOB,
                     project=str(d.get("project") or ""),
                     payload={"job": job.id, "kind": job.kind.value, "subject": job.subject,
                              "from": job.state.value, "to": job.state.value,
                              "reason": reason})

    async def _perform(self, job: Job) -> Done:
        action, iid = str(job.data["action"]), str(job.data["instance"])
        inst = self.cluster.get_instance(iid)
        if inst is None:
            return Done(False, f"instance {iid} no longer exists")
        if action == "ignore":
            return Done(True, f"ignored: instance {iid} left as it is")
        target = job.data.get("target")
        self.cluster.refresh()
        why = self.refusal(inst, action, target)
        if why:
            return Done(False, f"refused when it ran: {why}")
        try:
            if action == "evacuate":
                return await self._evacuate(inst, target)
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

    async def _evacuate(self, inst: Instance, target: str | None) -> Done:
        source = str(inst.host)
        timeout = self.settings.evacuate_timeout_s
        chosen = target or self._place(inst)
        if chosen is None:
            return Done(False, f"no host of the segment has room for instance {inst.id}")
        if self.cluster.hosts[source].state is HostState.MAINTENANCE:
            # the host still runs: stop it there first so it never runs twice
            await asyncio.wait_for(self.cloud.stop_instance(inst, source), timeout)
        event = make_event(inst, "instance.evacuating", self.clock.now(),
                           f"moving from {source} to {chosen} (action)", Severity.INFO,
                           source=source, target=chosen)
        self.cluster.update_instance(replace(inst, state=InstanceState.RECOVERING), [event])
        await self.cluster.flush()
        try:
            await asyncio.wait_for(self.cloud.start_instance(inst, chosen), timeout)
        except (VmhaError, TimeoutError) as exc:
            await self._undo(inst, chosen)
            return Done(False, f"start on {chosen} failed: {exc or 'timeout'}", source,
                        InstanceState.ERROR, "instance.recovery_failed")
        return Done(True, f"now running on {chosen}", chosen, InstanceState.RUNNING,
                    "instance.evacuated")

    async def _undo(self, inst: Instance, target: str) -> None:
        try:
            await asyncio.wait_for(self.cloud.stop_instance(inst, target),
                                   self.settings.evacuate_timeout_s)
        except (VmhaError, TimeoutError) as exc:
            log.warning("instance %s: could not make sure it is stopped on %s: %s",
                        inst.id, target, exc)

    def _place(self, inst: Instance) -> str | None:
        """A target chosen like automatic recovery does (the planner)."""
        host = self.cluster.hosts[str(inst.host)]
        segment = self.cluster.segments.get(host.segment)
        method = segment.recovery_method if segment else RecoveryMethod.AUTO
        placed = [x for x in self.cluster.instances() if x.id != inst.id]
        candidates = planner.candidates_from(self.cluster.hosts_of(host.segment), placed,
                                             exclude=(host.name,))
        plan = planner.plan([inst], candidates, method,
                            {inst.id: self.cluster.policy_of(inst, host)})
        return plan.placements[0].host if plan.placements else None

    def _record(self, job: Job, result: Done, now: float) -> None:
        """The instance's new state and event, tagged with the job."""
        inst = self.cluster.get_instance(str(job.data["instance"]))
        if inst is None or not result.event_type:
            return
        new = replace(inst, state=result.state or inst.state, host=result.host or inst.host)
        severity = Severity.INFO if result.ok else Severity.ERROR
        event = make_event(new, result.event_type, now, f"{result.detail} (job {job.id})",
                           severity, job=job.id, action=job.data["action"])
        self.cluster.update_instance(new, [event])
