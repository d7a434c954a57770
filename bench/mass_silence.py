"""Benchmark: how long a mass silence holds the controller's event loop (issue 13).

In one process, the engine as `vmha serve` runs it (a SQLite `SqlStore` in a
file, the system clock, default settings but `heartbeat_interval_s`) watches
--hosts hosts, all registered with agents. Every host's heartbeat is handed
to the engine every interval from the loop itself (no network: what is
measured is the loop, not the intake). After --warmup seconds --silence of
the hosts stop at once. A probe on the same loop sleeps 10 ms again and
again; how much later than asked it wakes is the time the loop was held.
Measured from the silence for at least --window seconds (the end is looked
for once a second on the loop, so a held loop stretches it): the longest hold, the
99th percentile, the total held longer than 100 ms, and how long until the
store held every silenced host as suspect.

Writes bench/results/mass_silence.json (one entry per --label and host count,
replaced when measured again; settings, date, commit and load average with
each). The code measured is the one imported: `PYTHONPATH=<tree>/src` runs
an older tree's engine (label it so):
    git archive COMMIT src | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before/src .venv/bin/python bench/mass_silence.py --label before
The `before` figures were measured on a5d56a4 (the engine before the
write-behind), a commit of the work that landed squashed into 53fe2c2: it
is not in this history, and no commit in it has that engine.

Usage: flock /tmp/vmha-lab.lock .venv/bin/python bench/mass_silence.py --hosts 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import vmha
from vmha.adapters.cloud.none import NoCloud
from vmha.adapters.peer.fake import FakePeerProber
from vmha.adapters.store import open_store
from vmha.adapters.system import SystemClock, UuidGen
from vmha.domain.agents import AgentRecord, Registration
from vmha.domain.model import Host, HostState, Segment
from vmha.engine import ControllerSettings, Engine
from vmha.ports import ListQuery

RESULTS = Path(__file__).parent / "results" / "mass_silence.json"
PROBE_S = 0.01
HELD_S = 0.1  # a wake-up later than this counts as the loop held


def seeded(db: Path, names: list[str]) -> Any:
    store = open_store(f"sqlite:///{db}", migrate=True)
    store.create_segment(Segment("s1"))
    for i in range(0, len(names), 1000):
        store.register_agents([Registration(Host(n, "s1"), AgentRecord(n, f"secret-{n}-{'x' * 24}"))
                               for n in names[i:i + 1000]])
    return store


async def probe(lags: list[tuple[float, float]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        asked = time.monotonic()
        await asyncio.sleep(PROBE_S)
        lags.append((asked, time.monotonic() - asked - PROBE_S))


async def beats(engine: Engine, names: list[str], muted: set[str], interval: float,
                stop: asyncio.Event) -> None:
    seq = 0
    while not stop.is_set():
        seq += 1
        now = time.time()
        for name in names:
            if name not in muted:
                engine.heartbeat(name, seq, now, now)
        await asyncio.sleep(interval)


def suspect_count(store: Any, names: set[str]) -> int:
    count, marker = 0, None
    while True:
        page = store.list_hosts(ListQuery(limit=1000, marker=marker,
                                          filters={"state": HostState.SUSPECT.value}))
        count += sum(1 for h in page.items if h.name in names)
        if not page.next_marker or not page.items:
            return count
        marker = page.next_marker


async def measure(store: Any, names: list[str], silenced: set[str], a: argparse.Namespace
                  ) -> dict[str, Any]:
    settings = ControllerSettings(heartbeat_interval_s=a.interval)
    engine = Engine(settings, store, SystemClock(), UuidGen(), fencers={}, cloud=NoCloud(),
                    prober=FakePeerProber())
    stop, muted = asyncio.Event(), set[str]()
    lags: list[tuple[float, float]] = []
    run = asyncio.ensure_future(engine.run())
    tasks = [asyncio.ensure_future(beats(engine, names, muted, a.interval, stop)),
             asyncio.ensure_future(probe(lags, stop))]
    await asyncio.sleep(a.warmup)
    silence_at = time.monotonic()
    muted.update(silenced)
    all_suspect_s = None
    while time.monotonic() - silence_at < a.window:
        await asyncio.sleep(1.0)
        if all_suspect_s is None:
            done = await asyncio.to_thread(suspect_count, store, silenced)
            print(f"{time.monotonic() - silence_at:5.1f} s: {done} suspect in the store",
                  flush=True)
            if done == len(silenced):
                all_suspect_s = round(time.monotonic() - silence_at, 1)
    stop.set()
    await engine.stop()
    run.cancel()
    await asyncio.gather(run, *tasks, return_exceptions=True)
    window = [lag for at, lag in lags if at >= silence_at]
    before = [lag for at, lag in lags if at < silence_at]
    return {
        "max_hold_s": round(max(window, default=0.0), 3),
        "p99_hold_s": round(_p99(window), 4),
        "held_total_s": round(sum(lag for lag in window if lag > HELD_S), 2),
        "holds_over_100ms": sum(1 for lag in window if lag > HELD_S),
        "max_hold_before_silence_s": round(max(before, default=0.0), 3),
        "all_silenced_suspect_in_store_after_s": all_suspect_s,
        "probes": len(window),
    }


def _p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100)[98]


def _commit() -> str:
    src = Path(vmha.__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip() + f" ({src})"
    except (OSError, subprocess.CalledProcessError):
        return f"unknown ({src})"


def save(entry: dict[str, Any]) -> None:
    old = json.loads(RESULTS.read_text())["runs"] if RESULTS.exists() else []
    runs = [r for r in old if (r["label"], r["hosts"]) != (entry["label"], entry["hosts"])]
    runs.append(entry)
    runs.sort(key=lambda r: (r["hosts"], r["label"]))
    RESULTS.write_text(json.dumps({"benchmark": __doc__.splitlines()[0], "runs": runs},
                                  indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10000)
    parser.add_argument("--silence", type=float, default=1.0, help="share of hosts silenced")
    parser.add_argument("--interval", type=float, default=1.0, help="heartbeat interval, s")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--window", type=float, default=40.0)
    parser.add_argument("--label", default="after")
    parser.add_argument("--commit", default="", help="the measured tree's commit, when it "
                        "is not a git checkout (an export)")
    a = parser.parse_args()
    names = [f"h{i:05d}" for i in range(a.hosts)]
    silenced = set(names[:round(a.hosts * a.silence)])
    with tempfile.TemporaryDirectory(prefix="vmha-bench-silence-") as tmp:
        store = seeded(Path(tmp) / "vmha.db", names)
        try:
            result = asyncio.run(measure(store, names, silenced, a))
        finally:
            store.close()
    entry = {"label": a.label, "hosts": a.hosts, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "settings": {"silenced": len(silenced), "interval_s": a.interval,
                          "warmup_s": a.warmup, "window_s": a.window, "probe_s": PROBE_S,
                          "store": "sqlite file", "cpus": os.cpu_count(),
                          "commit": a.commit or _commit(),
                          "load_1min": round(os.getloadavg()[0], 2)},
             **result}
    save(entry)
    print(json.dumps(entry, indent=1))


if __name__ == "__main__":
    main()
