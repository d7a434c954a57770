"""The leader's last look at its lease before it acts on the world.

The store refuses a superseded leader's writes (its epoch, NotLeader), and
the engine records a step as started before it acts. That leaves one gap:
a leader paused (SIGSTOP, a frozen VM, a long GC) between recording the
step and making the call, resumed after another controller took over,
would still power a host off or start a VM before its next write is
refused. So the engine of a leader gets its fencers and its cloud wrapped
here: every call that changes something (power off or on, start, stop,
reset, reboot, a command in a guest, disable or enable a compute
service) first asks `authority()` —
leading, and the lease certainly still held (vmha.controller.leadership)
— and raises NotLeader instead of calling when it says no. Reads (power
status, an instance's state) pass through.

What is left is the time between that check and the request leaving the
machine, which no check can close; the store and the job's durable steps
cover what happens after it. Built by vmha.controller.service for the engine of
each term; the engine does not know about it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from vmha.domain.errors import NotLeader
from vmha.domain.model import Host, Instance, InstanceState
from vmha.ports import Cloud, Fencer, PowerState

Authority = Callable[[], bool]
# Changes some clouds offer beyond the Cloud port (vmha.ports.GuestControl):
# guarded too, and present on the wrapper only when the cloud has them.
GUARDED_EXTRAS = {"exec_in_guest": "running a command in instance",
                  "reboot_instance": "rebooting instance",
                  "rebuild_instance": "rebuilding instance"}


def _check(authority: Authority, what: str) -> None:
    if not authority():
        raise NotLeader(f"{what} not started: this controller no longer certainly holds "
                        "the leader's lease; the current leader decides")


class GuardedFencer:
    """A Fencer whose power changes need `authority()`."""

    def __init__(self, fencer: Fencer, authority: Authority) -> None:
        self.fencer = fencer
        self.authority = authority
        self.method = fencer.method

    async def power_status(self, host: Host) -> PowerState:
        return await self.fencer.power_status(host)

    async def power_off(self, host: Host) -> None:
        _check(self.authority, f"{self.method} power-off of {host.name}")
        await self.fencer.power_off(host)

    async def power_on(self, host: Host) -> None:
        _check(self.authority, f"{self.method} power-on of {host.name}")
        await self.fencer.power_on(host)


class GuardedCloud:
    """A Cloud whose changes need `authority()`; anything else the adapter
    offers is reached through it unchanged."""

    def __init__(self, cloud: Cloud, authority: Authority) -> None:
        self.cloud = cloud
        self.authority = authority

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.cloud, name)
        if name not in GUARDED_EXTRAS:
            return attr

        async def guarded(instance: Instance, host: str, *args: Any) -> Any:
            _check(self.authority, f"{GUARDED_EXTRAS[name]} {instance.id} on {host}")
            return await attr(instance, host, *args)

        return guarded

    async def start_instance(self, instance: Instance, host: str, stopped: bool = False) -> None:
        _check(self.authority, f"starting instance {instance.id} on {host}")
        await self.cloud.start_instance(instance, host, stopped)

    async def stop_instance(self, instance: Instance, host: str) -> None:
        _check(self.authority, f"stopping instance {instance.id} on {host}")
        await self.cloud.stop_instance(instance, host)

    async def reset_instance(self, instance: Instance, host: str) -> None:
        _check(self.authority, f"resetting instance {instance.id} on {host}")
        await self.cloud.reset_instance(instance, host)

    async def instance_state(self, instance: Instance, host: str) -> InstanceState:
        return await self.cloud.instance_state(instance, host)

    async def disable_host(self, host: str, reason: str) -> None:
        _check(self.authority, f"disabling compute host {host}")
        await self.cloud.disable_host(host, reason)

    async def enable_host(self, host: str) -> None:
        _check(self.authority, f"enabling compute host {host}")
        await self.cloud.enable_host(host)


def guarded(fencers: Mapping[str, Fencer], cloud: Cloud, authority: Authority
            ) -> tuple[dict[str, Fencer], Cloud]:
    """`fencers` and `cloud` for a leader's engine (see the module doc)."""
    return ({name: GuardedFencer(f, authority) for name, f in fencers.items()},
            GuardedCloud(cloud, authority))
