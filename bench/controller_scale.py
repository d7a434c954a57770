"""Benchmark: one controller watching N hosts at 1 s heartbeats (issue 18).

For each N in --hosts, a real `vmha serve` (SQLite, default settings,
heartbeats on 127.0.0.1) gets N agents registered through the API (the
bulk registration call when the controller has it, else one request per
agent; --register store: written into its store before it starts) in one
segment; --senders processes (tests/scale/loadkit.py), each on its own
127.0.0.0/8 address, send real signed heartbeats for their share of
the hosts. Timeline, from the first heartbeat:

  0 .. warmup        the detectors learn the hosts' rhythm (not measured)
  window             --duration seconds, measured:
    +list_from       a client walks `GET /v1/hosts?limit=--page` page after
                     page for --list-for seconds (the listing window)
    +silence_at      --silence hosts stop sending

Recorded per N: heartbeats sent and accepted (the receiver's own counters
from `GET /v1/controller` when the controller has it, and the acks the
senders got), in the window and over the whole run (`whole_run`: every
heartbeat sent against the receiver's count once the senders stopped; the
window's counts are read while heartbeats are in flight), drops by layer
(the kernel's drop counter of the controller's heartbeat socket in
/proc/net/udp, the kernel's UDP RcvbufErrors, the
receiver's drops by reason), controller CPU (the serve process and its
heartbeat worker: % of one core, sampled every second) and RSS, each
silenced host's detection time (its last heartbeat
sent -> its `host.suspect` event), false suspicions (`host.suspect` of a
host still sending; also those inside the listing window, plus 5 s),
`controller.isolated`, `controller.overloaded` and `segment.recovery_paused`
events, page latencies, and how long the controller took to exit on
SIGTERM. Events are read from the SQLite store after the controller exits.

Writes bench/results/controller_scale.json (one entry per --label and N,
replaced when measured again; settings, date and load average with each)
and bench/results/controller_scale.svg.

Several controllers (--controllers 3, issue 15): three real `vmha serve` on
one PostgreSQL database and a one-member etcd (vmha.lab.etcd; one member
leaves the 2 cores to the controllers), the agents registered through a
controller's API; the senders send every heartbeat to every controller
(--send all, what the agents do) or to its owner on the hash ring only
(--send owner, to measure the other way). Recorded per controller: CPU
(process and heartbeat worker, % of one core) and RSS, heartbeats accepted,
its socket's kernel drops; for the group: false suspicions and detection
times of the silenced hosts (spread over the shares) from the leader's
events. Label `3-controllers-<send>`. vmha's agents send to all
controllers, and the controllers' cross-confirmation (the leader's own view,
the witness of its share) assumes each one hears every host: --send owner
measures what owner-only sending would save in the intake; its detection
figures are not those of a supported setup (the witness reports the
leader's share silent: it never hears it).

Usage: .venv/bin/python bench/controller_scale.py --hosts 1000,3000,5000,10000
       .venv/bin/python bench/controller_scale.py --controllers 3 --send all --hosts 30000
The figures before issue 18 (label `before`) were measured on the code
before the issue-18 work (then commit 82ebb76; in main's squashed history
the last commit before that work is a82db06), run from an export of its
tree, its agents written into its store before it starts (it has no bulk
registration; one request per agent took 8 minutes at 3,000 hosts):
    git archive a82db06 src | tar -x -C /tmp/before
    .venv/bin/python bench/controller_scale.py --label before --source /tmp/before/src \
        --register store
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import svgplot  # bench/svgplot.py (this script's folder is on sys.path)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "scale"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "coord"))
from ckit import ControllerGroup, wait_for
from loadkit import (
    Lister,
    Load,
    ProcessSampler,
    Serve,
    cpu_seconds,
    register,
    seed,
    start_senders,
    udp_socket_drops,
    udp_totals,
)

from vmha.adapters.store.testing import pg_admin_url, temporary_pg_database
from vmha.domain.ring import Ring
from vmha.lab.etcd import EtcdCluster

RESULTS = Path(__file__).parent / "results"
COUNTERS = {"accepted", "bad_signature", "replayed", "unknown_host", "malformed",
            "kernel_drops", "acks_sent", "ack_errors", "batches"}  # the rest are levels


@dataclass(frozen=True)
class Plan:
    hosts: int
    duration_s: float = 60.0
    warmup_s: float = 30.0
    senders: int = 4
    silence: int = 5
    silence_at_s: float = 30.0
    list_from_s: float = 5.0
    list_for_s: float = 15.0
    page: int = 1000
    interval_s: float = 1.0


# -- one run ------------------------------------------------------------------------


def controller_stats(serve: Serve) -> dict[str, Any] | None:
    """The controller's own heartbeat counters, when it exposes them."""
    with contextlib.suppress(httpx.HTTPError), serve.client(timeout=30) as client:
        answer = client.get("/v1/controller")
        if answer.status_code == 200:
            return dict(answer.json())
    return None


def kernel_counters(serve: Serve) -> dict[str, Any]:
    totals = udp_totals()
    return {"socket_drops": udp_socket_drops("127.0.0.1", serve.hb_port),
            "udp_rcvbuf_errors": totals.get("RcvbufErrors"),
            "udp_in_errors": totals.get("InErrors")}


def run_one(plan: Plan, label: str, extra_config: str, source: Path | None,
            seeded: bool = False) -> dict[str, Any]:
    names = [f"h{i:05d}" for i in range(plan.hosts)]
    silenced = frozenset(names[i * plan.hosts // plan.silence + 7]
                         for i in range(plan.silence))
    with tempfile.TemporaryDirectory(prefix="vmha-bench-scale-") as tmp:
        serve = Serve(Path(tmp), extra_config, source)
        if seeded:
            secrets, registration = seed(serve, names)
        serve.start()
        assert serve.proc is not None
        try:
            if not seeded:
                secrets, registration = register(serve, names)
            result = _loaded(plan, serve, secrets, silenced)
        finally:
            exit_s = serve.stop() if serve.proc.poll() is None else None
        events = read_events(serve.db)
        tail = serve.log.read_text(errors="replace").splitlines()
    result.update(registration=registration, sigterm_exit_s=exit_s)
    result.update(analyse(events, result.pop("_last_sent"), silenced, result))
    result["log_warnings"] = [ln for ln in tail if " WARNING " in ln or " ERROR " in ln][:10]
    return {"label": label, "hosts": plan.hosts, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": {**asdict(plan), "store": "sqlite", "cpus": os.cpu_count(),
                         "extra_config": extra_config, "commit": _commit(source)},
            **result}


def _commit(source: Path | None) -> str:
    """The commit the controller ran: HEAD of this checkout, or `source`'s
    (an export has no .git: its path is recorded)."""
    if source is not None:
        return f"export at {source}"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    return "unknown"


def _loaded(plan: Plan, serve: Serve, secrets: dict[str, bytes],
            silenced: frozenset[str]) -> dict[str, Any]:
    assert serve.proc is not None
    t0 = time.time() + 2.0
    w0, w1 = t0 + plan.warmup_s, t0 + plan.warmup_s + plan.duration_s
    load = Load(t0, (w0, w1), plan.senders, plan.interval_s, w0 + plan.silence_at_s, silenced)
    senders = start_senders(load, ("127.0.0.1", serve.hb_port), secrets)
    sampler = ProcessSampler(serve.proc.pid)
    sampler.start()
    lister = Lister(serve, plan.page, w0 + plan.list_from_s, plan.list_for_s)
    lister.thread.start()
    load = [os.getloadavg()[0]]
    time.sleep(max(0.0, w0 - time.time()))
    before = (kernel_counters(serve), controller_stats(serve), cpu_seconds(serve.proc.pid))
    load.append(os.getloadavg()[0])
    time.sleep(max(0.0, w1 - time.time()))
    after = (kernel_counters(serve), controller_stats(serve), cpu_seconds(serve.proc.pid))
    load.append(os.getloadavg()[0])
    reports = [reader.recv() for _, reader in senders]
    for proc, _ in senders:
        proc.join(10)
    time.sleep(1.0)  # the intake's last frames
    final = controller_stats(serve)
    lister.thread.join(max(1.0, w1 + 60 - time.time()))
    sampler.stop()
    heartbeats = intake(plan, before, after, reports)
    heartbeats["heartbeats"]["whole_run"] = whole_run(reports, final)
    return {"window": [round(w0, 3), round(w1, 3)], "load_average_1m": load,
            **heartbeats, "controller": {
                **sampler.between(w0, w1),
                "cpu_window_pct": round(100 * (after[2] - before[2]) / plan.duration_s, 1)},
            "listing": {**lister.summary(), "still_waiting": lister.thread.is_alive()},
            "senders": reports_summary(reports),
            "_last_sent": {h: t for r in reports for h, t in r["last_sent"].items()}}


def intake(plan: Plan, before: tuple[Any, ...], after: tuple[Any, ...],
           reports: list[dict[str, Any]]) -> dict[str, Any]:
    sent = sum(r["sent_in_window"] for r in reports)
    acks = sum(r["acks_in_window"] for r in reports)
    kernel = {k: None if before[0][k] is None or after[0][k] is None
              else after[0][k] - before[0][k] for k in before[0]}
    receiver = _receiver_delta(before[1], after[1])
    accepted = receiver.get("accepted") if receiver else None
    return {"heartbeats": {
        "sent": sent, "acked": acks,
        "acked_pct": round(100 * acks / sent, 2) if sent else None,
        "accepted": accepted,
        "accepted_pct": round(100 * accepted / sent, 2) if sent and accepted else None,
        "accepted_per_s": round((accepted if accepted is not None else acks)
                                / plan.duration_s, 1),
        "kernel": kernel, "receiver": receiver}}


def whole_run(reports: list[dict[str, Any]], final: dict[str, Any] | None) -> dict[str, Any]:
    """Every heartbeat sent (warm-up and window) against the receiver's count
    once the senders stopped and the intake drained: the window's counts
    are read while heartbeats are in flight, so they are off by a few
    hundred at either end (acked above 100 %); these are not."""
    sent = sum(r["sent"] for r in reports)
    acks = sum(r["acks"] for r in reports)
    accepted = (final or {}).get("heartbeats", {}).get("accepted")
    return {"sent": sent, "acked": acks, "accepted": accepted,
            "acked_pct": round(100 * acks / sent, 3) if sent else None,
            "accepted_pct": round(100 * accepted / sent, 3) if sent and accepted else None}


def _receiver_delta(before: dict[str, Any] | None,
                    after: dict[str, Any] | None) -> dict[str, Any] | None:
    if not before or not after:
        return None
    b, a = before.get("heartbeats", {}), after.get("heartbeats", {})
    delta = {k: v - b.get(k, 0) if k in COUNTERS else v for k, v in a.items()}
    delta["state_at_end"] = {k: v for k, v in after.items() if k != "heartbeats"}
    return delta


def reports_summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    return {"processes": len(reports), "cpu_s": sum(r["cpu_s"] for r in reports),
            "max_lag_s": max(r["max_lag_s"] for r in reports),
            "send_errors": sum(r["send_errors"] for r in reports),
            "addresses": [r["address"] for r in reports]}


# -- several controllers -------------------------------------------------------------


def run_group(plan: Plan, size: int, send: str, lease_s: float) -> dict[str, Any]:
    names = [f"h{i:05d}" for i in range(plan.hosts)]
    silenced = frozenset(names[i * plan.hosts // plan.silence + 7]
                         for i in range(plan.silence))
    with tempfile.TemporaryDirectory(prefix="vmha-bench-group-") as tmp, \
            temporary_pg_database(pg_admin_url()) as pg_url:
        etcd = EtcdCluster(Path(tmp) / "etcd", 1)
        etcd.start()
        group = ControllerGroup(Path(tmp), f"{etcd.url}/scale", pg_url, size, lease_s=lease_s,
                                step_s=lease_s / 5)
        try:
            group.start()
            result = _group_loaded(plan, group, names, silenced, send)
        finally:
            group.stop()
            etcd.stop()
    result.update(analyse(result.pop("_events"), result.pop("_last_sent"), silenced, result))
    return {"label": f"{size}-controllers-{send}", "hosts": plan.hosts,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": {**asdict(plan), "store": "postgresql", "controllers": size,
                         "send": send, "etcd_members": 1, "lease_s": lease_s,
                         "cpus": os.cpu_count(), "commit": _commit(None)},
            **result}


def _register_group(group: ControllerGroup, names: list[str]) -> dict[str, bytes]:
    first = group.controllers[0]
    first.post("/v1/segments", {"name": "scale"}).raise_for_status()
    secrets: dict[str, bytes] = {}
    for i in range(0, len(names), 1000):
        agents = [{"host": n, "segment": "scale", "address": "127.0.0.1", "version": "bench"}
                  for n in names[i:i + 1000]]
        answer = first.post("/v1/agents/register-batch", {"agents": agents}, timeout=300)
        answer.raise_for_status()
        secrets.update({a["host"]: a["secret"].encode() for a in answer.json()["agents"]})
    return secrets


def _shares_known(group: ControllerGroup, hosts: int) -> bool:
    """Every controller sees the whole group and every host in some share."""
    for c in group.controllers:
        view = c.group() or {}
        members = view.get("members", [])
        if len(members) != len(group.controllers) or \
                sum(m["owned_hosts"] for m in members) != hosts:
            return False
    return True


def _group_loaded(plan: Plan, group: ControllerGroup, names: list[str],
                  silenced: frozenset[str], send: str) -> dict[str, Any]:
    started = time.monotonic()
    secrets = _register_group(group, names)
    registered_s = round(time.monotonic() - started, 1)
    wait_for(lambda: _shares_known(group, plan.hosts), 120, "shares not known everywhere",
             every_s=1.0)
    ctls = group.controllers
    ring = Ring(c.name for c in ctls)
    targets = [("127.0.0.1", c.hb_port) for c in ctls]
    route = None if send == "all" else {h: [c.name for c in ctls].index(ring.owner(h) or "")
                                        for h in names}
    t0 = time.time() + 2.0
    w0, w1 = t0 + plan.warmup_s, t0 + plan.warmup_s + plan.duration_s
    load = Load(t0, (w0, w1), plan.senders, plan.interval_s, w0 + plan.silence_at_s, silenced,
                tuple(targets[1:]), route)
    senders = start_senders(load, targets[0], secrets)
    pids = {c.name: c.proc.pid for c in ctls if c.proc is not None}
    samplers = {n: ProcessSampler(pid) for n, pid in pids.items()}
    for sampler in samplers.values():
        sampler.start()
    loads = [os.getloadavg()[0]]
    time.sleep(max(0.0, w0 - time.time()))
    before = {c.name: _ctl_counters(c, pids[c.name]) for c in ctls}
    leader_at_start = (group.leader() or ctls[0]).name
    loads.append(os.getloadavg()[0])
    time.sleep(max(0.0, w1 - time.time()))
    after = {c.name: _ctl_counters(c, pids[c.name]) for c in ctls}
    loads.append(os.getloadavg()[0])
    reports = [reader.recv() for _, reader in senders]
    for proc, _ in senders:
        proc.join(10)
    for sampler in samplers.values():
        sampler.stop()
    leader = group.leader() or ctls[0]
    per = {}
    for c in ctls:
        b, a = before[c.name], after[c.name]
        per[c.name] = {
            **samplers[c.name].between(w0, w1),
            "cpu_window_pct": round(100 * (a["cpu_s"] - b["cpu_s"]) / plan.duration_s, 1),
            "accepted": _delta(a, b, "accepted"), "kernel_drops": _delta(a, b, "socket_drops"),
            "owned_hosts": a["owned_hosts"], "silent_hosts": a["silent_hosts"],
            "leader": c.name == leader.name}
    sent = sum(r["sent_in_window"] for r in reports)
    return {"window": [round(w0, 3), round(w1, 3)], "load_average_1m": loads,
            "registration": {"mode": "batches of 1000 through a controller's API",
                             "seconds": registered_s},
            "leader": {"at_start": leader_at_start, "at_end": leader.name},
            "heartbeats": {"sent": sent, "datagrams_per_heartbeat":
                           len(ctls) if send == "all" else 1,
                           "accepted_per_controller": {n: p["accepted"] for n, p in per.items()}},
            "controllers": per, "listing": {"window": None},
            "senders": reports_summary(reports),
            "_events": _group_events(leader),
            "_last_sent": {h: t for r in reports for h, t in r["last_sent"].items()}}


def _ctl_counters(c: Any, pid: int) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    with contextlib.suppress(httpx.HTTPError):
        answer = c.get("/v1/controller", timeout=30)
        if answer.status_code == 200:
            stats = answer.json().get("heartbeats", {})
    view = c.group() or {}
    me = next((m for m in view.get("members", []) if m["name"] == c.name), {})
    return {"cpu_s": cpu_seconds(pid), "accepted": stats.get("accepted"),
            "socket_drops": udp_socket_drops("127.0.0.1", c.hb_port),
            "owned_hosts": me.get("owned_hosts"), "silent_hosts": me.get("silent_hosts")}


def _delta(a: dict[str, Any], b: dict[str, Any], key: str) -> int | None:
    return None if a[key] is None or b[key] is None else a[key] - b[key]


def _group_events(leader: Any) -> list[tuple[str, str, float]]:
    out: list[tuple[str, str, float]] = []
    since = 0
    while True:
        page = leader.get(f"/v1/events?since={since}&limit=1000", timeout=30).json()
        out += [(e["type"], e["subject"], e["time"]) for e in page["items"]
                if e["type"].split(".")[0] in ("host", "controller", "segment")]
        if not page["items"]:
            return out
        since = page["next_since"]


# -- analysis ------------------------------------------------------------------------


def read_events(db: Path) -> list[tuple[str, str, float]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return list(conn.execute(
            "SELECT type, subject, time FROM events WHERE type LIKE 'host.%' "
            "OR type LIKE 'controller.%' OR type LIKE 'segment.%' ORDER BY id"))


def analyse(events: list[tuple[str, str, float]], last_sent: dict[str, float],
            silenced: frozenset[str], result: dict[str, Any]) -> dict[str, Any]:
    w0, w1 = result["window"]
    listing = result["listing"].get("window")
    suspects = [(s, t) for kind, s, t in events if kind == "host.suspect" and t >= w0 - 30]
    detected = {}
    for host in sorted(silenced):
        after = [t for s, t in suspects if s == host and t >= last_sent.get(host, w1)]
        detected[host] = round(after[0] - last_sent[host], 2) if after and host in last_sent \
            else None
    delays = sorted(v for v in detected.values() if v is not None)
    # after w1 the senders stop: hosts turning suspect then are not false
    false = [(s, t) for s, t in suspects if t < w1 + 1.0
             and (s not in silenced or t < last_sent.get(s, w1))]
    in_listing = [f for f in false if listing and listing[0] <= f[1] <= listing[1] + 5]
    counts: dict[str, int] = {}
    for kind, _, t in events:
        if t >= w0 - 30 and not kind.startswith("host."):
            counts[kind] = counts.get(kind, 0) + 1
    return {"detection": {
        "silenced": len(silenced), "detected": len(delays),
        "median_s": round(statistics.median(delays), 2) if delays else None,
        "max_s": delays[-1] if delays else None, "per_host": detected},
        "false_suspicions": {"total": len({s for s, _ in false}),
                             "during_listing": len({s for s, _ in in_listing}),
                             "first": sorted(false, key=lambda f: f[1])[:5]},
        "events": counts}


# -- output --------------------------------------------------------------------------


def save(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    path = RESULTS / "controller_scale.json"
    old = json.loads(path.read_text())["runs"] if path.exists() else []
    fresh = {(r["label"], r["hosts"]) for r in runs}
    merged = [r for r in old if (r["label"], r["hosts"]) not in fresh] + runs
    merged.sort(key=lambda r: (r["label"], r["hosts"]))
    path.write_text(json.dumps({"benchmark": __doc__.splitlines()[0], "runs": merged},
                               indent=1) + "\n")
    return merged


def accepted_pct(run: dict[str, Any]) -> float | None:
    """Heartbeats accepted of those sent, over the whole run when recorded
    (the receiver's count, else the acks), else in the window."""
    hb = run["heartbeats"]
    whole = hb.get("whole_run") or {}
    pct = whole.get("accepted_pct") or whole.get("acked_pct")
    return float(pct) if pct else hb["accepted_pct"] or hb["acked_pct"]


def write_svg(runs: list[dict[str, Any]]) -> None:
    runs = [r for r in runs if "controller" in r]  # one controller's rows
    labels = sorted({r["label"] for r in runs})
    sizes = sorted({r["hosts"] for r in runs})

    def series(metric: Any) -> list[tuple[str, list[float]]]:
        out = []
        for label in labels:
            by_n = {r["hosts"]: r for r in runs if r["label"] == label}
            out.append((label, [float(metric(by_n[n]) or 0) if n in by_n else 0.0
                                for n in sizes]))
        return out

    groups = [f"{n:,}" for n in sizes]
    panels = [
        svgplot.grouped_bars("heartbeats accepted", groups, series(
            accepted_pct), "%"),
        svgplot.grouped_bars("controller CPU (mean)", groups,
                             series(lambda r: r["controller"]["cpu_mean_pct"]), "% core"),
        svgplot.grouped_bars("silenced host detected (median)", groups,
                             series(lambda r: r["detection"]["median_s"]), "s"),
        svgplot.grouped_bars("GET /v1/hosts page (median; 0: none answered)", groups,
                             series(lambda r: r["listing"].get("p50_ms")), "ms"),
    ]
    (RESULTS / "controller_scale.svg").write_text(svgplot.grid(panels, columns=2))


def print_table(runs: list[dict[str, Any]]) -> None:
    runs = [r for r in runs if "controller" in r]  # one controller's rows
    print(f"{'label':<10}{'hosts':>7}{'accept%':>9}{'cpu%':>7}{'rss':>7}{'det med':>9}"
          f"{'det max':>9}{'false':>7}{'page ms':>9}{'p90 ms':>8}{'load':>6}")
    for r in runs:
        det = r["detection"]
        print(f"{r['label']:<10}{r['hosts']:>7}"
              f"{accepted_pct(r) or 0:>9.2f}"
              f"{r['controller']['cpu_mean_pct'] or 0:>7.0f}"
              f"{r['controller']['rss_max_mib'] or 0:>7.0f}{det['median_s'] or -1:>9.2f}"
              f"{det['max_s'] or -1:>9.2f}{r['false_suspicions']['total']:>7}"
              f"{r['listing'].get('p50_ms', -1):>9.0f}{r['listing'].get('p90_ms', -1):>8.0f}"
              f"{max(r['load_average_1m']):>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1000,3000,5000,10000")
    parser.add_argument("--label", default="after")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--config", default="", help="TOML appended to the controller's")
    parser.add_argument("--source", type=Path, default=None,
                        help="run the controller from this vmha src/ (e.g. an older commit)")
    parser.add_argument("--register", choices=("api", "store"), default="api",
                        help="register the agents through the API (default), or write them "
                             "into the store before the controller starts (with its own tree's "
                             "code: a controller without bulk registration takes minutes)")
    parser.add_argument("--controllers", type=int, default=1,
                        help="several controllers on PostgreSQL and etcd (issue 15)")
    parser.add_argument("--send", choices=("all", "owner"), default="all",
                        help="with --controllers: every heartbeat to every controller, or "
                             "to its owner on the hash ring only")
    parser.add_argument("--lease", type=float, default=5.0, help="with --controllers")
    args = parser.parse_args()
    runs = []
    if args.controllers > 1:
        for n in (int(x) for x in args.hosts.split(",")):
            plan = Plan(hosts=n, duration_s=args.duration, warmup_s=args.warmup,
                        senders=args.senders, silence_at_s=args.duration / 2, silence=6)
            runs.append(run_group(plan, args.controllers, args.send, args.lease))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "detection"},
                             indent=1))
        save(runs)
        return
    for n in (int(x) for x in args.hosts.split(",")):
        plan = Plan(hosts=n, duration_s=args.duration, warmup_s=args.warmup,
                    senders=args.senders, page=args.page,
                    silence_at_s=args.duration / 2)
        runs.append(run_one(plan, args.label, args.config, args.source,
                            args.register == "store"))
        print_table(runs[-1:])
    merged = save(runs)
    write_svg(merged)
    print_table(merged)


if __name__ == "__main__":
    main()
