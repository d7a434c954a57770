"""Benchmark: recovery planner time for 1k / 10k / 100k instances.

Builds a random but seeded segment (hosts of 64 vCPU / 256 GiB, a tenth of
them reserved, some load already placed; instances of mixed flavours,
priorities and anti-affinity groups), plans the evacuation with
`vmha.domain.planner.plan` and reports the best of `--repeat` runs per size.
Goal: 10,000 instances over 1,000 hosts well under a second.
Prints a table and writes bench/results/planner.json.

Usage: .venv/bin/python bench/planner.py [--repeat 3] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

from vmha.domain.model import Capacity, Host, Instance, RecoveryMethod
from vmha.domain.planner import candidates_from, plan
from vmha.domain.policy import HAPolicy

RESULTS = Path(__file__).parent / "results" / "planner.json"
FLAVOURS = [(1, 1024), (2, 2048), (2, 4096), (4, 8192), (8, 16384), (16, 65536)]
SIZES = [(1_000, 100), (10_000, 1_000), (100_000, 10_000)]  # (instances, hosts)


def build(n_instances: int, n_hosts: int, seed: int) -> tuple[list[Instance], list[Host],
                                                                list[Instance]]:
    rng = random.Random(seed)
    hosts = [Host(f"h{i:05d}", "s1", capacity=Capacity(64, 262144), reserved=i % 10 == 0)
             for i in range(n_hosts)]
    policies = [HAPolicy(priority=p) for p in range(0, 1001, 50)]
    def instance(i: int, host: str) -> Instance:
        vcpus, ram = rng.choice(FLAVOURS)
        group = f"g{rng.randrange(n_instances // 20 or 1)}" if rng.random() < 0.1 else None
        return Instance(f"vm{i:06d}", f"vm{i:06d}", host, resources=Capacity(vcpus, ram),
                        policy=rng.choice(policies), anti_affinity_group=group)
    todo = [instance(i, "dead") for i in range(n_instances)]
    placed = [instance(n_instances + i, rng.choice(hosts).name) for i in range(n_hosts * 4)]
    return todo, hosts, placed


def measure(n_instances: int, n_hosts: int, seed: int, repeat: int) -> dict[str, object]:
    todo, hosts, placed = build(n_instances, n_hosts, seed)
    best = float("inf")
    placed_count = unplaced = 0
    for _ in range(repeat):
        start = time.perf_counter()
        candidates = candidates_from(hosts, placed)
        result = plan(todo, candidates, RecoveryMethod.AUTO_PRIORITY)
        best = min(best, time.perf_counter() - start)
        placed_count, unplaced = len(result.placements), len(result.unplaced)
    return {"instances": n_instances, "hosts": n_hosts, "seconds": round(best, 4),
            "placed": placed_count, "unplaced": unplaced}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rows = [measure(n, h, args.seed, args.repeat) for n, h in SIZES]
    print(f"{'instances':>10} {'hosts':>7} {'seconds':>9} {'placed':>8} {'unplaced':>9}")
    for r in rows:
        print(f"{r['instances']:>10} {r['hosts']:>7} {r['seconds']:>9.4f} {r['placed']:>8} "
              f"{r['unplaced']:>9}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "planner", "method": "auto_priority", "seed": args.seed,
        "repeat": args.repeat, "python": platform.python_version(), "results": rows,
    }, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
