"""What the lab benchmarks (detect_lab.py, mttr_lab.py) share: the lab
lock, the record of the conditions a figure was measured under, and the
figures of an earlier power-off model kept next to the new ones.

- The benchmarks hold the machine-wide lab lock (`vmha.lab.lock.lab_lock`)
  for their whole run themselves: nobody has to remember `flock`.
- `conditions()`: date, the git commit measured (with "+changes" when the
  work tree differs from it), load averages, CPUs and the lab's power-off model
  (`vmha.lab.faults.POWER_OFF_MODEL`): "silent" since issue 17 (the host's
  NIC goes down before it is killed: no RST, no ICMP error, like a real dead
  machine); "kernel-answers" before it (the host's namespace kept its
  addresses, and its kernel refused connections for the dead host at once).
- `write_results(path, doc, compact)`: writes `doc` with a `previous` list:
  the latest figures of every *other* power-off model found in the file it
  replaces (a file without a model is from before issue 17:
  "kernel-answers"), each shrunk by `compact`. A rerun under the same model
  replaces that model's figures (git keeps the older ones).
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vmha.lab.faults import POWER_OFF_MODEL

BEFORE_MODELS = "kernel-answers"  # what a results file without a model measured


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def commit() -> str | None:
    """HEAD of the checkout these scripts run from; None outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=Path(__file__).parent.parent, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", "src", "bench")
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+changes" if changed else "")


def machine() -> dict[str, Any]:
    """When, what and on how loaded a machine a benchmark measured (any
    benchmark, lab or not)."""
    return {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "commit": commit(), "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count()}


def conditions() -> dict[str, Any]:
    return {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "commit": commit(), "power_off_model": POWER_OFF_MODEL,
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count()}


def write_results(path: Path, doc: dict[str, Any],
                  compact: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Write `doc` (which holds `power_off_model`) to `path`, keeping the
    other models' figures from the file it replaces under `previous`."""
    previous: list[dict[str, Any]] = []
    if path.exists():
        old = json.loads(path.read_text())
        previous = [p for p in old.get("previous", [])
                    if p.get("power_off_model") != doc["power_off_model"]]
        old_model = old.get("power_off_model", BEFORE_MODELS)
        if old_model != doc["power_off_model"]:
            previous = [p for p in previous if p.get("power_off_model") != old_model]
            previous.append({"power_off_model": old_model, **compact(old)})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**doc, "previous": previous}, indent=2) + "\n")
