"""The machine-wide lab lock: one lab per machine.

Lab interface names, the lab bridge's addresses and the hosts' libvirt roots
are machine-wide, so two labs (two test runs, a test run and a benchmark)
must never run at once. Whoever builds labs holds `/tmp/vmha-lab.lock`
(an flock) for as long as its labs live: pytest's lab tiers (tests/conftest.py)
and the lab benchmarks. A process started under `flock /tmp/vmha-lab.lock`
already holds it through its parent: `VMHA_LAB_LOCKED=1` says so, and then
nothing is taken here (taking it again would wait forever).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

LOCK_PATH = Path("/tmp/vmha-lab.lock")  # noqa: S108 (machine-wide by design)
HELD_ENV = "VMHA_LAB_LOCKED"


@contextlib.contextmanager
def lab_lock(path: Path = LOCK_PATH) -> Iterator[None]:
    """Hold the lab lock (waiting for it, with a notice on stderr)."""
    if os.environ.get(HELD_ENV) == "1":
        yield
        return
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {path}: another lab is running (if a parent "
                  f"process holds it, set {HELD_ENV}=1)", file=sys.stderr, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
