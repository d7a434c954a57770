"""MTTR on the real lab: power-off to every VM's application answering again.

For each N in --vms (default 1, 2, 4) a two-host lab (real agents, BMC
emulators, the controller in libvirt mode, 1 s heartbeats) gets N protected
QEMU guests, all on host1. Each run powers off the host carrying all N,
then records wall-clock times:

  power-off  just before `vmha lab fail HOST power-off` kills the host
  detect     the controller's `host.failed` event
  fence      its `host.fenced` event (BMC power-off confirmed)
  dispatch   the last VM "defined on TARGET and started" (the agent's
             answer to `PUT /v1/domains`, from the controller's serve.log)
  app        the last VM's /health answering again (polled by this script)

and reports detect, fence, dispatch (fenced -> last start answered),
boot (last start answered -> last app answering, guest boot under TCG),
detect+fence+dispatch and the total MTTR. Between runs the failed host is
powered on again and must be `up` before the next run; the next run fails
the other host, which now carries all N VMs (ping-pong), so every run has
exactly N VMs on the failed host and nothing else running anywhere. A victim
has been heartbeating for at least WARM_S (the detector knows its rhythm).

Needs root; takes the lab lock itself (waits while another lab runs).
Run: `.venv/bin/python bench/mttr_lab.py [--runs 5] [--vms 1,2,4]`; prints
a table and writes bench/results/mttr_lab.json (with the date, the load
averages, the lab's power-off model — "silent" since issue 17 — and, under
`previous`, the summaries of the other power-off model: bench/labrun.py)
and bench/results/mttr_lab.svg.
"""

from __future__ import annotations

import argparse
import datetime
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import labrun  # bench/labrun.py and bench/svgplot.py (this script's folder is on sys.path)
import svgplot

from vmha.adapters.cloud.libvirt import domain_uuid
from vmha.lab import faults, state, vms
from vmha.lab import lab as lab_ops
from vmha.lab.lock import lab_lock
from vmha.lab.powerctl import LabHostPower

RESULTS = Path(__file__).parent / "results"
HOSTS = ("host1", "host2")
WARM_S = 30.0
RECOVER_TIMEOUT_S = 180.0
GOAL_S = 6.0
POLICY = {"host": "auto", "guest": "auto", "priority": 500}
CONTROLLER = {"restart_backoff_s": 1.0, "host_return_healthy_s": 3.0,
              "fence_rate_interval_s": 2.0, "verify_poll_s": 0.5, "job_poll_s": 0.5,
              "fence_poll_s": 0.5}
SETTINGS = lab_ops.LabSettings(
    hosts=len(HOSTS), heartbeat_interval_s=1.0, watchdog_timeout_s=5.0,
    controller_port=8797, heartbeat_port=8798, controller=CONTROLLER,
)
STARTED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*instance (vm\d+): defined on "
                     r"(\S+) and started")
PHASES = ("detect", "fence", "dispatch", "boot")


def wait_until(check: Callable[[], Any], timeout_s: float, what: str,
               every_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")


def events_since(client: httpx.Client, since: int) -> list[dict[str, Any]]:
    """Every event after id `since` (all pages)."""
    out: list[dict[str, Any]] = []
    while True:
        page = client.get("/v1/events", params={"since": since, "limit": 500})
        page.raise_for_status()
        body = page.json()
        if not body["items"]:
            return out
        out.extend(body["items"])
        since = body["next_since"]


def last_event_id(client: httpx.Client) -> int:
    items = events_since(client, 0)
    return int(items[-1]["id"]) if items else 0


def app_answers(address: str) -> bool:
    try:
        return httpx.get(f"http://{address}:8080/health", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


class AppWatch:
    """One thread per VM: the wall time its /health first answers."""

    def __init__(self, addresses: dict[str, str]) -> None:
        self.answered: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, args=(n, a), daemon=True)
                         for n, a in addresses.items()]
        for thread in self._threads:
            thread.start()

    def _poll(self, name: str, address: str) -> None:
        while not self._stop.is_set():
            if app_answers(address):
                self.answered[name] = time.time()
                return
            self._stop.wait(0.05)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)


def started_lines(serve_log: Path, after: float) -> dict[str, tuple[float, str]]:
    """VM name -> (wall time, host) of its latest "defined on H and started"
    line in the controller's log after `after`."""
    found: dict[str, tuple[float, str]] = {}
    for line in serve_log.read_text(errors="replace").splitlines():
        m = STARTED.match(line)
        if not m:
            continue
        at = datetime.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if at >= after:
            found[m[2]] = (at, m[3])
    return found


def first_event(events: list[dict[str, Any]], etype: str, subject: str,
                required: bool = True) -> float:
    """Wall time of the first `etype` event about `subject` (0.0 if none
    and not `required`)."""
    for e in events:
        if e["type"] == etype and e["subject"] == subject:
            return float(e["time"])
    if required:
        raise RuntimeError(f"no {etype} event for {subject}")
    return 0.0


class Lab:
    """One lab for one N: its dir, API client, VMs and when hosts powered on."""

    def __init__(self, lab_dir: Path, client: httpx.Client) -> None:
        self.dir = lab_dir
        self.client = client
        recorded = state.load(lab_dir)["vms"]
        self.ids = {n: v["id"] for n, v in recorded.items()}
        self.addresses = {n: v["address"] for n, v in recorded.items()}
        self.powered_on = dict.fromkeys(HOSTS, time.time())
        self.twice: list[tuple[float, str, list[str]]] = []

    def host_state(self, name: str) -> str:
        got: str = self.client.get(f"/v1/hosts/{name}").json()["state"]
        return got

    def carrier(self) -> str:
        """The one host running every VM (recorded and by /proc)."""
        now = vms.status(self.dir)["instances"]
        hosts = {v["host"] for v in now.values()}
        qemu = {tuple(v["qemu_on"]) for v in now.values()}
        ok = len(hosts) == 1 and qemu == {(next(iter(hosts)),)}
        ok = ok and all(v["state"] == "running" for v in now.values())
        return str(next(iter(hosts))) if ok else ""


def watch_recovery(lab: Lab, victim: str, apps: AppWatch) -> dict[str, tuple[float, str]]:
    """Poll /proc until every app answers: VM name -> (time, host) its QEMU
    process first appeared away from `victim`; notes any guest on two hosts."""
    st = state.load(lab.dir)
    names = {domain_uuid(iid): name for name, iid in lab.ids.items()}
    seen: dict[str, tuple[float, str]] = {}
    deadline = time.monotonic() + RECOVER_TIMEOUT_S
    while len(apps.answered) < len(names) or len(seen) < len(names):
        if time.monotonic() > deadline:
            raise RuntimeError(f"after {RECOVER_TIMEOUT_S:g} s: apps {sorted(apps.answered)} "
                               f"answer, QEMU seen for {sorted(seen)}; see {lab.dir}")
        now = time.time()
        for uuid, hosts in vms.qemu_processes(st).items():
            if uuid not in names:
                continue
            if len(hosts) > 1:
                lab.twice.append((now, names[uuid], hosts))
            elsewhere = [h for h in hosts if h != victim]
            if elsewhere and names[uuid] not in seen:
                seen[names[uuid]] = (now, elsewhere[0])
        time.sleep(0.1)
    return seen


def one_run(lab: Lab, victim: str) -> dict[str, Any]:
    since = last_event_id(lab.client)
    load = labrun.load1()
    t_off = time.time()
    faults.fail(lab.dir, victim, "power-off")
    killed = time.time()
    apps = AppWatch(lab.addresses)
    try:
        qemu = watch_recovery(lab, victim, apps)
    finally:
        apps.close()
    events = events_since(lab.client, since)
    started = started_lines(lab.dir / "controller" / "serve.log", t_off)
    missing = sorted(set(lab.ids) - set(started))
    if missing:
        raise RuntimeError(f"no 'defined on ... and started' line for {missing} in serve.log")
    suspect = first_event(events, "host.suspect", victim, required=False)
    failed = first_event(events, "host.failed", victim)
    fenced = first_event(events, "host.fenced", victim)
    last_start = max(at for at, _ in started.values())
    last_app = max(apps.answered.values())
    per_vm = {n: {"target": started[n][1],
                  "evacuating_s": round(first_event(events, "instance.evacuating", iid) - t_off, 3),
                  "started_s": round(started[n][0] - t_off, 3),
                  "qemu_seen_s": round(qemu[n][0] - t_off, 3),
                  "app_s": round(apps.answered[n] - t_off, 3),
                  "boot_s": round(apps.answered[n] - started[n][0], 3)}
              for n, iid in sorted(lab.ids.items())}
    run = {"victim": victim, "load1": round(load, 2), "kill_s": round(killed - t_off, 3),
           "suspect_s": round(suspect - t_off, 3) if suspect else None,
           "detect": failed - t_off, "fence": fenced - failed, "dispatch": last_start - fenced,
           "boot": last_app - last_start, "dff": last_start - t_off, "total": last_app - t_off}
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()} | {
        "vms": per_vm, "job_steps": job_steps(lab, victim, t_off)}


def job_steps(lab: Lab, victim: str, t_off: float) -> list[dict[str, Any]]:
    """The steps of `victim`'s newest recovery job, times from the power-off."""
    page = lab.client.get("/v1/jobs", params={"subject": victim, "sort": "created_at",
                                              "desc": "true", "limit": 1})
    page.raise_for_status()
    items = page.json()["items"]
    if not items:
        return []
    job = lab.client.get(f"/v1/jobs/{items[0]['id']}").json()
    return [{"name": s["name"], "start_s": round(s["started_at"] - t_off, 3),
             "took_s": None if s["duration_s"] is None else round(s["duration_s"], 3),
             "detail": s["detail"]} for s in job["steps"]]


def restore(lab: Lab, victim: str) -> str:
    """Power `victim` on, wait until the controller has it up and every VM
    runs (once) on the other host; that host, the next victim."""
    faults.power_on(lab.dir, victim)
    lab.powered_on[victim] = time.time()
    wait_until(lambda: lab.host_state(victim) == "up", 120, f"{victim} up again", 0.5)
    carrier = wait_until(lab.carrier, 60, "every VM running on one host", 0.5)
    if carrier == victim:
        raise RuntimeError(f"the VMs are back on {victim}, which was powered off")
    return str(carrier)


def log_findings(lab_dir: Path) -> dict[str, Any]:
    """Warnings and errors in the controller's and agents' logs: count and
    the first few distinct messages (timestamps cut) per file."""
    out: dict[str, Any] = {}
    logs = [lab_dir / "controller" / "serve.log", *sorted(lab_dir.glob("hosts/*/agent.log"))]
    for path in logs:
        if not path.exists():
            continue
        hits = [line for line in path.read_text(errors="replace").splitlines()
                if " WARNING " in line or " ERROR " in line or "Traceback" in line]
        distinct = list(dict.fromkeys(line[24:200] for line in hits))
        out[str(path.relative_to(lab_dir))] = {"count": len(hits), "first": distinct[:8]}
    return out


def bmc_backend_call_s(lab_dir: Path, host: str, samples: int = 3) -> float:
    """Median wall time of one power read of the lab BMC emulators' backend
    (`vmha.lab.powerctl.LabHostPower`, run inside the emulator): part of
    every BMC power read and power-off in this lab."""
    power = LabHostPower(lab_dir, host)
    took = []
    for _ in range(samples):
        t0 = time.monotonic()
        power.power_state()
        took.append(time.monotonic() - t0)
    return round(statistics.median(took), 4)


def run_lab(lab: Lab, runs: int) -> list[dict[str, Any]]:
    victim = lab.carrier() or "host1"
    done = []
    for i in range(runs):
        time.sleep(max(0.0, lab.powered_on[victim] + WARM_S - time.time()))
        run = one_run(lab, victim)
        done.append(run)
        print(f"  {len(lab.ids)} VM(s), run {i + 1}: {victim} off; detect {run['detect']:.2f} "
              f"fence {run['fence']:.2f} dispatch {run['dispatch']:.2f} boot {run['boot']:.2f} "
              f"total {run['total']:.2f} s", flush=True)
        victim = restore(lab, victim)
    return done


def measure(n: int, runs: int) -> dict[str, Any]:
    """A fresh lab with `n` VMs on host1, `runs` power-offs."""
    with tempfile.TemporaryDirectory(prefix="vmha-mttr-") as tmp:
        lab_dir = Path(tmp)
        try:
            st = lab_ops.up(lab_dir, SETTINGS)
            ctl = st["controller"]
            with httpx.Client(base_url=ctl["url"], timeout=10,
                              headers={"Authorization": f"Bearer {ctl['token']}"}) as client:
                # one of two hosts failing is half the segment: not a controller cut off
                client.patch("/v1/segments/lab", json={"mass_failure_threshold": 1.0}
                             ).raise_for_status()
                vms.create(lab_dir, n, [POLICY] * n, hosts=["host1"], wait=True)
                lab = Lab(lab_dir, client)
                done = run_lab(lab, runs)
                twice = [list(t) for t in lab.twice]
            return {"vms": n, "runs": done, "summary": summarize(done),
                    "bmc_backend_call_s": bmc_backend_call_s(lab_dir, "host1"),
                    "guest_on_two_hosts": twice, "logs": log_findings(lab_dir)}
        finally:
            faults.down(lab_dir)


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for key in (*PHASES, "dff", "total"):
        values = [r[key] for r in runs]
        out[key] = {"median": round(statistics.median(values), 3),
                    "max": round(max(values), 3)}
    return out


def print_table(results: list[dict[str, Any]]) -> None:
    cols = (*PHASES, "dff", "total")
    heads = {"dff": "det+fen+dis"}
    print(f"{'VMs':>4} {'runs':>5} " + " ".join(f"{heads.get(c, c):>13}" for c in cols))
    print(f"{'':>11}" + " ".join(f"{'median / max':>13}" for _ in cols))
    for r in results:
        s = r["summary"]
        print(f"{r['vms']:>4} {len(r['runs']):>5} " + " ".join(
            f"{s[c]['median']:>6.2f} /{s[c]['max']:>5.2f}" for c in cols))
    for r in results:
        load = statistics.median(run["load1"] for run in r["runs"])
        print(f"{r['vms']} VM(s): 1-min load average at power-off (median) {load:.2f}; one call "
              f"of the lab BMC emulator's power backend {r['bmc_backend_call_s']:.4f} s")


def write_svg(results: list[dict[str, Any]], path: Path) -> None:
    groups = [f"{r['vms']} VM" + ("s" if r["vms"] > 1 else "") for r in results]
    series = [(p, [r["summary"][p]["median"] for r in results]) for p in PHASES]
    path.write_text(encoding="utf-8", data=svgplot.stacked_bars(
        "vmha MTTR on the lab: power-off to every app answering (medians, 1 s heartbeats)",
        groups, series, goal=(GOAL_S, f"goal: det+fence+disp ≤ {GOAL_S:g} s")))


def compact(old: dict[str, Any]) -> dict[str, Any]:
    """What `previous` keeps of an earlier results file: its conditions and
    per VM count the summary, each run's phases and its load."""
    keep = ("victim", "load1", *PHASES, "dff", "total")
    results = [{"vms": r["vms"], "summary": r["summary"],
                "runs": [{k: run[k] for k in keep if k in run} for run in r["runs"]]}
               for r in old["results"]]
    return {**{k: old[k] for k in ("date", "loadavg_1_5_15", "goal", "settings") if k in old},
            "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--vms", default="1,2,4", help="comma-separated VM counts")
    args = parser.parse_args()
    counts = [int(v) for v in args.vms.split(",")]
    results = []
    with lab_lock():
        start = labrun.conditions()
        for n in counts:
            print(f"{n} VM(s) on the failed host, {args.runs} runs", flush=True)
            results.append(measure(n, args.runs))
    print_table(results)
    goal_met = all(r["summary"]["dff"]["median"] <= GOAL_S for r in results)
    print(f"goal (detect+fence+dispatch median <= {GOAL_S:g} s): "
          f"{'met' if goal_met else 'NOT met'}; power-off model {start['power_off_model']}")
    doc = {"benchmark": "mttr_lab", **start,
           "loadavg_1_5_15_at_end": labrun.conditions()["loadavg_1_5_15"],
           "goal": {"dff_median_max_s": GOAL_S, "met": goal_met},
           "settings": {"lab": {k: v for k, v in SETTINGS.__dict__.items() if k != "controller"},
                        "controller": CONTROLLER, "policy": POLICY, "warm_s": WARM_S},
           "phases": {"detect": "power-off -> host.failed", "fence": "host.failed -> host.fenced",
                      "dispatch": "host.fenced -> last VM 'defined on H and started'",
                      "boot": "last start answered -> last app /health answering",
                      "dff": "power-off -> last start answered (detect+fence+dispatch)",
                      "total": "power-off -> every app answering"},
           "results": results}
    labrun.write_results(RESULTS / "mttr_lab.json", doc, compact)
    write_svg(results, RESULTS / "mttr_lab.svg")
    print(f"wrote {RESULTS / 'mttr_lab.json'} and {RESULTS / 'mttr_lab.svg'}")


if __name__ == "__main__":
    main()
