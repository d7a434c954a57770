"""First start of an instance vmha defines itself (libvirt mode).

`POST /v1/instances` with a spec records the instance as `building`; the
Engine's `Launch` command then places it (its given host, else the schedulable
host of the segment with the fewest instances), never beside a member of its
anti-affinity group (a given host that holds one, or no host without one:
`instance.unplaceable` with the reason, state `error`), has the host's agent define
and start it through the Cloud port, and waits until the Cloud port reads
it as running (for a guest with a health URL: its application answers).
A controller that restarts launches again every instance still recorded as
`building`: starting is idempotent. The outcome is recorded on the
instance; a failed launch publishes `instance.recovery_failed` with the
reason and leaves the instance in `error`.

Called by the Engine only; decisions about failures stay in
`vmha.domain.restart` and the recovery jobs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import replace

from vmha.domain.errors import VmhaError
from vmha.domain.model import Host, HostState, Instance, InstanceState, Severity
from vmha.domain.restart import make_event
from vmha.engine.settings import ControllerSettings
from vmha.engine.state import Cluster
from vmha.engine.tasks import cancel_all
from vmha.ports import Clock, Cloud

log = logging.getLogger("vmha.engine.launch")


def _member_among(inst: Instance, others: Iterable[Instance]) -> Instance | None:
    """Another member of `inst`'s anti-affinity group among `others`."""
    if inst.group_key is None:
        return None
    return next((o for o in others if o.id != inst.id and o.group_key == inst.group_key), None)


async def group_member_on(cluster: Cluster, inst: Instance, host: str) -> Instance | None:
    """Another member of `inst`'s anti-affinity group recorded on `host`."""
    if inst.group_key is None:
        return None
    return _member_among(inst, await cluster.instances(host))


async def pick_host(cluster: Cluster, segment: str | None, inst: Instance | None = None
                    ) -> Host | None:
    """The schedulable host (of `segment` when given) carrying the fewest
    instances, and none of `inst`'s anti-affinity group (the instances
    read once, not once per host)."""
    on: dict[str, list[Instance]] = {}
    for other in await cluster.instances():
        on.setdefault(other.host or "", []).append(other)
    hosts = [h for h in cluster.hosts.values()
             if h.schedulable and (segment is None or h.segment == segment)
             and (inst is None or _member_among(inst, on.get(h.name, ())) is None)]
    if not hosts:
        return None
    return min(hosts, key=lambda h: (len(on.get(h.name, ())), h.name))


class Launcher:
    def __init__(self, settings: ControllerSettings, cluster: Cluster, clock: Clock,
                 cloud: Cloud) -> None:
        self.settings = settings
        self.cluster = cluster
        self.clock = clock
        self.cloud = cloud
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def launch(self, instance_id: str) -> None:
        """Start launching (once at a time per instance); returns at once."""
        task = self.tasks.get(instance_id)
        if task is None or task.done():
            self.tasks[instance_id] = asyncio.ensure_future(self._run(instance_id))

    async def resume(self) -> None:
        for inst in await self.cluster.instances():
            if inst.state is InstanceState.BUILDING and inst.spec is not None:
                self.launch(inst.id)

    async def stop(self) -> None:
        await cancel_all(self.tasks)

    async def _run(self, instance_id: str) -> None:
        try:
            await self._launch(instance_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("launch of instance %s failed", instance_id)
        finally:
            if self.tasks.get(instance_id) is asyncio.current_task():
                del self.tasks[instance_id]

    async def _launch(self, instance_id: str) -> None:
        inst = await self.cluster.get_instance(instance_id)
        if inst is None or inst.spec is None:
            return
        why = await self._group_refusal(inst)
        if why:
            await self._failed(inst, why, "instance.unplaceable")
            return
        host = await self._host_for(inst)
        if host is None:
            why = await self._group_refusal(inst)
            await self._failed(inst, why or f"no up host to start it on (asked for "
                                            f"{inst.host or 'any'})",
                               "instance.unplaceable" if why else "instance.recovery_failed")
            return
        if inst.host != host.name:
            placed = await self.cluster.change_instance(inst.id, lambda cur: (
                replace(cur, host=host.name), []))
            if placed is None:
                return  # deleted meanwhile
            inst = placed
        try:
            await asyncio.wait_for(self.cloud.start_instance(inst, host.name),
                                   self.settings.evacuate_timeout_s)
        except (VmhaError, TimeoutError) as exc:
            await self._failed(inst, f"start on {host.name} failed: {exc or 'timeout'}")
            return
        if await self._running(inst, host.name):
            await self.cluster.change_instance(inst.id, lambda cur: (
                replace(cur, state=InstanceState.RUNNING), [])
                if cur.state is InstanceState.BUILDING else None)
            log.info("instance %s: launched on %s", inst.name, host.name)
        else:
            await self._failed(inst, f"not running on {host.name} after "
                                     f"{self.settings.verify_timeout_s:g} s")

    async def _host_for(self, inst: Instance) -> Host | None:
        """Its host (or the least loaded one) once up; a host that registered
        a moment ago may not be loaded yet, so look again for a while."""
        deadline = self.clock.now() + self.settings.verify_timeout_s
        while True:
            host = (self.cluster.hosts.get(inst.host) if inst.host
                    else await pick_host(self.cluster, None, inst))
            if host is not None and host.state is HostState.UP:
                return host
            if self.clock.now() >= deadline:
                return None
            await self.clock.sleep(self.settings.verify_poll_s)
            await self.cluster.catch_up()

    async def _running(self, inst: Instance, host: str) -> bool:
        deadline = self.clock.now() + self.settings.verify_timeout_s
        while self.clock.now() < deadline:
            try:
                state = await asyncio.wait_for(self.cloud.instance_state(inst, host),
                                               self.settings.verify_timeout_s)
            except (VmhaError, TimeoutError):
                state = None
            if state is InstanceState.RUNNING:
                return True
            await self.clock.sleep(self.settings.verify_poll_s)
        return False

    async def _group_refusal(self, inst: Instance) -> str:
        """Why `inst` may not start where it is asked to (its anti-affinity
        group), "" when it may. Without a host: only when every schedulable
        host already holds a member."""
        group = inst.anti_affinity_group
        if group is None:
            return ""
        if inst.host:
            other = await group_member_on(self.cluster, inst, inst.host)
            if other is None:
                return ""
            return (f"anti-affinity group {group}: {other.name} ({other.id}) is already on "
                    f"{inst.host}; give it another host")
        if any(h.schedulable for h in self.cluster.hosts.values()) and \
                await pick_host(self.cluster, None, inst) is None:
            return f"anti-affinity group {group}: every up host already holds a member"
        return ""

    async def _failed(self, inst: Instance, reason: str,
                      etype: str = "instance.recovery_failed") -> None:
        log.warning("instance %s: launch failed: %s", inst.name, reason)
        now = self.clock.now()
        await self.cluster.change_instance(inst.id, lambda cur: (
            replace(cur, state=InstanceState.ERROR),
            [make_event(cur, etype, now, f"launch failed: {reason}", Severity.ERROR)]))
