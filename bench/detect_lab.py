"""Detection on the real lab: power-off to `host.failed`, and loss tolerance.

For each heartbeat interval (0.5 s and 1 s) a four-host lab with its
controller is brought up; hosts 1-3 take turns being powered off (each one
powered on again once the controller has fenced it, and heartbeating for at
least WARM_S before its next turn, so the detector knows its rhythm), and
the time from the power-off to the controller's `host.failed` event is
measured ("warm" rows). Then host4 gets 30 % random
loss for LOSS_S seconds and the transient `host.suspect` events (and any
`host.failed`, which would be a false failure) are counted.

Cold rows (issue 11 item 12), with `--cold-runs N` per interval: N more
labs are built, and in each a victim is powered off COLD_S seconds after
every host is up (the controller's detectors have a handful of beats).
Restart rows, with `--restart-runs N`: in the warm lab, the controller is
SIGKILLed and started again N times, and a victim is powered off COLD_S
seconds after it answers /healthz again (detectors without history).
Lab hosts have BMC emulators, so the BMC fast path applies in every row.

Needs root (network namespaces); takes the lab lock itself (waits while
another lab runs). Run: `.venv/bin/python bench/detect_lab.py [--runs 10]`;
prints a table and writes bench/results/detect_lab.json with the date, the
load averages, the lab's power-off model ("silent" since issue 17) and,
under `previous`, the figures of the other power-off model (bench/labrun.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import labrun  # bench/labrun.py (this script's folder is on sys.path)

from vmha.lab import controller as lab_controller
from vmha.lab import faults, state
from vmha.lab import lab as lab_ops
from vmha.lab.lock import lab_lock

RESULTS = Path(__file__).parent / "results" / "detect_lab.json"
WARM_S = 30.0
COLD_S = 3.0  # power-off this long after the lab came up / the controller restarted
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


def one_run(lab_dir: Path, client: httpx.Client, victim: str) -> tuple[float, float]:
    """Seconds from power-off to `host.failed`, and the 1-min load then."""
    since = last_event_id(client)
    load = labrun.load1()
    t0 = time.time()
    faults.fail(lab_dir, victim, "power-off")

    def first(etype: str) -> Any:
        for event in events_since(client, since):
            if event["subject"] == victim and event["type"] == etype:
                return float(event["time"])
        return None

    detected = wait_until(lambda: first("host.failed"), 60, f"host.failed of {victim}")
    # Power it on only once fenced: a power-on racing the controller's fence
    # would be switched off again by it (as a real BMC would do).
    wait_until(lambda: first("host.fenced"), 60, f"host.fenced of {victim}")
    faults.power_on(lab_dir, victim)
    return float(detected) - t0, load


def lab_settings(interval: float) -> lab_ops.LabSettings:
    return lab_ops.LabSettings(
        hosts=4, heartbeat_interval_s=interval, isolation_timeout_s=10.0,
        watchdog_timeout_s=5.0, controller={"host_return_healthy_s": 3.0},
        controller_port=8797, heartbeat_port=8798,
    )


def measure_interval(interval: float, runs: int, cold_runs: int,
                     restart_runs: int) -> dict[str, Any]:
    settings = lab_settings(interval)
    cold = [cold_run(settings, VICTIMS[i % len(VICTIMS)]) for i in range(cold_runs)]
    with tempfile.TemporaryDirectory(prefix="vmha-bench-") as tmp:
        lab_dir = Path(tmp)
        try:
            st = lab_ops.up(lab_dir, settings)
            with client_for(st) as client:
                result = run_all(lab_dir, client, interval, runs)
                restarts = [restart_run(lab_dir, client, VICTIMS[i % len(VICTIMS)])
                            for i in range(restart_runs)]
        finally:
            faults.down(lab_dir)
    return {**result, "cold": summary(cold), "after_restart": summary(restarts)}


def summary(runs: list[tuple[float, float]]) -> dict[str, Any]:
    if not runs:
        return {"runs": 0}
    times = [t for t, _ in runs]
    return {"runs": len(runs), "detect_s": [round(t, 3) for t in times],
            "median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
            "load1_at_power_off": [load for _, load in runs], "power_off_after_s": COLD_S}


def all_up(client: httpx.Client) -> bool:
    hosts = client.get("/v1/hosts").json()["items"]
    return len(hosts) == len(VICTIMS) + 1 and all(
        h["state"] == "up" and h["heartbeat_age_s"] is not None for h in hosts)


def cold_run(settings: lab_ops.LabSettings, victim: str) -> tuple[float, float]:
    """A fresh lab: `victim` powered off COLD_S s after every host is up."""
    with tempfile.TemporaryDirectory(prefix="vmha-bench-cold-") as tmp:
        lab_dir = Path(tmp)
        try:
            st = lab_ops.up(lab_dir, settings)
            with client_for(st) as client:
                wait_until(lambda: all_up(client), 120, "every host up")
                time.sleep(COLD_S)
                took, load = one_run(lab_dir, client, victim)
        finally:
            faults.down(lab_dir)
    print(f"  cold: {victim} failed after {took:.2f} s (load {load:.2f})", flush=True)
    return took, load


def restart_run(lab_dir: Path, client: httpx.Client, victim: str) -> tuple[float, float]:
    """The controller SIGKILLed and started again; `victim` powered off
    COLD_S s after it answers again."""
    wait_until(lambda: all_up(client), 120, "every host up")
    with state.changing(lab_dir):
        st = state.load(lab_dir)
        lab_controller.kill_controller(st["controller"])
        lab_controller.restart_controller(st["controller"])
        state.save(lab_dir, st)
    time.sleep(COLD_S)
    took, load = one_run(lab_dir, client, victim)
    wait_until(lambda: host_state(client, victim) == "up", 120, f"{victim} up")
    print(f"  after a controller restart: {victim} failed after {took:.2f} s "
          f"(load {load:.2f})", flush=True)
    return took, load


def run_all(lab_dir: Path, client: httpx.Client, interval: float, runs: int) -> dict[str, Any]:
    powered_on = dict.fromkeys(VICTIMS, time.time())
    times: list[float] = []
    loads: list[float] = []
    for i in range(runs):
        victim = VICTIMS[i % len(VICTIMS)]
        wait_until(lambda v=victim: host_state(client, v) == "up", 120, f"{victim} up")
        time.sleep(max(0.0, powered_on[victim] + WARM_S - time.time()))
        took, load = one_run(lab_dir, client, victim)
        powered_on[victim] = time.time()
        times.append(took)
        loads.append(load)
        print(f"  interval {interval} s, run {i + 1}: {victim} failed after {took:.2f} s "
              f"(load {load:.2f})", flush=True)
    loss = measure_loss(lab_dir, client)
    return {
        "interval_s": interval, "runs": runs, "detect_s": [round(t, 3) for t in times],
        "median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
        "load1_at_power_off": loads, **loss,
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
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--restart-runs", type=int, default=3)
    args = parser.parse_args()
    with lab_lock():
        start = labrun.conditions()
        results = [measure_interval(i, args.runs, args.cold_runs, args.restart_runs)
                   for i in args.intervals]
    print(f"{'interval':>9} {'row':>8} {'runs':>5} {'median':>8} {'max':>7} {'suspects':>9} "
          f"{'false':>6}")
    for r in results:
        print(f"{r['interval_s']:>8}s {'warm':>8} {r['runs']:>5} {r['median_s']:>7}s "
              f"{r['max_s']:>6}s {r['transient_suspects']:>9} {r['false_failed']:>6}")
        for row in ("cold", "after_restart"):
            if r[row]["runs"]:
                print(f"{r['interval_s']:>8}s {row[:8]:>8} {r[row]['runs']:>5} "
                      f"{r[row]['median_s']:>7}s {r[row]['max_s']:>6}s")
    loads = [x for r in results for x in r["load1_at_power_off"]
             + r["cold"].get("load1_at_power_off", [])
             + r["after_restart"].get("load1_at_power_off", [])]
    print(f"power-off model {start['power_off_model']}; 1-min load average at power-off: "
          f"median {statistics.median(loads):.2f}, max {max(loads):.2f}")
    doc = {"benchmark": "detect_lab", **start,
           "loadavg_1_5_15_at_end": labrun.conditions()["loadavg_1_5_15"],
           "settings": {"lab": [asdict(lab_settings(i)) for i in args.intervals],
                        "runs": args.runs, "warm_s": WARM_S, "loss_seconds": LOSS_S,
                        "cold_runs": args.cold_runs, "restart_runs": args.restart_runs,
                        "cold_s": COLD_S,
                        "victims": list(VICTIMS)},
           "results": results}
    doc["earlier"] = earlier(doc)
    labrun.write_results(RESULTS, doc, compact)
    print(f"wrote {RESULTS}")


def earlier(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The same power-off model's figures from other commits (the file
    being replaced, and what it kept), newest first: before/after."""
    if not RESULTS.exists():
        return []
    old = json.loads(RESULTS.read_text())
    if old.get("power_off_model") != doc["power_off_model"]:
        return []
    kept = [e for e in old.get("earlier", []) if e.get("commit") != doc.get("commit")]
    if old.get("commit") == doc.get("commit"):
        return kept
    mine = {k: old.get(k) for k in ("commit", "date", "settings", "results")}
    return [mine, *kept]


def compact(old: dict[str, Any]) -> dict[str, Any]:
    """What `previous` keeps of an earlier results file: all but its history."""
    return {k: v for k, v in old.items() if k not in ("benchmark", "previous", "earlier")}


if __name__ == "__main__":
    main()
