"""The lab's state file, DIR/lab.json: everything `lab down` must undo.

Written atomically (temp file + rename, mode 0600: it holds secrets) after
every step that creates something, so a lab that crashed half-way can
still be torn down. Plain JSON data; `vmha.lab.lab` owns its meaning.
`changing(DIR)` serializes a fault's read-modify-write of it (and the
action it records) between processes: the CLI, tests and benchmarks, and
the BMC emulators, whose power-off may race an operator's power-on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vmha.config import default_data_dir
from vmha.errors import NotFound

STATE_FILE = "lab.json"
LOCK_FILE = ".lab.json.lock"


def default_lab_dir() -> Path:
    """`/var/lib/vmha/lab` for root, else under the user's state dir."""
    return default_data_dir() / "lab"


def load(lab_dir: Path) -> dict[str, Any]:
    path = lab_dir / STATE_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFound("lab", str(lab_dir)) from None
    except ValueError as exc:
        raise NotFound("lab", f"{lab_dir} ({STATE_FILE} is damaged: {exc})") from exc
    return data


def save(lab_dir: Path, state: dict[str, Any]) -> None:
    lab_dir.mkdir(parents=True, exist_ok=True)
    tmp = lab_dir / f".{STATE_FILE}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh, indent=2)
    os.replace(tmp, lab_dir / STATE_FILE)


@contextlib.contextmanager
def changing(lab_dir: Path) -> Iterator[None]:
    """Hold DIR's change lock (an flock; waits). Not re-entrant: take it
    once, around load, the change and save."""
    if not lab_dir.is_dir():
        raise NotFound("lab", str(lab_dir))
    with open(lab_dir / LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
