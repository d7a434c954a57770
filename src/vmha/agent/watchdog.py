"""Watchdog backends the agent feeds while it is not isolated.

- `DevWatchdog`: the kernel's /dev/watchdog (softdog or hardware). Opening
  arms it; each feed writes one byte; a clean stop writes the magic 'V'
  before closing so the kernel disarms it (unless the driver has nowayout).
- `LabWatchdog`: the lab's per-host watchdog, which lives in the host's
  PID 1 (the lab reaper): each feed is a datagram b"feed" on its unix
  socket; when the reaper is not fed within its timeout it exits, and the
  kernel kills the whole PID namespace (the host "resets").
- `NullWatchdog`: nothing to feed (backend `none`).

Called only by the agent's loop; feeding never blocks for long and a failed
feed is logged, not raised (the watchdog firing is the consequence).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class Watchdog(Protocol):
    def feed(self) -> None: ...
    def close(self) -> None:
        """Stop cleanly: disarm where the device allows it."""
        ...


class NullWatchdog:
    def feed(self) -> None:
        return None

    def close(self) -> None:
        return None


class DevWatchdog:
    def __init__(self, device: Path) -> None:
        self._device = device
        self._fd: int | None = None

    def feed(self) -> None:
        try:
            if self._fd is None:
                self._fd = os.open(self._device, os.O_WRONLY | os.O_CLOEXEC)
            os.write(self._fd, b"\0")
        except OSError as exc:
            log.error("cannot feed watchdog %s: %s", self._device, exc.strerror)

    def close(self) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, b"V")  # magic close: disarm on a clean exit
        except OSError as exc:
            log.error("cannot disarm watchdog %s: %s", self._device, exc.strerror)
        finally:
            os.close(self._fd)
            self._fd = None


class LabWatchdog:
    def __init__(self, sock_path: Path) -> None:
        self._path = str(sock_path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def feed(self) -> None:
        try:
            self._sock.sendto(b"feed", self._path)
        except OSError as exc:
            log.error("cannot feed lab watchdog %s: %s", self._path, exc.strerror)

    def close(self) -> None:
        # The lab watchdog has no magic close: stopping the agent on purpose
        # must not look different from a crash (the lab restarts it in time).
        self._sock.close()
