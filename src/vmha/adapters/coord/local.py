"""The single-controller coordinator: no coordination service at all.

`vmha serve` without `[coordination] url` (the embedded SQLite default)
uses it: the controller is the only member of its group and always the
leader. Its authority is fenced in the store all the same (the store's
leader epoch, vmha.adapters.store), so a second `vmha serve` started on the
same database by mistake takes over and the first one's job writes are
refused, instead of two engines fencing the same hosts.
"""

from __future__ import annotations

import math
from dataclasses import replace

from vmha.ports import ControllerInfo, CoordView

FOREVER = math.inf


class LocalCoordinator:
    def __init__(self, name: str, lease_s: float = 5.0) -> None:
        self.name = name
        self.lease_s = lease_s
        self._info = ControllerInfo(name)
        self._resigned = False

    def join(self, info: ControllerInfo) -> None:
        self._info = info
        self._resigned = False

    def step(self) -> CoordView:
        if self._resigned:
            return CoordView(lease_s=self.lease_s)
        return CoordView(members=(self._info,), leader=self.name, leading=True,
                         valid_until=FOREVER, lease_s=self.lease_s)

    def report(self, text: str) -> None:
        self._info = replace(self._info, report=text)

    def resign(self) -> None:
        self._resigned = True

    def abstain(self, yes: bool) -> None:
        """Nothing: alone, it is the only controller that can lead."""
