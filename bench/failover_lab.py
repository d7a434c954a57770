"""A host failure during a leader failover, on the lab (bench/failover.py
--host-failure; issue 15's goal: VMs recovered <= 10 s after the power-off).

A lab with 3 controllers in their own network namespaces (etcd, PostgreSQL),
3 hosts with BMC emulators and `vms` guests on host1. Every run waits until
the carrier has heartbeated for WARM_S, then powers it off (silent) and at
once SIGKILLs the leader, and times from the power-off:
- `takeover_s`: another controller says it leads (polled every 0.1 s);
- `failed_s`, `fenced_s`: the `host.failed` / `host.fenced` events;
- per guest `qemu_s` (its QEMU process on a survivor, /proc every 0.1 s)
  and `app_s` (its /health answering, polled every 0.05 s);
- `recovered_s`: the last guest's `app_s` (the goal's figure), and
  `started_s`: the last guest's QEMU.
Then the killed controller starts again (a follower) and the host is
powered on; the next run fails whichever host carries the guests.
Records the 1-minute load at each power-off and the conditions
(bench/labrun.py); any guest seen on two hosts at once is listed.
"""

from __future__ import annotations

import os
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import labrun

from vmha.adapters.cloud.libvirt import domain_uuid
from vmha.lab import controllers, faults, state, vms
from vmha.lab import lab as lab_ops
from vmha.lab.lock import lab_lock

WARM_S = 30.0
TIMEOUT_S = 120.0
GOAL_S = 10.0
POLICY = {"host": "auto", "guest": "auto", "priority": 500}
CONTROLLER = {"restart_backoff_s": 1.0, "host_return_healthy_s": 3.0,
              "fence_rate_interval_s": 2.0, "verify_poll_s": 0.5, "job_poll_s": 0.5,
              "fence_poll_s": 0.5}


def _client(lab_dir: Path, token: str) -> httpx.Client:
    return httpx.Client(base_url=controllers.api_url(state.load(lab_dir)), timeout=10,
                        headers={"Authorization": f"Bearer {token}"})


def _events(lab_dir: Path, token: str, since: int) -> list[dict[str, Any]]:
    with _client(lab_dir, token) as client:
        page = client.get("/v1/events", params={"since": since, "limit": 1000})
        page.raise_for_status()
        return list(page.json()["items"])


def _cursor(lab_dir: Path, token: str) -> int:
    since = 0
    while True:
        items = _events(lab_dir, token, since)
        if not items:
            return since
        since = max(int(e["id"]) for e in items)


def _first(events: list[dict[str, Any]], etype: str, subject: str) -> float | None:
    return next((float(e["time"]) for e in events
                 if e["type"] == etype and e["subject"] == subject), None)


def _answers(address: str) -> bool:
    try:
        return httpx.get(f"http://{address}:8080/health", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def one_run(lab_dir: Path, token: str, victim: str) -> dict[str, Any]:
    st = state.load(lab_dir)
    names = {domain_uuid(v["id"]): n for n, v in st["vms"].items()}
    addresses = {n: v["address"] for n, v in st["vms"].items()}
    old = controllers.wait_leader(st)
    since, load = _cursor(lab_dir, token), labrun.load1()
    t_off = time.time()
    faults.fail(lab_dir, victim, "power-off")
    os.kill(st["controllers"][old]["pid"], signal.SIGKILL)
    killed_s = time.time() - t_off
    qemu: dict[str, tuple[float, str]] = {}
    app: dict[str, float] = {}
    twice: list[Any] = []
    takeover = None
    done = threading.Event()

    def poll_apps(name: str, address: str) -> None:
        while not done.is_set() and name not in app:
            if _answers(address):
                app[name] = time.time()
            done.wait(0.05)

    threads = [threading.Thread(target=poll_apps, args=(n, a), daemon=True)
               for n, a in addresses.items()]
    for t in threads:
        t.start()
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while len(app) < len(addresses) or len(qemu) < len(addresses):
            if time.monotonic() > deadline:
                raise RuntimeError(f"not recovered after {TIMEOUT_S:g} s: {sorted(app)} "
                                   f"answer; see {lab_dir}")
            now = time.time()
            if takeover is None:
                lead = controllers.leader_of(controllers.groups(state.load(lab_dir)))
                takeover = now if lead not in (None, old) else None
            for uuid, hosts in vms.qemu_processes(st).items():
                if len(hosts) > 1:
                    twice.append((now, names.get(uuid), hosts))
                away = [h for h in hosts if h != victim]
                if uuid in names and away and names[uuid] not in qemu:
                    qemu[names[uuid]] = (now, away[0])
            time.sleep(0.1)
    finally:
        done.set()
        for t in threads:
            t.join(2)
    events = _events(lab_dir, token, since)
    failed, fenced = _first(events, "host.failed", victim), _first(events, "host.fenced", victim)

    def rel(t: float | None) -> float | None:
        return None if t is None else round(t - t_off, 3)

    return {"victim": victim, "killed_leader": old, "load1": load,
            "kill_after_s": round(killed_s, 3), "takeover_s": rel(takeover),
            "failed_s": rel(failed), "fenced_s": rel(fenced),
            "started_s": rel(max(t for t, _ in qemu.values())),
            "recovered_s": rel(max(app.values())),
            "vms": {n: {"target": qemu[n][1], "qemu_s": rel(qemu[n][0]), "app_s": rel(app[n])}
                    for n in sorted(addresses)},
            "guest_on_two_hosts": twice}


def restore(lab_dir: Path, token: str, victim: str, killed: str) -> None:
    faults.power_on(lab_dir, killed)
    if lab_ops.status(lab_dir)["hosts"][victim]["state"] == "powered-off":
        faults.power_on(lab_dir, victim)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with _client(lab_dir, token) as client:
            if client.get(f"/v1/hosts/{victim}").json()["state"] == "up":
                return
        time.sleep(0.5)
    raise RuntimeError(f"{victim} not up again; see {lab_dir}")


def carrier(lab_dir: Path) -> str:
    placed = [v["host"] for v in vms.status(lab_dir)["instances"].values()]
    return max(set(placed), key=placed.count)


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("takeover_s", "failed_s", "fenced_s", "started_s", "recovered_s"):
        values = [r[key] for r in runs if r[key] is not None]
        if values:
            out[key] = {"median": round(statistics.median(values), 3),
                        "max": round(max(values), 3)}
    out["goal_s"] = GOAL_S
    out["load1_median"] = round(statistics.median(r["load1"] for r in runs), 2)
    return out


def measure(runs: int, lease_s: float, n_vms: int, interval_s: float) -> dict[str, Any]:
    settings = lab_ops.LabSettings(
        hosts=3, heartbeat_interval_s=interval_s, watchdog_timeout_s=5.0,
        controller_port=8797, heartbeat_port=8798, controllers=3, lease_s=lease_s,
        controller=CONTROLLER)
    conditions = labrun.conditions()
    done: list[dict[str, Any]] = []
    with lab_lock(), tempfile.TemporaryDirectory(prefix="vmha-failover-lab-") as tmp:
        lab_dir = Path(tmp)
        try:
            token = lab_ops.up(lab_dir, settings)["controller"]["token"]
            vms.create(lab_dir, n_vms, [POLICY] * n_vms, hosts=["host1"], wait=True)
            powered_on = time.time()
            for i in range(runs):
                time.sleep(max(0.0, powered_on + WARM_S - time.time()))
                victim = carrier(lab_dir)
                run = one_run(lab_dir, token, victim)
                done.append(run)
                print(f"run {i + 1}: {victim} off, {run['killed_leader']} killed: takeover "
                      f"{run['takeover_s']} failed {run['failed_s']} fenced {run['fenced_s']} "
                      f"recovered {run['recovered_s']} s (load {run['load1']})", flush=True)
                restore(lab_dir, token, victim, run["killed_leader"])
                powered_on = time.time()
        finally:
            faults.down(lab_dir)
    return {"benchmark": "failover_host_failure", **conditions,
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "settings": {"controllers": 3, "etcd_members": 3, "hosts": 3, "vms": n_vms,
                         "lease_s": lease_s, "heartbeat_interval_s": interval_s,
                         "warm_s": WARM_S, "store": "postgresql", **CONTROLLER},
            "runs": done, "summary": summary(done)}
