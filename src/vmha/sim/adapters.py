"""The controller's ports, backed by the simulated world.

- `SimFencer(method)`: a power-fencing method talking to the host's BMC.
  `ok`: status reads take `bmc_status_s`; a power-off is accepted after
  `bmc_accept_s` and the host goes dark 1.0-1.8 s later (LAB-NOTES: 1.2-2 s
  in all). `unreachable`: every call fails with TemporaryError after
  `bmc_timeout_s`. `stuck-on`: power-off is accepted but does nothing, and
  status keeps saying ON (even after the host died another way: the BMC's
  power control and its reading are both stuck). The BMC does not depend
  on the host's network.
- `SimCloud`: the hypervisors, reached through the host's agent over the
  controller link. A powered-off host, a dead agent or a cut link makes a
  call fail with TemporaryError after `cloud_timeout_s`. Starting an
  instance takes `vm_start_s`; it is idempotent, and once the hypervisor
  accepted it, it completes even if the caller gives up (is cancelled).
- `SimProber`: asks `via`'s agent whether it reaches `target`'s agent
  (three tries). None when `via` does not answer within the timeout.

Called by the controller through the ports; they never touch the store.
"""

from __future__ import annotations

import asyncio

from vmha.domain.model import Host, Instance, InstanceState
from vmha.errors import TemporaryError
from vmha.ports import PowerState
from vmha.sim.network import CONTROLLER
from vmha.sim.world import World


class SimFencer:
    def __init__(self, world: World, method: str) -> None:
        self.method = method
        self._world = world

    async def _reach_bmc(self, host: Host) -> None:
        sim = self._world.sim
        if self._world.hosts[host.name].bmc == "unreachable":
            await asyncio.sleep(sim.bmc_timeout_s)
            raise TemporaryError(
                f"{self.method}: BMC of {host.name} did not answer within {sim.bmc_timeout_s} s",
                delay_s=sim.bmc_timeout_s,
            )

    async def power_status(self, host: Host) -> PowerState:
        await self._reach_bmc(host)
        await asyncio.sleep(self._world.sim.bmc_status_s)
        h = self._world.hosts[host.name]
        # A stuck BMC keeps reporting the power state it cannot change.
        return PowerState.ON if h.powered or h.bmc == "stuck-on" else PowerState.OFF

    async def power_off(self, host: Host) -> None:
        await self._reach_bmc(host)
        await asyncio.sleep(self._world.sim.bmc_accept_s)
        self._world.bmc_power_off(host.name, self.method)

    async def power_on(self, host: Host) -> None:
        await self._reach_bmc(host)
        await asyncio.sleep(self._world.sim.bmc_accept_s)
        self._world.power_on(host.name, f"bmc {self.method}")


class SimCloud:
    def __init__(self, world: World) -> None:
        self._world = world

    async def _reach(self, host: str, what: str) -> None:
        world = self._world
        if host not in world.hosts:
            raise TemporaryError(f"{what}: no hypervisor {host!r}")
        if world.answers(host) and world.net.path_up(CONTROLLER, host):
            await asyncio.sleep(2 * world.net.latency(CONTROLLER, host))
            return
        await asyncio.sleep(world.sim.cloud_timeout_s)
        raise TemporaryError(
            f"{what}: the agent on {host} did not answer within {world.sim.cloud_timeout_s} s",
            delay_s=1.0,
        )

    async def start_instance(self, instance: Instance, host: str, stopped: bool = False) -> None:
        await self._reach(host, f"start {instance.id}")
        await self._world.hypervisor("start", instance.id, host, stopped)

    async def stop_instance(self, instance: Instance, host: str) -> None:
        await self._reach(host, f"stop {instance.id}")
        self._world.stop_copy(instance.id, host)

    async def reset_instance(self, instance: Instance, host: str) -> None:
        await self._reach(host, f"reset {instance.id}")
        await self._world.hypervisor("reset", instance.id, host)

    async def instance_state(self, instance: Instance, host: str) -> InstanceState:
        await self._reach(host, f"state of {instance.id}")
        return self._world.copy_state(instance.id, host)

    async def disable_host(self, host: str, reason: str) -> None:
        h = self._world.hosts[host]
        if h.compute_enabled:
            h.compute_enabled = False
            self._world.log.world(host, "compute service disabled")

    async def enable_host(self, host: str) -> None:
        h = self._world.hosts[host]
        if not h.compute_enabled:
            h.compute_enabled = True
            self._world.log.world(host, "compute service enabled")


class SimProber:
    def __init__(self, world: World) -> None:
        self._world = world

    async def probe(self, via: str, target: str, timeout_s: float) -> bool | None:
        world = self._world
        ask = world.net.round_trip(CONTROLLER, via, tries=3) if world.answers(via) else None
        if ask is None:
            await asyncio.sleep(timeout_s)
            return None
        rtt = None
        if world.answers(target):
            rtt = world.net.round_trip(via, target, tries=3)
        if rtt is None:
            # `via` gives up on the target at half the controller's timeout.
            await asyncio.sleep(min(ask + timeout_s / 2, timeout_s))
            return False
        await asyncio.sleep(min(ask + rtt, timeout_s))
        return True
