"""The controller's loops: detection, confirmation, recovery jobs, restarts.

Public surface: `Controller` and `ControllerSettings`. Everything here does
its I/O through the ports (`vmha.ports`) and reads time from the Clock;
the decisions are made by `vmha.domain`.
"""

from vmha.engine.controller import Controller
from vmha.engine.settings import ControllerSettings

__all__ = ["Controller", "ControllerSettings"]
