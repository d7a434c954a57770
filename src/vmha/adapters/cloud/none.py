"""NoCloud: the Cloud port when no cloud adapter is configured.

Every instance operation fails with a TemporaryError that says so, so a
recovery job records a clear reason ("no cloud adapter is configured")
instead of pretending. Host enable/disable are no-ops: without a cloud
there is no scheduler to tell. Replaced by the libvirt and OpenStack
adapters when they are configured.
"""

from __future__ import annotations

from vmha.domain.errors import TemporaryError
from vmha.domain.model import Instance, InstanceState

NOT_CONFIGURED = (
    "no cloud adapter is configured: vmha cannot {what} {name!r}; "
    "configure the libvirt or openstack adapter"
)


class NoCloud:
    def _refuse(self, what: str, instance: Instance) -> TemporaryError:
        return TemporaryError(NOT_CONFIGURED.format(what=what, name=instance.name), 60.0)

    async def start_instance(self, instance: Instance, host: str, stopped: bool = False) -> None:
        raise self._refuse("start", instance)

    async def stop_instance(self, instance: Instance, host: str) -> None:
        raise self._refuse("stop", instance)

    async def reset_instance(self, instance: Instance, host: str) -> None:
        raise self._refuse("reset", instance)

    async def instance_state(self, instance: Instance, host: str) -> InstanceState:
        return InstanceState.UNKNOWN

    async def disable_host(self, host: str, reason: str) -> None:
        return None

    async def enable_host(self, host: str) -> None:
        return None
