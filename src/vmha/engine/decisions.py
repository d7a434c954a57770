"""Custom decisions at run time: ask, wait for the answer or the deadline, act.

Called by the Engine: `request` when a layer with a `custom` policy
fails (guest and app layers from the InstanceWatcher; the host layer from
the JobRunner, only once the host's fence is confirmed), `answer` for
`POST /v1/decisions/{token}`, `resume` at start-up. Each pending decision
is a `decision` job in the store (deadline included), so a restarted
controller keeps waiting for the same deadline and then applies the
fallback. One timer task per pending decision sleeps on the Clock.

Whoever settles first wins: the store's generation check makes a late
answer and the timeout exclusive (Conflict for the loser, which then
reports what was done). The rules are vmha.domain.decisions; the action
itself is an `action` job of vmha.engine.actions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from vmha.domain import decisions, restart
from vmha.domain.decisions import Request, Resolution
from vmha.domain.errors import Conflict, NotFound, VmhaError
from vmha.domain.model import Job, JobKind, JobState, Severity
from vmha.domain.policy import HAPolicy
from vmha.engine.actions import ActionRunner
from vmha.engine.state import Cluster
from vmha.engine.tasks import cancel_all
from vmha.ports import Clock, IdGen, list_all_async

log = logging.getLogger("vmha.engine.decisions")

# The restarts an instance's budget used within a window (the
# InstanceWatcher's, read from the store), for the budget that an `auto`
# fallback of the guest and app layers respects: (instance, now, window_s).
History = Callable[[str, float, float], Awaitable[list[float]]]


class DecisionKeeper:
    def __init__(self, cluster: Cluster, clock: Clock, ids: IdGen, actions: ActionRunner,
                 history: History) -> None:
        self.cluster = cluster
        self.clock = clock
        self.ids = ids
        self.actions = actions
        self.history = history
        # Token secrets come from the IdGen: uuid4 (122 random bits) in
        # production, deterministic in the simulator so its logs repeat.
        self.secret = ids.new_id
        self.timers: dict[str, asyncio.Task[None]] = {}
        # The app layer's `auto` fallback: open the instance's escalation job
        # for a settled decision (the Engine wires the InstanceWatcher's);
        # None when none was opened (one runs already, the instance is gone).
        self.escalate: Callable[[Job], Awaitable[Job | None]] | None = None

    # -- asking -----------------------------------------------------------------

    async def pending_for(self, instance_id: str) -> Job | None:
        for job in await self._pending():
            if job.subject == instance_id:
                return job
        return None

    async def request(self, req: Request, policy: HAPolicy) -> Job | None:
        """Publish `decision.requested` (once per instance at a time)."""
        if await self.pending_for(req.instance.id) is not None:
            log.info("instance %s already has a pending decision", req.instance.id)
            return None
        allowed = decisions.ALLOWED[req.layer]
        if req.layer == "host" and self.actions.can_rebuild:
            allowed = (*allowed, "rebuild")
        job, event = decisions.new_decision(self.ids.new_id(), self.secret(), req, policy,
                                            self.clock.now(), allowed)
        await self.cluster.durable()
        await self.cluster.io.create_job(job, [event])
        self._arm(job)
        return job

    async def resume(self) -> None:
        """After a restart: wait again for every pending decision's deadline."""
        for job in await self._pending():
            self._arm(job)

    async def _pending(self) -> list[Job]:
        jobs = await list_all_async(self.cluster.io.list_jobs, {
            "kind": JobKind.DECISION.value, "state": JobState.PENDING.value})
        return [j for j in jobs if j.state is JobState.PENDING]

    def _arm(self, job: Job) -> None:
        if job.id not in self.timers or self.timers[job.id].done():
            deadline = decisions.decision_data(job).deadline
            self.timers[job.id] = asyncio.ensure_future(self._timer(job.id, deadline))

    async def _timer(self, job_id: str, deadline: float) -> None:
        try:
            await self.clock.sleep(max(0.0, float(deadline) - self.clock.now()))
            await self._expire(job_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("decision %s: applying the fallback failed", job_id)
        finally:
            if self.timers.get(job_id) is asyncio.current_task():
                del self.timers[job_id]

    async def _expire(self, job_id: str) -> Job:
        job = await self.cluster.io.get_job(job_id)
        resolution = decisions.expire(job, self.clock.now())
        if resolution is None:
            return job
        try:
            return await self._settle(job, resolution, fallback=True)
        except Conflict:  # answered meanwhile (another process)
            return await self.cluster.io.get_job(job_id)

    # -- answering ----------------------------------------------------------------

    async def answer(self, token: str, action: str, who: str,
                     project: str | None = None) -> tuple[Job, Job | None]:
        """Settle the decision of `token` with `action`. NotFound for an
        unknown token (or another project's), Conflict when it is settled
        already (timed out: says what was done instead) or the action is
        refused now, ValidationError when the action is not allowed."""
        job_id, secret = decisions.split_token(token)
        try:
            job = await self.cluster.io.get_job(job_id)
        except NotFound:
            raise NotFound("decision", job_id) from None
        decisions.check_token(job, secret)
        if project is not None and decisions.decision_data(job).project != project:
            raise NotFound("decision", job_id)
        job = await self._expire(job_id)  # a late answer: the fallback goes first
        if job.state is JobState.PENDING and action in decisions.decision_data(job).allowed:
            await self._check_action(job, action)
        resolution = decisions.answer(job, action, who, self.clock.now())
        try:
            settled = await self._settle(job, resolution, fallback=False)
        except Conflict:
            raise Conflict(decisions.settled_message(
                await self.cluster.io.get_job(job_id))) from None
        action_id = decisions.decision_data(settled).action_job
        return settled, (await self.cluster.io.get_job(action_id) if action_id else None)

    async def superseded(self, action_job: Job) -> None:
        """A direct action settles the instance's pending decision."""
        job = await self.pending_for(action_job.subject)
        if job is None:
            return
        asked = decisions.action_data(action_job)
        res = decisions.supersede(job, asked.action, action_job.id, asked.by, self.clock.now())
        try:
            await self._settle(job, res, fallback=False)
        except Conflict:
            log.info("decision %s was settled meanwhile", job.id)

    async def _check_action(self, job: Job, action: str) -> None:
        inst = await self.cluster.get_instance(job.subject)
        if inst is None:
            raise NotFound("instance", job.subject)
        await self.cluster.catch_up()
        why = await self.actions.refusal(inst, action, None)
        if why:
            raise Conflict(f"{action} of instance {inst.id} refused: {why}; the decision "
                           "stays open: answer with another action")

    async def _settle(self, job: Job, res: Resolution, fallback: bool) -> Job:
        """Store the settled decision (Conflict if someone was first), then
        start its action and remember the action job on the decision."""
        await self.cluster.durable()
        saved = await self.cluster.io.save_job(res.job, job.generation, list(res.events))
        timer = self.timers.pop(job.id, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        if res.action is None:
            return saved
        if res.action == decisions.ESCALATE:  # the app layer's auto: its escalation job
            escalated = await self.escalate(saved) if self.escalate is not None else None
            if escalated is None:
                return saved
            return await self.cluster.io.save_job(
                decisions.with_action_job(saved, escalated.id), saved.generation)
        if fallback and not await self._budget_allows(saved):
            return saved
        try:
            action_job = await self.actions.submit(job.subject, res.action, None,
                                                   str(decisions.decision_data(saved).by),
                                                   decision=job.id)
        except VmhaError as exc:
            await self._report_failed(saved, f"{res.action} could not start: {exc.detail}")
            return saved
        linked = decisions.with_action_job(saved, action_job.id)
        return await self.cluster.io.save_job(linked, saved.generation)

    async def _budget_allows(self, job: Job) -> bool:
        """An `auto` fallback restart counts against the restart budget."""
        if decisions.decision_data(job).layer == "host":
            return True
        inst = await self.cluster.get_instance(job.subject)
        if inst is None:
            return False
        policy = await self.cluster.policy_of(inst, self.cluster.hosts.get(inst.host or ""))
        now = self.clock.now()
        used = await self.history(inst.id, now, policy.window_s)
        if len(used) >= policy.max_restarts:
            await self._report_failed(job, f"restart budget spent: {len(used)} restarts in "
                                     f"{policy.window_s:g} s (max {policy.max_restarts}); "
                                     "the fallback does nothing")
            return False
        return True  # the fallback's action job counts from now on

    async def _report_failed(self, job: Job, reason: str) -> None:
        inst = await self.cluster.get_instance(job.subject)
        if inst is None:
            return
        event = restart.make_event(inst, "instance.recovery_failed", self.clock.now(),
                                   reason, Severity.ERROR, decision=job.id)
        self.cluster.append([event])  # the instance itself does not change

    async def stop(self) -> None:
        await cancel_all(self.timers)
