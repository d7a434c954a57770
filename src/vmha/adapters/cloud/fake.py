"""FakeCloud: instances on hosts in a dict, for unit tests (no I/O).

`running[instance_id]` is the set of hosts where the instance runs (more
than one host would be a split brain: tests assert it never happens).
Tests make hosts fail with `down_hosts` (every call on them raises
TemporaryError) and `refuse_start` (start raises, nothing starts), slow
starts down with `start_delay_s` (asyncio.sleep: virtual on the sim loop),
have `enable_host` refuse the next `enable_refusals[host]` times with a
TemporaryError (as Nova does while a host's evacuations are not completed),
and have moves to `failing_targets` accepted but failed (state ERROR there,
as Nova's NoValidHost). In-guest commands (`exec_in_guest`) succeed unless
the instance is in `exec_fails`; `reboot_instance` is recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from vmha.domain.errors import TemporaryError
from vmha.domain.model import Instance, InstanceState
from vmha.ports import GuestResult


class FakeCloud:
    def __init__(self) -> None:
        self.running: dict[str, set[str]] = {}
        self.stopped: dict[str, set[str]] = {}
        self.down_hosts: set[str] = set()
        self.refuse_start: set[str] = set()
        self.disabled: set[str] = set()
        self.enable_refusals: dict[str, int] = {}
        self.failing_targets: set[str] = set()
        self.exec_fails: set[str] = set()  # instances whose in-guest commands exit 1
        self.start_delay_s = 0.0  # how long a start takes (on the test's clock)
        self.calls: list[tuple[str, str, str]] = []  # (operation, instance or "", host)

    def _reach(self, op: str, iid: str, host: str) -> None:
        self.calls.append((op, iid, host))
        if host in self.down_hosts:
            raise TemporaryError(f"hypervisor {host} does not answer")

    async def start_instance(self, instance: Instance, host: str, stopped: bool = False) -> None:
        self._reach("start", instance.id, host)
        if host in self.refuse_start:
            raise TemporaryError(f"{host} refused to start {instance.id}")
        if self.start_delay_s:
            await asyncio.sleep(self.start_delay_s)
            if host in self.down_hosts:  # the host died while starting it
                raise TemporaryError(f"hypervisor {host} went away during the start")
        if host in self.failing_targets:
            self.calls.append(("failed", instance.id, host))
            return  # accepted, then failed: nothing runs there
        target = self.stopped if stopped else self.running
        target.setdefault(instance.id, set()).add(host)
        self.calls.append(("started", instance.id, host))  # the start completed

    async def stop_instance(self, instance: Instance, host: str) -> None:
        self._reach("stop", instance.id, host)
        self.running.get(instance.id, set()).discard(host)

    async def reset_instance(self, instance: Instance, host: str) -> None:
        self._reach("reset", instance.id, host)
        self.running.setdefault(instance.id, set()).add(host)

    async def exec_in_guest(self, instance: Instance, host: str, command: Sequence[str],
                            timeout_s: float) -> GuestResult:
        self._reach("exec", instance.id, host)
        if instance.id in self.exec_fails:
            return GuestResult(False, "exit 1")
        return GuestResult(True, "exit 0")

    async def reboot_instance(self, instance: Instance, host: str) -> None:
        self._reach("reboot", instance.id, host)

    async def instance_state(self, instance: Instance, host: str) -> InstanceState:
        self._reach("state", instance.id, host)
        if host in self.running.get(instance.id, set()):
            return InstanceState.RUNNING
        if host in self.stopped.get(instance.id, set()):
            return InstanceState.STOPPED
        if ("failed", instance.id, host) in self.calls:
            return InstanceState.ERROR
        return InstanceState.UNKNOWN

    async def disable_host(self, host: str, reason: str) -> None:
        self.calls.append(("disable", "", host))
        self.disabled.add(host)

    async def enable_host(self, host: str) -> None:
        self.calls.append(("enable", "", host))
        if self.enable_refusals.get(host, 0) > 0:
            self.enable_refusals[host] -= 1
            raise TemporaryError(f"{host}: evacuations not completed yet", 5.0)
        self.disabled.discard(host)

    def count(self, op: str, instance: str | None = None) -> int:
        return sum(1 for o, i, _ in self.calls if o == op and (instance is None or i == instance))
