"""`python -m vmha.lab.powerctl --dir DIR HOST off|on|status`: a lab host's power.

The power backend of the lab's BMC emulators (see vmha.lab.bmcs). Like a
real BMC it is idempotent: `off` on a host that is off, or `on` on one that
runs, succeeds and changes nothing. `status` exits 0 when the host runs and
1 when it is off. Any other failure prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vmha.errors import VmhaError
from vmha.lab import faults, state
from vmha.lab.lab import _host, _host_pids


def powered(lab_dir: Path, host: str) -> bool:
    return bool(_host_pids(_host(state.load(lab_dir), host)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vmha-lab-powerctl")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("host")
    parser.add_argument("action", choices=("off", "on", "status"))
    args = parser.parse_args(argv)
    try:
        on = powered(args.dir, args.host)
        if args.action == "status":
            return 0 if on else 1
        if args.action == "off" and on:
            faults.fail(args.dir, args.host, "power-off")
        elif args.action == "on" and not on:
            faults.power_on(args.dir, args.host)
    except VmhaError as exc:
        print(f"powerctl: {args.host} {args.action}: {exc.detail}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
