"""Instance and guest failure handling: events from agents -> restarts.

Called by the Controller for every `instance_event` an agent reports. The
decision is `vmha.domain.restart.instance_event`; this module records the
new state and events, and runs delayed restarts through the Cloud port
(one pending restart per instance, cancelled when the instance comes back
by itself). Restart history is kept in memory: a new controller starts
with a fresh budget (documented limitation) and restarts, after the first
backoff, every instance still recorded as crashed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from vmha.domain import restart
from vmha.domain.errors import ValidationError, VmhaError
from vmha.domain.model import HostState, Instance, InstanceState, Severity
from vmha.engine.settings import ControllerSettings
from vmha.engine.state import Cluster
from vmha.engine.tasks import cancel_all
from vmha.ports import Clock, Cloud

log = logging.getLogger("vmha.engine.instances")


class InstanceWatcher:
    def __init__(self, settings: ControllerSettings, cluster: Cluster, clock: Clock,
                 cloud: Cloud) -> None:
        self.settings = settings
        self.cluster = cluster
        self.clock = clock
        self.cloud = cloud
        self.history: dict[str, list[float]] = {}
        self.pending: dict[str, asyncio.Task[None]] = {}
        # custom policy: (instance, layer, reason) -> offer a decision (Controller)
        self.on_ask: Callable[[Instance, str, str], None] | None = None

    async def event(self, instance_id: str, kind: str, detail: str = "") -> None:
        if kind not in restart.INSTANCE_EVENT_KINDS:
            allowed = ", ".join(sorted(restart.INSTANCE_EVENT_KINDS))
            raise ValidationError("kind", f"{kind!r} is not one of {allowed}")
        inst = self.cluster.get_instance(instance_id)
        if inst is None:
            log.warning("event %s for unknown instance %s ignored", kind, instance_id)
            return
        now = self.clock.now()
        host = self.cluster.hosts.get(inst.host or "")
        policy = self.cluster.policy_of(inst, host)
        history = self.history.get(instance_id, [])
        reaction = restart.instance_event(inst, kind, history, now, self.settings.backoff(),
                                          policy, detail)
        if reaction.cancel_restart:
            self._cancel(instance_id)
        busy = instance_id in self.pending
        if reaction.state is not None or reaction.events:
            state = reaction.state or inst.state
            inst = self.cluster.update_instance(replace(inst, state=state),
                                                list(reaction.events))
        if reaction.ask is not None and self.on_ask is not None and reaction.events:
            self.on_ask(inst, reaction.ask, str(reaction.events[0].payload["reason"]))
        if reaction.restart_in is not None and not busy:
            self.history[instance_id] = [*restart.recent(history, now, policy.window_s), now]
            self.pending[instance_id] = asyncio.ensure_future(
                self._restart_later(instance_id, reaction.restart_in, reaction.restart_kind))
        await self.cluster.flush()

    def resume(self) -> None:
        """After a controller restart: instances recorded as crashed whose
        restart was pending in the old controller get one (fresh budget)."""
        now = self.clock.now()
        for inst in self.cluster.instances():
            host = self.cluster.hosts.get(inst.host or "")
            if inst.state is not InstanceState.CRASHED or host is None:
                continue
            if not self.cluster.policy_of(inst, host).guest.recovers:
                continue
            self.history[inst.id] = [now]
            self.pending[inst.id] = asyncio.ensure_future(
                self._restart_later(inst.id, self.settings.backoff().delay(0), "restart"))

    def _cancel(self, instance_id: str) -> None:
        task = self.pending.pop(instance_id, None)
        if task is not None:
            task.cancel()

    async def _restart_later(self, instance_id: str, delay: float, kind: str) -> None:
        try:
            await self.clock.sleep(delay)
            await self._restart(instance_id, kind)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("restart of instance %s failed", instance_id)
        finally:
            if self.pending.get(instance_id) is asyncio.current_task():
                del self.pending[instance_id]

    async def _restart(self, instance_id: str, kind: str) -> None:
        inst = self.cluster.get_instance(instance_id)
        if inst is None or inst.host is None:
            return
        host = self.cluster.hosts.get(inst.host)
        if host is None or host.state is not HostState.UP:
            log.info("instance %s: host %s is not up; its host recovery owns it",
                     instance_id, inst.host)
            return
        now = self.clock.now()
        try:
            if kind == "reset":
                await self.cloud.reset_instance(inst, inst.host)
            else:
                await self.cloud.stop_instance(inst, inst.host)
                await self.cloud.start_instance(inst, inst.host)
        except VmhaError as exc:
            self._record(inst, InstanceState.ERROR, "instance.recovery_failed",
                         f"{kind} on {inst.host} failed: {exc}", Severity.ERROR)
            return
        count = len(self.history.get(instance_id, []))
        policy = self.cluster.policy_of(inst, host)
        what = "reset" if kind == "reset" else "restarted"
        self._record(inst, InstanceState.RUNNING, "instance.restarted",
                     f"{what} on {inst.host} (restart {count} of {policy.max_restarts} "
                     f"in {policy.window_s:g} s)", Severity.INFO, at=now)

    def _record(self, inst: Instance, state: InstanceState, etype: str, reason: str,
                severity: Severity, at: float | None = None) -> None:
        now = self.clock.now() if at is None else at
        current = self.cluster.get_instance(inst.id) or inst
        event = restart.make_event(current, etype, now, reason, severity)
        self.cluster.update_instance(replace(current, state=state), [event])

    def restarts(self, instance_id: str) -> int:
        return len(self.history.get(instance_id, []))

    async def stop(self) -> None:
        await cancel_all(self.pending)
