"""Application HA on the real lab: an application killed -> detected -> answering again.

A one-host lab (real agent, embedded libvirt, the controller in libvirt
mode) gets four QEMU guests; each guest's application is probed by the
host's agent (http `/health`, every `--interval` s, `--threshold` failures
in a row; failures are not counted for `INITIAL_DELAY_S` after a boot):

  vmE  app auto, escalation [exec:/etc/init.d/app restart, reset]
  vmR, vmS  app auto, escalation [reset] (taking turns: a reset guest's
       probe counts failures only `INITIAL_DELAY_S` after its boot)
  vm4  app notify (only probed; the probe-cost phase)

Phase 1 (`--runs` of each escalation, alternating): the application of
vmE, or of vmR / vmS, is killed through the guest's failure control (`app-kill`); this script polls
`/health` every 0.05 s and records, wall clock:

  down      the first poll that failed (the kill acts ~0.2 s after the request)
  detected  the controller's `instance.app_failed` event
  step      the recovery job's first step started (job steps, the controller's clock)
  answer    the first poll that answered again

and reports detect (down -> detected), step_to_answer (step -> answer: the
in-guest restart, or the reset and the boot under TCG), detected_to_answer
and the total (down -> answer). A run waits for its job to end `done`
(the agent reported `app_recovered`); after a reset the next kill of that
VM waits until the probe counts failures again. Goals (issue 14):
detection <= interval x threshold + 0.5 s, in-guest restart to answering
<= 2 s.

Phase 2: the probe cost on the agent. The agent process's CPU
(utime+stime from /proc) and RSS are sampled for `--cost-s` seconds with
the 4 probes of phase 1 (baseline), then again after the four policies
get 50 http probes at 1 s in all and `app: notify` (distinct URLs
`/health?p=N` of the lab guests, or with `--cost-target local` of an HTTP
server of this script on the lab's root bridge); each window records the
`instance.app_failed` events it saw. Goal: the agent below 2 % of one core
with 50 probes.

Needs root; takes the lab lock itself (waits while another lab runs).
Run: `.venv/bin/python bench/app_probe.py [--runs 10] [--cost-s 60]`; prints
a table and writes bench/results/app_probe.json (settings, date, commit,
load averages at the start, per run and at the end). `--cost-only` runs
phase 2 alone (once every guest answers, after `SETTLE_S`) and writes
bench/results/app_probe_cost.json instead, leaving phase 1's figures
(`app_probe_cost_local.json` with `--cost-target local`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import labrun  # bench/labrun.py (this script's folder is on sys.path)

from vmha.lab import faults, net, state, vms
from vmha.lab import lab as lab_ops
from vmha.lab.controller import api_request
from vmha.lab.image import APP_COMMAND
from vmha.lab.lock import lab_lock

RESULTS = Path(__file__).parent / "results" / "app_probe.json"
COST_RESULTS = RESULTS.with_name("app_probe_cost.json")
SETTLE_S = 10.0  # --cost-only: after every guest answers, before the baseline
INITIAL_DELAY_S = 30.0  # as the lab default: TCG boots slowly under load
TOTAL_PROBES = 50
CONTROLLER = {"restart_backoff_s": 1.0, "verify_poll_s": 0.5, "job_poll_s": 0.5}
SETTINGS = lab_ops.LabSettings(hosts=1, heartbeat_interval_s=1.0, controller_port=8781,
                               heartbeat_port=8782, controller=CONTROLLER, bmcs=False)
STEPS = {"vmE": [f"exec:{APP_COMMAND} restart", "reset"], "vmR": ["reset"],
         "vmS": ["reset"]}
HZ = os.sysconf("SC_CLK_TCK")


def wait_until(check: Callable[[], Any], timeout_s: float, what: str,
               every_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")


def app_answers(address: str) -> bool:
    try:
        return httpx.get(f"http://{address}:8080/health", timeout=0.3).status_code == 200
    except httpx.HTTPError:
        return False


def probe(address: str, interval: float, threshold: int, n: int = 0,
          port: int = 8080) -> dict[str, Any]:
    query = f"?p={n}" if n else ""
    return {"kind": "http", "target": f"http://{address}:{port}/health{query}",
            "interval_s": interval, "timeout_s": min(0.9, interval * 0.9),
            "failure_threshold": threshold, "initial_delay_s": INITIAL_DELAY_S}


def policy(name: str, address: str, interval: float, threshold: int,
           probes: int = 1, port: int = 8080, notify: bool = False) -> dict[str, Any]:
    escalation = STEPS.get(name)
    app = "auto" if escalation and not notify else "notify"
    return {"host": "auto", "guest": "auto", "app": app,
            "app_actions": escalation or ["reset"], "app_grace_s": 20,
            "max_restarts": 1000, "window_s": 60, "guest_ping_s": 0,
            "probes": [probe(address, interval, threshold, n, port) for n in range(probes)]}


class Bench:
    def __init__(self, lab_dir: Path, interval: float, threshold: int) -> None:
        self.dir = lab_dir
        self.interval, self.threshold = interval, threshold
        st = state.load(lab_dir)
        self.api = httpx.Client(base_url=st["controller"]["url"], timeout=10, headers={
            "Authorization": f"Bearer {st['controller']['token']}"})
        self.ids = {n: v["id"] for n, v in st["vms"].items()}
        self.addr = {n: v["address"] for n, v in st["vms"].items()}
        self.booted: dict[str, float] = {}  # vm -> when its last reset was done

    def cursor(self) -> int:
        since = 0
        while True:
            page = self.api.get("/v1/events", params={"since": since, "limit": 500}).json()
            if not page["items"]:
                return since
            since = page["next_since"]

    def event(self, etype: str, name: str, since: int) -> dict[str, Any] | None:
        items = self.api.get("/v1/events", params={"type": etype, "since": since,
                                                   "subject": self.ids[name]}).json()["items"]
        return items[0] if items else None

    def count(self, etype: str, since: int) -> int:
        items = self.api.get("/v1/events", params={"type": etype, "since": since,
                                                   "limit": 500}).json()["items"]
        return len(items)

    def newest_job(self, name: str) -> dict[str, Any] | None:
        items = self.api.get("/v1/jobs", params={
            "kind": "instance_recovery", "subject": self.ids[name], "limit": 500}).json()["items"]
        return max(items, key=lambda j: j["created_at"]) if items else None

    def run(self, name: str) -> dict[str, Any]:
        """Kill `name`'s application once; the times of its recovery."""
        ready = self.booted.get(name, 0.0) + INITIAL_DELAY_S + 1.0
        if time.time() < ready:
            time.sleep(ready - time.time())
        before = (self.newest_job(name) or {}).get("id")
        since, load = self.cursor(), labrun.load1()
        vms.guest_fault(self.dir, name, "app-kill")
        down = wait_until(lambda: None if app_answers(self.addr[name]) else time.time(), 5,
                          f"{name}'s app down", every_s=0.05)
        answer = wait_until(lambda: time.time() if app_answers(self.addr[name]) else None, 120,
                            f"{name}'s app answering again", every_s=0.05)
        failed = wait_until(lambda: self.event("instance.app_failed", name, since), 30,
                            f"{name} app_failed")
        job = wait_until(lambda: (j := self.newest_job(name)) and j["id"] != before
                         and j["state"] in ("done", "failed") and j, 90, f"{name}'s job done")
        steps = [s["name"] for s in job["steps"]]
        step = job["steps"][0]["started_at"]
        if steps[-1] in ("reset", "restart", "reboot"):
            self.booted[name] = job["steps"][-1]["finished_at"] or time.time()
        return {"vm": name, "job": job["id"], "job_state": job["state"], "steps": steps,
                "load1": load, "down": down, "detected": failed["time"], "step": step,
                "answer": answer, "detect_s": round(failed["time"] - down, 3),
                "step_to_answer_s": round(answer - step, 3),
                "detected_to_answer_s": round(answer - failed["time"], 3),
                "total_s": round(answer - down, 3)}

    def set_probes(self, per_vm: dict[str, int], local: tuple[str, int] | None = None
                   ) -> None:
        """`count` probes of each VM's application at 1 s, `app: notify` (a
        probe that fails under the load resets no guest); `local`: of that
        (address, port) instead of the guests."""
        for name, count in per_vm.items():
            address, port = local or (self.addr[name], 8080)
            body = {"policy": policy(name, address, 1.0, self.threshold, count, port,
                                     notify=True)}
            got = self.api.patch(f"/v1/instances/{self.ids[name]}", json=body)
            got.raise_for_status()


def agent_pid(lab_dir: Path) -> int:
    st = state.load(lab_dir)
    pid = lab_ops.agent_pid(st["hosts"]["host1"])
    if pid is None:
        raise RuntimeError("host1's agent is not running")
    return pid


def cost(pid: int, seconds: float) -> dict[str, Any]:
    """The process's CPU (% of one core: all, user, system) and RSS over `seconds`."""
    def ticks() -> tuple[int, int]:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]), int(fields[12])

    def rss_mib() -> float:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    start_t, start_c, rss = time.monotonic(), ticks(), []
    load = [labrun.load1()]
    while time.monotonic() - start_t < seconds:
        time.sleep(1.0)
        rss.append(rss_mib())
    end_c = ticks()
    user, system = ((end_c[i] - start_c[i]) / HZ for i in (0, 1))
    load.append(labrun.load1())
    took = time.monotonic() - start_t
    return {"seconds": round(took, 1),
            "cpu_percent_of_one_core": round(100 * (user + system) / took, 2),
            "user_percent": round(100 * user / took, 2),
            "system_percent": round(100 * system / took, 2),
            "rss_mib_median": round(statistics.median(rss), 1),
            "rss_mib_max": round(max(rss), 1), "load1_start_end": load}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(runs)}
    for key in ("detect_s", "step_to_answer_s", "detected_to_answer_s", "total_s"):
        values = [r[key] for r in runs]
        out[key] = {"median": round(statistics.median(values), 3), "max": round(max(values), 3),
                    "min": round(min(values), 3)}
    return out


NAMES = ["vmE", "vmR", "vmS", "vm4"]


def measure(args: argparse.Namespace, lab_dir: Path) -> dict[str, Any]:
    ensure_vms(lab_dir, NAMES, args.interval, args.threshold)
    bench = Bench(lab_dir, args.interval, args.threshold)
    time.sleep(INITIAL_DELAY_S + 1)
    runs: dict[str, list[dict[str, Any]]] = {"exec": [], "reset": []}
    for i in range(args.runs):
        for kind, name in (("exec", "vmE"), ("reset", ("vmR", "vmS")[i % 2])):
            got = bench.run(name)
            runs[kind].append(got)
            print(f"run {i + 1} {name}: detect {got['detect_s']:.2f} s, step->answer "
                  f"{got['step_to_answer_s']:.2f} s, total {got['total_s']:.2f} s "
                  f"{got['steps']} (load {got['load1']})", flush=True)
    return {"exec": {"summary": summary(runs["exec"]), "runs": runs["exec"]},
            "reset": {"summary": summary(runs["reset"]), "runs": runs["reset"]},
            "agent_cost": agent_cost(args, lab_dir, bench)}


def measure_cost(args: argparse.Namespace, lab_dir: Path) -> dict[str, Any]:
    ensure_vms(lab_dir, NAMES, args.interval, args.threshold)
    bench = Bench(lab_dir, args.interval, args.threshold)
    wait_until(lambda: all(app_answers(bench.addr[n]) for n in NAMES), 120,
               "every guest's application answering")
    time.sleep(SETTLE_S)
    return {"agent_cost": agent_cost(args, lab_dir, bench)}


class LocalApp:
    """`--cost-target local`: an HTTP application on the lab's root bridge
    (reached by host1's agent over its veth, like a guest over its tap) that
    answers every GET `200 ok`, one request per connection, on threads of
    this process, so 50 probes a second all pass (a TCG guest's busybox
    httpd forks per request and falls behind)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "3")
                self.end_headers()
                self.wfile.write(b"ok\n")

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # a real server's backlog, not socketserver's 5:
            # the agent starts the checks due within 0.1 s together, and 5 SYNs
            # beyond the backlog would be dropped (a retry 1 s later: a timeout)

        self.server = Server((net.BRIDGE_ADDR, 0), Handler)
        self.address = (net.BRIDGE_ADDR, int(self.server.server_address[1]))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def agent_cost(args: argparse.Namespace, lab_dir: Path, bench: Bench) -> dict[str, Any]:
    """Phase 2: the agent with the 4 probes, then with 50 at 1 s (`app:
    notify`: no guest is reset meanwhile), each window with the
    `instance.app_failed` events it saw (probes that failed under the load)."""
    pid = agent_pid(lab_dir)
    since = bench.cursor()
    base = {**cost(pid, args.cost_s), "app_failed_events": bench.count("instance.app_failed",
                                                                       since)}
    per_vm = {n: TOTAL_PROBES // len(NAMES) + (i < TOTAL_PROBES % len(NAMES))
              for i, n in enumerate(NAMES)}
    local = LocalApp() if args.cost_target == "local" else None
    try:
        bench.set_probes(per_vm, local.address if local else None)
        time.sleep(5)  # the agent pulls its probe document again (ETag) and starts them
        since = bench.cursor()
        loaded = {**cost(pid, args.cost_s),
                  "app_failed_events": bench.count("instance.app_failed", since)}
    finally:
        if local is not None:
            local.close()
    return {"pid": pid, "target": args.cost_target, "baseline_4_probes": base,
            f"with_{TOTAL_PROBES}_probes_at_1s": loaded, "probes_per_vm": per_vm}


def ensure_vms(lab_dir: Path, names: list[str], interval: float, threshold: int) -> None:
    """Four guests on host1 under the names this script uses."""
    st = state.load(lab_dir)
    url, token = st["controller"]["url"], st["controller"]["token"]
    vms.ensure_vm_network()
    for index, name in enumerate(names, start=1):
        body = vms.instance_body(index, "host1")
        address = vms.vm_address(index)
        body["name"] = name
        body["policy"] = policy(name, address, interval, threshold)
        st.setdefault("vms", {})[name] = {"id": body["id"], "index": index, "address": address}
        state.save(lab_dir, st)
        api_request(url, token, "POST", "/v1/instances", body)
    vms.wait_running(lab_dir, names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--threshold", type=int, default=2)
    parser.add_argument("--cost-s", type=float, default=60.0)
    parser.add_argument("--cost-only", action="store_true",
                        help="phase 2 alone; writes app_probe_cost.json")
    parser.add_argument("--label", default="", help="a word saved with the results")
    parser.add_argument("--cost-target", choices=("guests", "local"), default="guests",
                        help="whom the 50 probes ask: the guests' /health, or an HTTP "
                        "server of this script on the lab's root bridge")
    args = parser.parse_args()
    with lab_lock():
        start = labrun.conditions()
        with tempfile.TemporaryDirectory(prefix="vmha-app-probe-") as tmp:
            lab_dir = Path(tmp)
            try:
                lab_ops.up(lab_dir, SETTINGS)
                figures = (measure_cost if args.cost_only else measure)(args, lab_dir)
            finally:
                faults.down(lab_dir)
        goal_detect = args.interval * args.threshold + 0.5
        doc = {"benchmark": "app_probe_cost" if args.cost_only else "app_probe",
               "label": args.label, **start,
               "loadavg_end": [round(x, 2) for x in os.getloadavg()],
               "settings": {"runs": 0 if args.cost_only else args.runs,
                            "probe_interval_s": args.interval,
                            "failure_threshold": args.threshold,
                            "initial_delay_s": INITIAL_DELAY_S, "cost_s": args.cost_s,
                            "cost_target": args.cost_target,
                            "escalations": STEPS, "controller": CONTROLLER},
               "goals": {"detect_s_max": goal_detect, "exec_step_to_answer_s_max": 2.0,
                         "agent_cpu_percent_max": 2.0},
               **figures}
    out = RESULTS if not args.cost_only else COST_RESULTS if args.cost_target == "guests" \
        else COST_RESULTS.with_name("app_probe_cost_local.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    for kind in ("exec", "reset") if not args.cost_only else ():
        s = doc[kind]["summary"]
        print(f"{kind:5}  detect {s['detect_s']['median']:.2f}/{s['detect_s']['max']:.2f} s  "
              f"step->answer {s['step_to_answer_s']['median']:.2f}/"
              f"{s['step_to_answer_s']['max']:.2f} s  total {s['total_s']['median']:.2f}/"
              f"{s['total_s']['max']:.2f} s (median/max of {s['runs']})")
    c = doc["agent_cost"]
    print(f"agent: {c['baseline_4_probes']['cpu_percent_of_one_core']} % CPU with 4 probes, "
          f"{c[f'with_{TOTAL_PROBES}_probes_at_1s']['cpu_percent_of_one_core']} % with "
          f"{TOTAL_PROBES}; RSS {c[f'with_{TOTAL_PROBES}_probes_at_1s']['rss_mib_max']} MiB")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
