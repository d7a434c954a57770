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
  accepted it, it completes even if the caller gives up (is cancelled);
  on a host whose compute service fails moves (`compute H fail-moves`)
  it is accepted and then fails (state ERROR). Enabling a host's service
  fails with TemporaryError while it refuses (`compute H refuse-enable`).
  An in-guest command (`exec_in_guest`) takes `guest_exec_s`; a reboot is
  a reset that a hung guest ignores.
  With the target `scheduler` (`evacuation_target: scheduler`) the cloud
  picks the host itself: an answering, enabled host other than the
  instance's, holding the fewest instances.
- `SimProber`: asks `via`'s agent whether it reaches `target`'s agent
  (three tries). None when `via` does not answer within the timeout.

Called by the controller through the ports; they never touch the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from vmha.domain.model import Host, Instance, InstanceState
from vmha.domain.planner import SCHEDULER
from vmha.errors import TemporaryError
from vmha.ports import GuestResult, PowerState
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
        sent_at = self._world.now()
        await self._reach_bmc(host)
        await asyncio.sleep(self._world.sim.bmc_accept_s)
        self._world.bmc_power_off(host.name, self.method, sent_at)

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
        if host == SCHEDULER:
            host = self._schedule(instance)
        await self._reach(host, f"start {instance.id}")
        await self._world.hypervisor("start", instance.id, host, stopped)

    def _schedule(self, instance: Instance) -> str:
        """The cloud's scheduler: of the hosts whose agent answers and whose
        compute service is enabled, other than the instance's recorded
        host, the one holding the fewest instances (then by name)."""
        world = self._world
        hosts = [h for h in sorted(world.hosts) if h != instance.host and world.answers(h)
                 and world.hosts[h].compute_enabled]
        if not hosts:
            raise TemporaryError(f"start {instance.id}: the scheduler found no valid host")
        chosen = min(hosts, key=lambda h: len(world.used(h)))
        world.log.world(instance.id, f"the cloud's scheduler picked {chosen}")
        return chosen

    async def placed_on(self, instance: Instance) -> str | None:
        home = self._world.vms[instance.id].home
        return None if home == instance.host else home

    async def stop_instance(self, instance: Instance, host: str) -> None:
        await self._reach(host, f"stop {instance.id}")
        self._world.stop_copy(instance.id, host)

    async def reset_instance(self, instance: Instance, host: str) -> None:
        await self._reach(host, f"reset {instance.id}")
        await self._world.hypervisor("reset", instance.id, host)

    async def exec_in_guest(self, instance: Instance, host: str, command: Sequence[str],
                            timeout_s: float) -> GuestResult:
        await self._reach(host, f"exec in {instance.id}")
        await asyncio.sleep(self._world.sim.guest_exec_s)
        ok, detail = self._world.guest_exec(instance.id, host)
        return GuestResult(ok, detail)

    async def reboot_instance(self, instance: Instance, host: str) -> None:
        """The guest agent's reboot, else ACPI: a hung guest ignores both."""
        await self._reach(host, f"reboot {instance.id}")
        copy = self._world.vms[instance.id].copies.get(host)
        if copy is not None and copy.state == "running" and not copy.guest_hung:
            await self._world.hypervisor("reset", instance.id, host)

    async def instance_state(self, instance: Instance, host: str) -> InstanceState:
        if host == SCHEDULER:  # wherever the scheduler sent it, once it left
            host = await self.placed_on(instance) or ""
            if not host:
                return InstanceState.BUILDING
        await self._reach(host, f"state of {instance.id}")
        return self._world.copy_state(instance.id, host)

    async def disable_host(self, host: str, reason: str) -> None:
        h = self._world.hosts[host]
        if h.compute_enabled:
            h.compute_enabled = False
            self._world.log.world(host, "compute service disabled")

    async def enable_host(self, host: str) -> None:
        h = self._world.hosts[host]
        if h.compute == "refuse-enable":
            self._world.log.world(host, "compute service stays disabled: the cloud refused")
            raise TemporaryError(f"{host}: the cloud keeps its compute service disabled",
                                 delay_s=5.0)
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
