"""MTTR on the OpenStack lab: power-off to every protected server ACTIVE elsewhere, per Nova.

For each N in --servers (default 3, 6, 12) a two-host OpenStack lab (real
Keystone, Nova, Placement, Glance; a nova-compute with the fake driver in
each host; the controller with `[cloud] adapter = "openstack"`; BMC
emulators; 1 s heartbeats) gets N servers (`vmha:host=auto`) on host1. Each
run powers off the host carrying all N and records wall-clock times:

  power-off   just before `vmha lab fail HOST power-off`
  detect      vmha's `host.failed` event
  fence       its `host.fenced` event (BMC power-off confirmed)
  force-down  the job's `disable_compute` step finished: Nova answered the
              `PUT /os-services/{id}` (forced down, disabled)
  accepted    the job's last `evacuate:` step finished: Nova accepted the
              last server's evacuation (202)
  active      every server ACTIVE on a survivor with no task, per Nova's
              API (polled every 0.1 s)

The two middle phases come from vmha's job steps (its own clock, when
Nova answered) because Nova's `updated_at` and `created_at` have whole
seconds only; those are checked for the order force-down <= evacuation
created (within Nova's second). Between runs the failed host is powered on
again and must be up in vmha and re-enabled in Nova (vmha un-forces it
once Nova marked its evacuations completed); the next run fails the other
host, which now carries all N (ping-pong). A victim has heartbeated for
WARM_S before it fails (the detector knows its rhythm).

Then, for comparison, Nova's own detection on the same lab: with vmha's
controller stopped, the host carrying the servers is powered off and the
time until `GET /os-services` says its compute is `down` is measured
(Nova's defaults: report_interval 10 s, service_down_time 60 s), once per
lab (so once per server count).

Needs root; takes the lab lock itself (waits while another lab runs):
`.venv/bin/python bench/mttr_openstack.py [--runs 5] [--servers 3,6,12]`;
writes bench/results/mttr_openstack.json (date, commit, load averages at
the start, at each power-off and at the end) and .svg.
"""

from __future__ import annotations

import argparse
import configparser
import datetime
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import labrun  # bench/labrun.py and svgplot.py (this script's folder is on sys.path)
import svgplot
from mttr_lab import events_since, last_event_id, wait_until

from vmha.lab import controller as lab_controller
from vmha.lab import faults, state
from vmha.lab import lab as lab_ops
from vmha.lab.lock import lab_lock
from vmha.lab.openstack import servers
from vmha.lab.openstack.rest import Session

RESULTS = Path(__file__).parent / "results"
HOSTS = ("host1", "host2")
WARM_S = 30.0
GOAL_S = 6.0
CONTROLLER = {"host_return_healthy_s": 3.0, "fence_rate_interval_s": 2.0,
              "verify_poll_s": 0.5, "job_poll_s": 0.5, "fence_poll_s": 0.5,
              "max_parallel_evacuations": 12}
SETTINGS = lab_ops.LabSettings(
    hosts=len(HOSTS), heartbeat_interval_s=1.0, watchdog_timeout_s=5.0,
    controller_port=8797, heartbeat_port=8798, controller=CONTROLLER, cloud="openstack",
)
PHASES = ("detect", "fence", "force_down", "accepted", "active")


def nova_time(text: str) -> float:
    return datetime.datetime.fromisoformat(text.removesuffix("Z")).replace(
        tzinfo=datetime.UTC).timestamp()


class Lab:
    def __init__(self, lab_dir: Path, client: httpx.Client) -> None:
        self.dir, self.api = lab_dir, client
        self.nova: Session = servers.session(state.load(lab_dir))
        self.ids = [v["server_id"] for v in state.load(lab_dir)["servers"].values()]
        self.up_since = {h: time.time() for h in HOSTS}

    def placed(self) -> dict[str, tuple[str, str, str]]:
        """server id -> (host, status, task state), from Nova."""
        found = self.nova.call("GET", "compute", "/servers/detail?all_tenants=1")["servers"]
        return {s["id"]: (s["OS-EXT-SRV-ATTR:host"], s["status"],
                          s["OS-EXT-STS:task_state"] or "") for s in found}

    def carrier(self) -> str:
        hosts = {h for h, _, _ in self.placed().values()}
        return hosts.pop() if len(hosts) == 1 else "host1"


def one_run(lab: Lab, victim: str) -> dict[str, Any]:
    since = last_event_id(lab.api)
    load1 = labrun.load1()
    t_off = time.time()
    faults.fail(lab.dir, victim, "power-off")

    def all_active() -> float | None:
        now = lab.placed()
        ok = all(now[i][0] not in (None, victim) and now[i][1] == "ACTIVE" and not now[i][2]
                 for i in lab.ids)
        return time.time() if ok else None

    t_active = wait_until(all_active, 180, "every server ACTIVE elsewhere", every_s=0.1)
    events = events_since(lab.api, since)

    def first(etype: str, subject: str = victim) -> dict[str, Any]:
        return min((e for e in events if e["type"] == etype and e["subject"] == subject),
                   key=lambda e: e["time"])

    t_fail, t_fence = first("host.failed")["time"], first("host.fenced")["time"]
    job = job_of(lab, events, victim)
    done = {st["name"]: st["finished_at"] for st in job["steps"] if st["state"] == "done"}
    t_down = done["disable_compute"]
    t_acc = max(t for name, t in done.items() if name.startswith("evacuate:"))
    check = nova_order(lab, victim, t_off)
    return {"victim": victim, "load1": load1, "evacuations": check["evacuations"],
            "nova_order_ok": check["ok"],
            "detect": t_fail - t_off, "fence": t_fence - t_fail, "force_down": t_down - t_fence,
            "accepted": t_acc - t_down, "active": t_active - t_acc, "total": t_active - t_off}


def job_of(lab: Lab, events: list[dict[str, Any]], victim: str) -> dict[str, Any]:
    """The host-recovery job of this failure (its `job.started` event)."""
    started = next(e for e in events if e["type"] == "job.started"
                   and e["payload"].get("host") == victim)
    got = lab.api.get(f"/v1/jobs/{started['subject']}")
    got.raise_for_status()
    return dict(got.json())


def nova_order(lab: Lab, victim: str, t_off: float) -> dict[str, Any]:
    """Nova's own records agree: one evacuation per server from the victim,
    each created no earlier than the service's forced-down update (Nova
    keeps whole seconds)."""
    svc = servers.compute_services(lab.nova)[victim]
    migs = [m for i in lab.ids for m in lab.nova.call(
        "GET", "compute", f"/os-migrations?instance_uuid={i}&migration_type=evacuation"
    )["migrations"] if m["source_compute"] == victim and nova_time(m["created_at"]) >= t_off - 1]
    down = nova_time(svc["updated_at"])
    ok = svc["forced_down"] and len(migs) == len(lab.ids) and all(
        nova_time(m["created_at"]) >= down for m in migs)
    return {"evacuations": len(migs), "ok": bool(ok)}


def restore(lab: Lab, victim: str) -> str:
    """Power the victim on; wait until vmha has it up and Nova enabled it."""
    faults.power_on(lab.dir, victim)
    wait_until(lambda: lab.api.get(f"/v1/hosts/{victim}").json()["state"] == "up", 120,
               f"{victim} up in vmha")

    def enabled() -> bool:
        svc = servers.compute_services(lab.nova)[victim]
        return svc["status"] == "enabled" and not svc["forced_down"] and svc["state"] == "up"

    wait_until(enabled, 120, f"{victim} enabled in Nova", every_s=0.5)
    lab.up_since[victim] = time.time()
    return next(h for h in HOSTS if h != victim)


def nova_detection(lab: Lab) -> dict[str, Any]:
    """Nova alone: the controller stopped, a host powered off; until Nova says down."""
    ctl = state.load(lab.dir)["controller"]
    lab_controller.kill_controller(ctl)
    victim = lab.carrier()
    t_off = time.time()
    faults.fail(lab.dir, victim, "power-off")
    t_down = wait_until(lambda: time.time() if servers.compute_services(lab.nova)[victim][
        "state"] == "down" else None, 300, "Nova to see the compute down", every_s=0.5)
    lab_controller.restart_controller(ctl)
    with state.changing(lab.dir):  # only the controller's record: a fault may have changed
        st = state.load(lab.dir)
        st["controller"] = ctl
        state.save(lab.dir, st)
    return {"host": victim, "detect_s": round(t_down - t_off, 2),
            "settings": nova_service_settings(lab.dir)}


# Nova's defaults (nova/conf/service.py, nova 34.0.0 as installed in the lab's venv)
NOVA_DEFAULTS = {"report_interval": 10, "service_down_time": 60}


def nova_service_settings(lab_dir: Path) -> dict[str, Any]:
    """report_interval and service_down_time as the lab's Nova runs them:
    its configuration files' values, else Nova's defaults."""
    found: dict[str, Any] = dict(NOVA_DEFAULTS)
    conf_dir = Path(state.load(lab_dir)["openstack"]["dir"]) / "etc" / "nova"
    for conf in sorted(conf_dir.glob("*.conf")):
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        parser.read(conf)
        for key in NOVA_DEFAULTS:
            if parser.has_option("DEFAULT", key):
                found[key] = parser.getint("DEFAULT", key)
    source = "the lab's nova configuration files (none sets them: Nova's defaults, " \
             "nova/conf/service.py)" if found == NOVA_DEFAULTS else "the lab's nova configuration"
    return {**found, "source": source}


# Masakari, for comparison (not run here): its host-failure flow sleeps a fixed
# period after disabling the failed host's compute service, before it evacuates.
MASAKARI = {
    "wait_period_after_service_update_s": 180,
    "what": "masakari-engine's host-failure flow: DisableComputeServiceTask disables the "
            "compute service, then sleeps wait_period_after_service_update (default 180 s) "
            "\"until nova recognizes the node down\" before any evacuation starts",
    "source": "openstack/masakari: masakari/conf/engine.py (default 180), "
              "masakari/engine/drivers/taskflow/host_failure.py (DisableComputeServiceTask)",
}


def measure(n: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vmha-mttr-os-") as tmp:
        lab_dir = Path(tmp)
        try:
            started = time.monotonic()
            st = lab_ops.up(lab_dir, SETTINGS)
            up_s = time.monotonic() - started
            ctl = st["controller"]
            with httpx.Client(base_url=ctl["url"], timeout=10,
                              headers={"Authorization": f"Bearer {ctl['token']}"}) as client:
                client.patch("/v1/segments/lab", json={"mass_failure_threshold": 1.0}
                             ).raise_for_status()
                servers.create(lab_dir, n, hosts=["host1"])
                lab = Lab(lab_dir, client)
                done = []
                victim = "host1"
                for i in range(runs):
                    time.sleep(max(0.0, lab.up_since[victim] + WARM_S - time.time()))
                    run = one_run(lab, victim)
                    done.append(run)
                    print(f"  {n} servers, run {i + 1}: " + " ".join(
                        f"{p} {run[p]:.2f}" for p in (*PHASES, "total"))
                        + f" (load {run['load1']})", flush=True)
                    victim = restore(lab, victim)
                nova = nova_detection(lab)
                print(f"  Nova's own detection: {nova['detect_s']} s", flush=True)
            return {"servers": n, "lab_up_s": round(up_s, 1),
                    "openstack_start": st.get("openstack", {}).get("timings"),
                    "runs": done, "summary": summarize(done), "nova_detection": nova}
        finally:
            faults.down(lab_dir)


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {k: {"median": round(statistics.median(r[k] for r in runs), 3),
                "max": round(max(r[k] for r in runs), 3)} for k in (*PHASES, "total")}


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'servers':>7} " + " ".join(f"{p:>16}" for p in (*PHASES, "total")))
    for r in results:
        s = r["summary"]
        print(f"{r['servers']:>7} " + " ".join(
            f"{s[p]['median']:>7.2f} /{s[p]['max']:>7.2f}" for p in (*PHASES, "total")))
    for r in results:
        load = statistics.median(run["load1"] for run in r["runs"])
        print(f"{r['servers']} servers: 1-min load at power-off (median) {load:.2f}; Nova's own "
              f"detection {r['nova_detection']['detect_s']} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--servers", default="3,6,12", help="comma-separated server counts")
    parser.add_argument("--merge", action="store_true",
                        help="keep the JSON's results of other server counts (each result "
                             "keeps its own date, commit and load)")
    args = parser.parse_args()
    counts = [int(v) for v in args.servers.split(",")]
    kept: list[dict[str, Any]] = []
    if args.merge and (RESULTS / "mttr_openstack.json").exists():
        old = json.loads((RESULTS / "mttr_openstack.json").read_text())
        kept = [r for r in old["results"] if r["servers"] not in counts]
    with lab_lock():
        start = labrun.conditions()
        results: list[dict[str, Any]] = list(kept)
        for n in counts:
            print(f"{n} servers on the failed host, {args.runs} runs", flush=True)
            results.append({**measure(n, args.runs), "measured": labrun.conditions()})
            results.sort(key=lambda r: r["servers"])
            write(start, results, sorted({*counts, *(r["servers"] for r in kept)}))
    print_table(results)


def write(start: dict[str, Any], results: list[dict[str, Any]], counts: list[int]) -> None:
    six = next((r for r in results if r["servers"] == 6), None)
    goal_met = six is not None and six["summary"]["total"]["median"] <= GOAL_S
    doc = {"benchmark": "mttr_openstack", **start,
           "loadavg_1_5_15_at_end": labrun.conditions()["loadavg_1_5_15"],
           "complete": len(results) == len(counts),
           "goal": {"six_servers_total_median_max_s": GOAL_S, "met": goal_met},
           "settings": {"lab": {k: v for k, v in SETTINGS.__dict__.items()
                                if k != "controller"}, "controller": CONTROLLER,
                        "warm_s": WARM_S, "servers": counts},
           "phases": {"detect": "power-off -> host.failed", "fence": "host.failed -> host.fenced",
                      "force_down": "host.fenced -> Nova answered the force-down (job step)",
                      "accepted": "force-down -> Nova accepted the last evacuation (job step)",
                      "active": "last evacuation accepted -> every server ACTIVE elsewhere "
                                "(Nova's API, polled 0.1 s)",
                      "total": "power-off -> every server ACTIVE elsewhere"},
           "nova_detection_s": [r["nova_detection"]["detect_s"] for r in results],
           "nova_detection": "vmha's controller stopped, the host carrying the servers "
                             "powered off: until GET /os-services says its compute is down "
                             "(Nova alone never evacuates)",
           "masakari": MASAKARI,
           "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mttr_openstack.json").write_text(json.dumps(doc, indent=2) + "\n")
    groups = [f"{r['servers']} servers" for r in results]
    series = [(p, [r["summary"][p]["median"] for r in results]) for p in PHASES]
    (RESULTS / "mttr_openstack.svg").write_text(encoding="utf-8", data=svgplot.stacked_bars(
        "vmha on Nova: power-off to every server ACTIVE elsewhere (medians, 1 s heartbeats)",
        groups, series, goal=(GOAL_S, f"goal: ≤ {GOAL_S:g} s for 6 servers")))
    if six is not None:
        print(f"goal (6 servers, median total <= {GOAL_S:g} s): "
              f"{'met' if goal_met else 'NOT met'}", flush=True)
    print(f"wrote {RESULTS / 'mttr_openstack.json'} and {RESULTS / 'mttr_openstack.svg'}",
          flush=True)


if __name__ == "__main__":
    main()
