"""FakeFencer: a scriptable BMC per host for unit tests (no world, no I/O).

Tests set `power[host]`, mark a BMC `unreachable` or `stuck_on` (power-off
accepted, the host stays on) and read `calls` to see what the engine did.
"""

from __future__ import annotations

from vmha.domain.errors import TemporaryError
from vmha.domain.model import Host
from vmha.ports import PowerState


class FakeFencer:
    def __init__(self, method: str = "ipmi") -> None:
        self.method = method
        self.power: dict[str, PowerState] = {}
        self.unreachable: set[str] = set()
        self.stuck_on: set[str] = set()
        self.calls: list[tuple[str, str]] = []  # (operation, host)

    def _reach(self, op: str, host: Host) -> None:
        self.calls.append((op, host.name))
        if host.name in self.unreachable:
            raise TemporaryError(f"{self.method} BMC of {host.name} does not answer")

    async def power_status(self, host: Host) -> PowerState:
        self._reach("status", host)
        return self.power.get(host.name, PowerState.ON)

    async def power_off(self, host: Host) -> None:
        self._reach("off", host)
        if host.name not in self.stuck_on:
            self.power[host.name] = PowerState.OFF

    async def power_on(self, host: Host) -> None:
        self._reach("on", host)
        self.power[host.name] = PowerState.ON

    def count(self, op: str, host: str | None = None) -> int:
        return sum(1 for o, h in self.calls if o == op and (host is None or h == host))
