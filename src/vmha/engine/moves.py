"""Moving one instance to another host: the one path of every evacuation.

Used by the host-recovery job runner (vmha.engine.jobs: its `Evacuate` and
`VerifyInstance` intents) and by an operator's or a decision's `evacuate`
action (vmha.engine.actions), so both get the same safety handling:

- a target is picked among hosts that may receive instances now
  (`HostMonitor.target_ok`: heartbeats current, re-enabled by the cloud),
  by the planner, as automatic recovery does (`place`);
- the start is idempotent and, when resumed after a restart, first asks
  whether the instance already runs on the recorded target, so an
  interrupted move never starts it a second time (`start`);
- the move counts only once the cloud says it runs (or is stopped, as
  wanted) on the target (`verify`); a target that fails meanwhile hands
  the instance to its own recovery, and a start given up on is undone on
  the target (stopped), or left to that target's recovery when it cannot
  confirm the stop (`undo`); when the cloud's "running" waited for the
  application (`AppChecked`), the step's detail says so (the timeline's
  app_answering phase);
- every call that changes the cloud goes through the engine's cloud, which
  for a leader checks its lease first (vmha.controller.authority).

What to do with a failed attempt (plan again without that target, or give
up) is the caller's: the job's domain (`recovery.apply`), or the action's
bounded retries. No store writes here: callers record the move.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from vmha.domain import planner
from vmha.domain.errors import VmhaError
from vmha.domain.model import HostState, Instance, InstanceState, RecoveryMethod
from vmha.domain.policy import HAPolicy
from vmha.domain.timeline import APP_ANSWERS
from vmha.engine.detection import HostMonitor
from vmha.engine.settings import ControllerSettings
from vmha.engine.state import Cluster
from vmha.ports import AppChecked, Clock, Cloud, Scheduling

T = TypeVar("T")


@dataclass(frozen=True)
class Step:
    """The outcome of one step of a move. `handed_over`: the target failed
    or cannot confirm the instance is stopped there; the instance belongs
    to that target's recovery now. `host`: where the cloud's scheduler put it."""

    ok: bool
    detail: str
    handed_over: bool = False
    host: str = ""


class Mover:
    """Places, starts, verifies and undoes one instance's move."""

    def __init__(self, settings: ControllerSettings, cluster: Cluster, clock: Clock,
                 cloud: Cloud, monitor: HostMonitor) -> None:
        self.settings = settings
        self.cluster = cluster
        self.clock = clock
        self.cloud = cloud
        self.monitor = monitor

    async def _bounded(self, call: Awaitable[T], timeout: float) -> T:
        return await asyncio.wait_for(call, timeout)

    # -- placing --------------------------------------------------------------

    def plan(self, todo: list[Instance], placed: list[Instance], policies: dict[str, HAPolicy],
             segment: str, exclude: tuple[str, ...]) -> planner.Plan:
        """Targets for `todo` among the segment's hosts that may receive
        instances now, or the cloud's scheduler when it picks."""
        if self.settings.evacuation_target == planner.SCHEDULER:  # the cloud picks
            ids = frozenset(x.id for x in todo)
            refused = ids if planner.SCHEDULER in exclude else frozenset()
            return planner.plan_by_cloud(todo, policies, refused)
        seg = self.cluster.segments.get(segment)
        method = seg.recovery_method if seg else RecoveryMethod.AUTO
        candidates = planner.candidates_from(self.cluster.hosts_of(segment), placed,
                                             exclude=exclude)
        candidates = [c for c in candidates if self.monitor.target_ok(c.host.name)]
        return planner.plan(todo, candidates, method, policies)

    async def place(self, inst: Instance, exclude: tuple[str, ...]) -> planner.Placement | None:
        """One instance's target, away from its host and `exclude`."""
        host = self.cluster.hosts.get(inst.host or "")
        if host is None:
            return None
        placed = [x for x in await self.cluster.instances() if x.id != inst.id]
        policy = await self.cluster.policy_of(inst, host)
        plan = self.plan([inst], placed, {inst.id: policy}, host.segment,
                         (host.name, *exclude))
        return plan.placements[0] if plan.placements else None

    def target_refusal(self, target: str) -> str:
        """Why a named target may not receive instances now ("" = it may)."""
        if target == planner.SCHEDULER:
            return ""
        host = self.cluster.hosts.get(target)
        if host is None:
            return f"target host {target} no longer exists"
        if not host.schedulable:
            return f"target host {target} is {host.state.value}: not schedulable"
        if not self.monitor.target_ok(target):
            return (f"target host {target} is not sending heartbeats (or its compute "
                    "service is not enabled again yet)")
        return ""

    # -- moving ---------------------------------------------------------------

    async def start(self, inst: Instance, target: str, stopped: bool, resume: bool) -> Step:
        """Start (or define stopped) `inst` on `target`; resumed, first ask
        whether it is already there."""
        want = InstanceState.STOPPED if stopped else InstanceState.RUNNING
        if resume:
            try:
                state = await self._bounded(self.cloud.instance_state(inst, target),
                                            self.settings.evacuate_timeout_s)
                if state is want:
                    return Step(True, f"already {want.value} on {target}")
            except (VmhaError, TimeoutError):
                pass  # cannot tell: starting is idempotent anyway
        try:
            await self._bounded(self.cloud.start_instance(inst, target, stopped),
                                self.settings.evacuate_timeout_s)
        except (VmhaError, TimeoutError) as exc:
            return await self.undo(inst, target, f"start on {target} failed: "
                                                 f"{exc or 'timeout'}")
        return Step(True, f"started on {target}")

    async def undo(self, inst: Instance | None, target: str, why: str) -> Step:
        """Make sure the instance is not left running on a target we give up
        on; if that cannot be proven, the target's own recovery owns it."""
        if target == planner.SCHEDULER:  # the cloud keeps its one copy: nothing to stop
            return Step(False, why)
        host = self.cluster.hosts.get(target)
        if inst is not None and host is not None and host.state is HostState.UP:
            try:
                await self._bounded(self.cloud.stop_instance(inst, target),
                                    self.settings.evacuate_timeout_s)
                return Step(False, why)
            except (VmhaError, TimeoutError):
                pass
        return Step(False, f"{why}; {target} cannot confirm it is stopped, "
                           f"left to {target}'s recovery", handed_over=True)

    async def verify(self, inst: Instance, target: str, stopped: bool) -> Step:
        """Until the cloud says it runs (or is stopped) on `target`; a target
        that fails meanwhile hands it over; an error or the timeout undoes it."""
        want = InstanceState.STOPPED if stopped else InstanceState.RUNNING
        deadline = self.clock.now() + self.settings.verify_timeout_s
        while True:
            host = self.cluster.hosts.get(target)
            if target != planner.SCHEDULER and (host is None or host.state is not HostState.UP):
                return Step(False, f"target {target} failed during evacuation; "
                                   "its own recovery takes over", handed_over=True)
            try:
                state = await self._bounded(self.cloud.instance_state(inst, target),
                                            self.settings.verify_timeout_s)
            except (VmhaError, TimeoutError):
                state = None
            if state is want:
                return await self._verified(inst, target, want)
            if state is InstanceState.ERROR:  # the cloud says the move failed: re-plan now
                return await self.undo(inst, target, f"the cloud reports its move to "
                                                     f"{target} failed")
            if self.clock.now() >= deadline:
                return await self.undo(inst, target, f"not {want.value} on {target} after "
                                                     f"{self.settings.verify_timeout_s:g} s")
            await self.clock.sleep(self.settings.verify_poll_s)

    async def _verified(self, inst: Instance, target: str, state: InstanceState) -> Step:
        """It runs (or is stopped) as wanted; a move left to the cloud's
        scheduler also says where it landed."""
        if target != planner.SCHEDULER or not isinstance(self.cloud, Scheduling):
            answering = (state is InstanceState.RUNNING and isinstance(self.cloud, AppChecked)
                         and self.cloud.checks_app(inst))
            return Step(True, f"{state.value} on {target}"
                              + (f"; {APP_ANSWERS}" if answering else ""))
        try:
            host = await self._bounded(self.cloud.placed_on(inst), self.settings.verify_timeout_s)
        except (VmhaError, TimeoutError):
            host = None  # the inventory sync records it from the cloud later
        return Step(True, f"{state.value} on {host or 'a host the cloud picked'}",
                    host=host or "")
