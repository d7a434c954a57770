"""The controller's loops: detection, confirmation, recovery jobs, restarts.

Public surface: `Engine` and `ControllerSettings`. Everything here does its
I/O through the ports (`vmha.ports`) and reads time from the Clock; the
decisions are made by `vmha.domain`. Requests from the world arrive as
commands through the inbox (`vmha.ports.Mailbox`).
"""

from vmha.engine.core import Engine
from vmha.engine.settings import ControllerSettings

__all__ = ["ControllerSettings", "Engine"]
