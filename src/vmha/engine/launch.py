"""First start of an instance vmha defines itself (libvirt mode).

`POST /v1/instances` with a spec records the instance as `building`; the
Controller's `launch` then places it (its given host, else the schedulable
host of the segment with the fewest instances), has the host's agent define
and start it through the Cloud port, and waits until the Cloud port reads
it as running (for a guest with a health URL: its application answers).
A controller that restarts launches again every instance still recorded as
`building`: starting is idempotent. The outcome is recorded on the
instance; a failed launch publishes `instance.recovery_failed` with the
reason and leaves the instance in `error`.

Called by the Controller only; decisions about failures stay in
`vmha.domain.restart` and the recovery jobs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from vmha.domain.errors import VmhaError
from vmha.domain.model import Host, HostState, Instance, InstanceState, Severity
from vmha.domain.restart import make_event
from vmha.engine.settings import ControllerSettings
from vmha.engine.state import Cluster
from vmha.engine.tasks import cancel_all
from vmha.ports import Clock, Cloud

log = logging.getLogger("vmha.engine.launch")


def pick_host(cluster: Cluster, segment: str | None) -> Host | None:
    """The schedulable host (of `segment` when given) carrying the fewest instances."""
    hosts = [h for h in cluster.hosts.values()
             if h.schedulable and (segment is None or h.segment == segment)]
    if not hosts:
        return None
    load = {h.name: len(cluster.instances(h.name)) for h in hosts}
    return min(hosts, key=lambda h: (load[h.name], h.name))


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

    def resume(self) -> None:
        for inst in self.cluster.instances():
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
            await self.cluster.flush()

    async def _launch(self, instance_id: str) -> None:
        inst = self.cluster.get_instance(instance_id)
        if inst is None or inst.spec is None:
            return
        host = await self._host_for(inst)
        if host is None:
            self._failed(inst, f"no up host to start it on (asked for {inst.host or 'any'})")
            return
        if inst.host != host.name:
            inst = self.cluster.update_instance(replace(inst, host=host.name))
        try:
            await asyncio.wait_for(self.cloud.start_instance(inst, host.name),
                                   self.settings.evacuate_timeout_s)
        except (VmhaError, TimeoutError) as exc:
            self._failed(inst, f"start on {host.name} failed: {exc or 'timeout'}")
            return
        if await self._running(inst, host.name):
            current = self.cluster.get_instance(inst.id) or inst
            if current.state is InstanceState.BUILDING:
                self.cluster.update_instance(replace(current, state=InstanceState.RUNNING))
            log.info("instance %s: launched on %s", inst.name, host.name)
        else:
            self._failed(inst, f"not running on {host.name} after "
                               f"{self.settings.verify_timeout_s:g} s")

    async def _host_for(self, inst: Instance) -> Host | None:
        """Its host (or the least loaded one) once up; a host that registered
        a moment ago may not be loaded yet, so look again for a while."""
        deadline = self.clock.now() + self.settings.verify_timeout_s
        while True:
            host = (self.cluster.hosts.get(inst.host) if inst.host
                    else pick_host(self.cluster, None))
            if host is not None and host.state is HostState.UP:
                return host
            if self.clock.now() >= deadline:
                return None
            await self.clock.sleep(self.settings.verify_poll_s)
            self.cluster.refresh()

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

    def _failed(self, inst: Instance, reason: str) -> None:
        log.warning("instance %s: launch failed: %s", inst.name, reason)
        current = self.cluster.get_instance(inst.id) or inst
        event = make_event(current, "instance.recovery_failed", self.clock.now(),
                           f"launch failed: {reason}", Severity.ERROR)
        self.cluster.update_instance(replace(current, state=InstanceState.ERROR), [event])
