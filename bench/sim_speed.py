"""Simulator speed: virtual seconds per wall second on a big cluster.

100 hosts in 10 segments, 2,000 VMs (20 per host), the real controller;
one host loses power at t=60 and its 20 VMs are recovered; the run lasts
600 virtual seconds. Prints the figure and writes
bench/results/sim_speed.json.

    .venv/bin/python bench/sim_speed.py [--hosts 100] [--vms 2000] [--until 600]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from vmha.sim.runner import run_scenario
from vmha.sim.scenario import scenario_from_data

RESULTS = Path(__file__).parent / "results" / "sim_speed.json"


def cluster(n_hosts: int, n_vms: int, per_segment: int = 10) -> dict[str, Any]:
    hosts = {
        f"h{i:03d}": {"segment": f"s{i // per_segment:02d}", "vcpus": 128, "ram_mb": 524288}
        for i in range(n_hosts)
    }
    names = sorted(hosts)
    instances = {
        f"vm{i:05d}": {"host": names[i % n_hosts], "vcpus": 2, "ram_mb": 4096,
                       "priority": (i * 37) % 1000}
        for i in range(n_vms)
    }
    return {
        "seed": 1,
        "segments": {hosts[h]["segment"]: {"recovery_method": "auto"} for h in names},
        "hosts": hosts,
        "instances": instances,
        "commands": [{"at": 60, "do": f"power-off {names[0]}"}],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--vms", type=int, default=2000)
    ap.add_argument("--until", type=float, default=600.0)
    args = ap.parse_args()
    scenario = scenario_from_data(cluster(args.hosts, args.vms), "sim-speed")
    started = time.perf_counter()
    result = run_scenario(scenario, until=args.until)
    wall = time.perf_counter() - started
    recovered = sum(1 for i in result.report["instances"].values() if i["running_on"])
    out = {
        "benchmark": "simulator speed",
        "hosts": args.hosts,
        "instances": args.vms,
        "virtual_s": args.until,
        "wall_s": round(wall, 3),
        "virtual_s_per_wall_s": round(args.until / wall, 1),
        "events": len(result.report["events"]),
        "instances_running_at_end": recovered,
        "invariants": result.report["invariants"],
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{args.hosts} hosts, {args.vms} VMs, {args.until:.0f} virtual s in {wall:.2f} wall s: "
          f"{out['virtual_s_per_wall_s']} virtual s per wall s "
          f"({out['events']} events, {recovered} instances running at the end)")


if __name__ == "__main__":
    main()
