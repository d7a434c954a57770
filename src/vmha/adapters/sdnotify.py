"""systemd's service notification protocol (sd_notify), for `vmha serve`
and `vmha agent` under `Type=notify` with `WatchdogSec=`.

A notification is one datagram of `KEY=VALUE` lines sent to the unix
socket named by `$NOTIFY_SOCKET` (a leading `@` means the abstract
namespace). systemd sets `$WATCHDOG_USEC` (and `$WATCHDOG_PID`) when the
unit has `WatchdogSec=`; the service then sends `WATCHDOG=1` more often
than that. Why not the `systemd` Python bindings or `sdnotify` from PyPI:
the protocol is a few lines, and neither is in Debian's base Python.

Without `$NOTIFY_SOCKET` (not started by systemd) every call does nothing.
A failed send is logged once and never raised: a service must not stop
because its supervisor's socket went away.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SdNotifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_s = _watchdog_s(env)
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    @property
    def ping_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1 (half the watchdog timeout), or None."""
        return None if self.watchdog_s is None else self.watchdog_s / 2

    def notify(self, **fields: str) -> bool:
        """Send `KEY=value` lines, e.g. notify(READY="1", STATUS="…")."""
        if not self._address:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self._address)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd at %s: %s", self._address.lstrip("\0"),
                            exc.strerror or exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify(READY="1", STATUS=status) if status else self.notify(READY="1")

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG="1")

    def stopping(self) -> bool:
        return self.notify(STOPPING="1")


def _watchdog_s(env: Mapping[str, str]) -> float | None:
    """The watchdog timeout systemd asks this process to honour, if any."""
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (e.g. our parent)
    return int(usec) / 1_000_000
