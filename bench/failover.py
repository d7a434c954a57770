"""Leader failover of the recovery engine: three real `vmha serve` on a
3-member etcd (Debian's etcd-server, 127.0.0.1) and PostgreSQL.

Each run SIGKILLs the leader and times, from the kill, until another
controller says it leads (`GET /v1/controllers`, epoch > 0: it claimed the
store and its engine started), polled every 20 ms; then the killed one is
started again and waits as a follower. Goal of issue 15: <= lease + 1 s.
Writes bench/results/failover.json (settings, date, load averages, commit,
each run, median and max).

`--host-failure` measures the issue's second goal instead (VMs recovered
<= 10 s after a power-off that happens during a leader failover): a lab
with 3 controllers (`vmha lab up --controllers 3`, each in its own network
namespace, etcd and PostgreSQL), 3 hosts and `--vms` guests on one host;
each run powers the carrier off (silent) and SIGKILLs the leader at once,
then times from the power-off: a new leader, `host.failed`, `host.fenced`,
each guest's QEMU process on a survivor (/proc) and its /health answering.
Needs root; holds the lab lock. Goes under `host_failure` in the same JSON
(the takeover figures are kept, and the other way round).

    .venv/bin/python bench/failover.py [--runs 10] [--lease 2]
    .venv/bin/python bench/failover.py --host-failure [--runs 5] [--lease 3] [--vms 1]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "coord"))
from ckit import ControllerGroup, wait_for

from vmha.adapters.store.testing import pg_admin_url, temporary_pg_database
from vmha.lab.etcd import EtcdCluster

OUT = Path(__file__).resolve().parent / "results" / "failover.json"


def one_run(group: ControllerGroup) -> dict[str, float | str]:
    leader = wait_for(group.leader, 30, "no leader")
    rest = [c for c in group.controllers if c is not leader]
    load = os.getloadavg()[0]
    leader.signal(signal.SIGKILL)
    killed = time.monotonic()
    new = wait_for(lambda: group.leader(rest), 30, "no takeover", every_s=0.02)
    took = time.monotonic() - killed
    assert leader.proc is not None
    leader.proc.wait(10)
    leader.start()
    wait_for(leader.ready, 60, f"{leader.name} did not come back")
    return {"killed": leader.name, "new_leader": new.name, "takeover_s": round(took, 3),
            "load_1m": round(load, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--step", type=float, default=0.25)
    parser.add_argument("--host-failure", action="store_true",
                        help="a host powered off during the failover (lab, root)")
    parser.add_argument("--vms", type=int, default=1)
    parser.add_argument("--interval", type=float, default=1.0, help="heartbeat interval")
    args = parser.parse_args()
    if args.host_failure:
        import failover_lab  # bench/failover_lab.py

        write_key("host_failure", failover_lab.measure(args.runs, args.lease, args.vms,
                                                       args.interval))
        return
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    runs = []
    with tempfile.TemporaryDirectory(prefix="vmha-failover-") as tmp, \
            temporary_pg_database(pg_admin_url()) as pg_url:
        etcd = EtcdCluster(Path(tmp) / "etcd", 3)
        etcd.start()
        group = ControllerGroup(Path(tmp), f"{etcd.url}/failover", pg_url, 3,
                                lease_s=args.lease, step_s=args.step)
        try:
            group.start()
            for n in range(args.runs):
                runs.append(one_run(group))
                print(f"run {n + 1}: {runs[-1]}", flush=True)
        finally:
            group.stop()
            etcd.stop()
    took = [float(r["takeover_s"]) for r in runs]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    result = {
        "benchmark": "failover", "date": started, "commit": commit,
        "settings": {"controllers": 3, "etcd_members": 3, "lease_s": args.lease,
                     "round_s": args.step, "poll_s": 0.02, "store": "postgresql"},
        "loadavg_end": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
        "runs": runs, "median_s": round(statistics.median(took), 3),
        "max_s": round(max(took), 3), "goal_s": args.lease + 1.0,
    }
    kept = json.loads(OUT.read_text()) if OUT.exists() else {}
    if "host_failure" in kept:
        result["host_failure"] = kept["host_failure"]
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_s", "max_s", "goal_s", "loadavg_end")}))


def write_key(key: str, doc: dict[str, object]) -> None:
    """Put `doc` under `key` in failover.json, keeping everything else."""
    kept = json.loads(OUT.read_text()) if OUT.exists() else {}
    kept[key] = doc
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(kept, indent=2) + "\n")
    print(json.dumps(doc.get("summary"), indent=2))


if __name__ == "__main__":
    main()
