"""Power backends for the lab's BMC emulators: what "the host's power" is.

The IPMI emulator (`vmha.lab.bmc_ipmi`) and the Redfish emulator call one
`PowerBackend` per emulated host. Two are provided:

- `FilePower`: a text file holding `on` or `off` (tests, benchmarks); the
  file is the truth, so a test can read it after a fence.
- `CommandPower`: runs given argv for off / on (the lab kills or restarts a
  host's PID namespace); state is an optional status command's exit code
  (0 = on), or else the last state set.
- `--lab-dir/--lab-host`: `vmha.lab.powerctl.LabHostPower`, the lab host's
  power in-process (what the lab's own emulators use).

Synchronous and standard library only: the emulators are blocking servers.
Nothing here knows about IPMI or Redfish.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

COMMAND_TIMEOUT_S = 30.0


class PowerBackend(Protocol):
    """The power of one emulated host."""

    def power_state(self) -> bool:
        """True when the host is on."""
        ...

    def power_off(self) -> None:
        """Cut the power now (a hard off, not a shutdown request)."""
        ...

    def power_on(self) -> None: ...


class FilePower:
    """Power state kept in a text file (`on` / `off`); created `on` if absent."""

    def __init__(self, path: Path, initial_on: bool = True) -> None:
        self.path = path
        if not path.exists():
            self._write(initial_on)

    def power_state(self) -> bool:
        return self.path.read_text(encoding="ascii").strip() == "on"

    def power_off(self) -> None:
        self._write(False)

    def power_on(self) -> None:
        self._write(True)

    def _write(self, on: bool) -> None:
        # Write then rename: a reader never sees an empty file.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".power-")
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write("on\n" if on else "off\n")
        os.replace(tmp, self.path)


class CommandPower:
    """Power changes by running commands (argv lists, no shell).

    A failing command raises `subprocess.CalledProcessError`, which the
    emulator turns into an IPMI / Redfish error for the client.
    """

    def __init__(
        self,
        off: Sequence[str],
        on: Sequence[str],
        status: Sequence[str] | None = None,
        initial_on: bool = True,
    ) -> None:
        self._off = list(off)
        self._on = list(on)
        self._status = list(status) if status else None
        self._last = initial_on

    def power_state(self) -> bool:
        if self._status is None:
            return self._last
        done = subprocess.run(self._status, check=False, timeout=COMMAND_TIMEOUT_S)
        return done.returncode == 0

    def power_off(self) -> None:
        subprocess.run(self._off, check=True, timeout=COMMAND_TIMEOUT_S)
        self._last = False

    def power_on(self) -> None:
        subprocess.run(self._on, check=True, timeout=COMMAND_TIMEOUT_S)
        self._last = True


def add_power_arguments(parser: argparse.ArgumentParser) -> None:
    """The emulators' power options: a state file, or off/on/status commands."""
    parser.add_argument("--state-file", help="power state file (FilePower)")
    parser.add_argument("--off-cmd", help="command line run to power off (CommandPower)")
    parser.add_argument("--on-cmd", help="command line run to power on")
    parser.add_argument("--status-cmd", help="command line whose exit 0 means on")
    parser.add_argument("--lab-dir", help="a lab host's power, in-process (with --lab-host)")
    parser.add_argument("--lab-host", help="the lab host whose power this is")


def backend_from_args(args: argparse.Namespace, prog: str) -> PowerBackend:
    """The backend those options describe, or exit with a one-line usage error."""
    if args.state_file:
        return FilePower(Path(args.state_file))
    if args.lab_dir and args.lab_host:
        from vmha.lab.powerctl import LabHostPower  # the lab, only for lab emulators

        return LabHostPower(Path(args.lab_dir), args.lab_host)
    if args.off_cmd and args.on_cmd:
        status = shlex.split(args.status_cmd) if args.status_cmd else None
        return CommandPower(shlex.split(args.off_cmd), shlex.split(args.on_cmd), status)
    raise SystemExit(f"{prog}: give --state-file, --off-cmd and --on-cmd, "
                     "or --lab-dir and --lab-host")
