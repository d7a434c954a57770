"""Benchmark: a real `vmha serve` under 300 MB uploads (issue 11, item 6).

Starts `vmha serve` (SQLite, heartbeats off; tests/cli/live_server.py),
times `GET /healthz` `--probes` times idle, then again while `--uploaders`
threads keep POSTing 300 MB bodies to `/v1/instances` (half without a
token, half with the admin token and a chunked body), and reads the
controller's resident memory (VmRSS at start, VmHWM peak at the end).
Before the body limit an unauthenticated 300 MB POST grew the controller
to 1.24 GB and /healthz took 1.7 s under parallel uploads.

Writes bench/results/request_limits.json (settings, date, load average).

Usage: .venv/bin/python bench/request_limits.py [--probes 100] [--uploaders 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "cli"))
from live_server import ADMIN, LiveServer, rss_kib, upload

RESULTS = Path(__file__).parent / "results" / "request_limits.json"
BIG = 300 * 1024 * 1024


def healthz_latencies(url: str, probes: int) -> list[float]:
    out = []
    with httpx.Client(timeout=30) as client:
        for _ in range(probes):
            start = time.perf_counter()
            client.get(f"{url}/healthz").raise_for_status()
            out.append(time.perf_counter() - start)
            time.sleep(0.05)
    return out


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2)}


def under_uploads(server: LiveServer, probes: int, uploaders: int) -> dict[str, Any]:
    stop = threading.Event()
    counts: list[tuple[int, int]] = []

    def loop(token: str | None) -> None:
        while not stop.is_set():
            counts.append(upload(server.port, "/v1/instances", BIG, token=token,
                                 chunked=token is not None))

    workers = [threading.Thread(target=loop, args=(None if i % 2 == 0 else ADMIN,))
               for i in range(uploaders)]
    for w in workers:
        w.start()
    try:
        latencies = healthz_latencies(server.url, probes)
    finally:
        stop.set()
        for w in workers:
            w.join(60)
    statuses = sorted({status for status, _ in counts})
    return {**summary(latencies), "uploads": len(counts), "statuses": statuses,
            "max_body_bytes_sent_before_answer": max((sent for _, sent in counts), default=0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--uploaders", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vmha-bench-limits-") as tmp:
        server = LiveServer(Path(tmp))
        server.start()
        try:
            assert server.proc is not None
            base = rss_kib(server.proc.pid)
            idle = summary(healthz_latencies(server.url, args.probes))
            busy = under_uploads(server, args.probes, args.uploaders)
            peak = rss_kib(server.proc.pid, "VmHWM")
        finally:
            server.stop()
    result = {
        "benchmark": "healthz latency and controller memory under 300 MB uploads",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {"probes": args.probes, "uploaders": args.uploaders,
                     "body_bytes": BIG, "max_body_bytes": 4 * 1024 * 1024,
                     "store": "sqlite", "cpus": os.cpu_count()},
        "load_average_1m": os.getloadavg()[0],
        "healthz_idle": idle,
        "healthz_under_uploads": busy,
        "rss_start_mib": round(base / 1024, 1),
        "rss_peak_mib": round(peak / 1024, 1),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
