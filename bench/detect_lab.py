"""Detection on the real lab: power-off to `host.failed`, and loss tolerance.

For each heartbeat interval (0.5 s and 1 s) a four-host lab with its
controller is brought up; hosts 1-3 take turns being powered off (each one
back on and heartbeating for at least WARM_S before its next turn, so the
detector knows its rhythm), and the time from the power-off to the
controller's `host.failed` event is measured. Then host4 gets 30 % random
loss for LOSS_S seconds and the transient `host.suspect` events (and any
`host.failed`, which would be a false failure) are counted.

Needs root (network namespaces). Run: `.venv/bin/python bench/detect_lab.py
[--runs 10]`; prints a table and writes bench/results/detect_lab.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from vmha.lab import faults
from vmha.lab import lab as lab_ops

RESULTS = Path(__file__).parent / "results" / "detect_lab.json"
WARM_S = 30.0
LOSS_S = 60.0
VICTIMS = ("host1", "host2", "host3")


def client_for(st: dict[str, Any]) -> httpx.Client:
    ctl = st["controller"]
    return httpx.Client(base_url=ctl["url"], timeout=10,
                        headers={"Authorization": f"Bearer {ctl['token']}"})


def wait_until(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")


def events_since(client: httpx.Client, since: int) -> list[dict[str, Any]]:
    response = client.get("/v1/events", params={"since": since, "limit": 1000})
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def last_event_id(client: httpx.Client) -> int:
    last = 0
    while batch := events_since(client, last):
        last = batch[-1]["id"]
    return last


def host_state(client: httpx.Client, name: str) -> str:
    state: str = client.get(f"/v1/hosts/{name}").json()["state"]
    return state


def one_run(lab_dir: Path, client: httpx.Client, victim: str) -> float:
    since = last_event_id(client)
    t0 = time.time()
    faults.fail(lab_dir, victim, "power-off")

    def failed() -> float | None:
        for event in events_since(client, since):
            if event["subject"] == victim and event["type"] == "host.failed":
                return float(event["time"])
        return None

    detected = wait_until(failed, 60, f"host.failed of {victim}")
    faults.power_on(lab_dir, victim)
    return float(detected) - t0


def measure_interval(interval: float, runs: int) -> dict[str, Any]:
    settings = lab_ops.LabSettings(
        hosts=4, heartbeat_interval_s=interval, isolation_timeout_s=10.0,
        watchdog_timeout_s=5.0, controller={"host_return_healthy_s": 3.0},
        controller_port=8797, heartbeat_port=8798,
    )
    with tempfile.TemporaryDirectory(prefix="vmha-bench-") as tmp:
        lab_dir = Path(tmp)
        try:
            st = lab_ops.up(lab_dir, settings)
            with client_for(st) as client:
                return run_all(lab_dir, client, interval, runs)
        finally:
            faults.down(lab_dir)


def run_all(lab_dir: Path, client: httpx.Client, interval: float, runs: int) -> dict[str, Any]:
    powered_on = dict.fromkeys(VICTIMS, time.time())
    times: list[float] = []
    for i in range(runs):
        victim = VICTIMS[i % len(VICTIMS)]
        wait_until(lambda v=victim: host_state(client, v) == "up", 120, f"{victim} up")
        time.sleep(max(0.0, powered_on[victim] + WARM_S - time.time()))
        took = one_run(lab_dir, client, victim)
        powered_on[victim] = time.time()
        times.append(took)
        print(f"  interval {interval} s, run {i + 1}: {victim} failed after {took:.2f} s")
    loss = measure_loss(lab_dir, client)
    return {
        "interval_s": interval, "runs": runs, "detect_s": [round(t, 3) for t in times],
        "median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
        **loss,
    }


def measure_loss(lab_dir: Path, client: httpx.Client) -> dict[str, Any]:
    since = last_event_id(client)
    faults.fail(lab_dir, "host4", "loss", 30)
    time.sleep(LOSS_S)
    faults.heal(lab_dir, "host4")
    seen = [e for e in events_since(client, since) if e["subject"] == "host4"]
    return {
        "loss_percent": 30, "loss_seconds": LOSS_S,
        "transient_suspects": sum(e["type"] == "host.suspect" for e in seen),
        "false_failed": sum(e["type"] == "host.failed" for e in seen),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--intervals", type=float, nargs="+", default=[0.5, 1.0])
    args = parser.parse_args()
    results = [measure_interval(i, args.runs) for i in args.intervals]
    print(f"{'interval':>9} {'runs':>5} {'median':>8} {'max':>7} {'suspects':>9} {'false':>6}")
    for r in results:
        print(f"{r['interval_s']:>8}s {r['runs']:>5} {r['median_s']:>7}s {r['max_s']:>6}s "
              f"{r['transient_suspects']:>9} {r['false_failed']:>6}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"benchmark": "detect_lab", "results": results}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
