"""Benchmark: failure detection latency vs false suspicions.

For heartbeat intervals 0.2 / 0.5 / 1 s and loss 0 / 10 / 30 %, with
jitter |N(0, 0.2 x interval)| on every arrival (40 / 100 / 200 ms), feeds
simulated heartbeat arrivals into `vmha.domain.detector.PhiDetector`
(configured like the controller: `ControllerSettings().detector_config()`
with the interval set). No engine, no clock: phi only grows during a
silence, so

- a false suspicion happened iff phi reached the threshold just before the
  next heartbeat arrived (counted over `--hours` host-hours per setting,
  detectors starting cold, so warm-up is included);
- the detection time of a host powered off at a random time (after 2 to 3
  minutes of life) is found by bisection on phi (1 ms resolution).

Prints a table and writes bench/results/detection.json.

Usage: .venv/bin/python bench/detection.py [--hours 100] [--trials 500] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from dataclasses import replace
from pathlib import Path

from vmha.domain.detector import DetectorConfig, PhiDetector
from vmha.engine.settings import ControllerSettings

RESULTS = Path(__file__).parent / "results" / "detection.json"
INTERVALS = (0.2, 0.5, 1.0)
LOSSES = (0.0, 0.1, 0.3)
JITTER_FRACTION = 0.2


def arrivals(rng: random.Random, interval: float, loss: float, until: float
             ) -> list[tuple[float, int, float]]:
    """(arrival time, seq, sent_at) of the beats sent before `until`."""
    out = []
    jitter = JITTER_FRACTION * interval
    for seq in range(int(until / interval)):
        sent = seq * interval
        if rng.random() >= loss:
            out.append((sent + abs(rng.gauss(0.0, jitter)), seq, sent))
    out.sort()
    return out


def false_suspicions(cfg: DetectorConfig, beats: list[tuple[float, int, float]]) -> int:
    det = PhiDetector(cfg)
    det.last_arrival = 0.0
    count = 0
    for t, seq, sent in beats:
        if det.phi(t - 1e-9) >= cfg.threshold:
            count += 1
        det.heartbeat(seq, sent, t)
    return count


def detection_time(cfg: DetectorConfig, beats: list[tuple[float, int, float]],
                   stop: float) -> float:
    det = PhiDetector(cfg)
    det.last_arrival = 0.0
    for t, seq, sent in beats:
        det.heartbeat(seq, sent, t)
    assert det.last_arrival is not None
    lo, hi = max(stop, det.last_arrival), det.last_arrival + 600.0
    while hi - lo > 1e-3:
        mid = (lo + hi) / 2
        if det.phi(mid) >= cfg.threshold:
            hi = mid
        else:
            lo = mid
    return hi - stop


def measure(interval: float, loss: float, hours: float, trials: int, seed: int
            ) -> dict[str, float]:
    cfg = replace(ControllerSettings().detector_config(), interval_s=interval)
    rng = random.Random(f"{seed}/{interval}/{loss}")
    hosts = max(1, round(hours))
    fp = sum(false_suspicions(cfg, arrivals(rng, interval, loss, 3600.0 * hours / hosts))
             for _ in range(hosts))
    times = []
    for _ in range(trials):
        stop = rng.uniform(120.0, 180.0)
        times.append(detection_time(cfg, arrivals(rng, interval, loss, stop), stop))
    times.sort()
    return {
        "interval_s": interval, "loss": loss, "jitter_s": round(JITTER_FRACTION * interval, 3),
        "detect_median_s": round(statistics.median(times), 3),
        "detect_p99_s": round(times[min(len(times) - 1, int(0.99 * len(times)))], 3),
        "false_suspicions_per_host_hour": round(fp / hours, 4),
        "false_suspicions": fp, "host_hours": hours, "trials": trials,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=100.0, help="host-hours per setting")
    parser.add_argument("--trials", type=int, default=500, help="power-offs per setting")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rows = [measure(i, loss, args.hours, args.trials, args.seed)
            for i in INTERVALS for loss in LOSSES]
    print(f"{'interval':>8} {'loss':>5} {'jitter':>7} {'median':>8} {'p99':>8} "
          f"{'false/host-h':>13}")
    for r in rows:
        print(f"{r['interval_s']:>7.1f}s {r['loss']:>5.0%} {r['jitter_s']:>6.3f}s "
              f"{r['detect_median_s']:>7.2f}s {r['detect_p99_s']:>7.2f}s "
              f"{r['false_suspicions_per_host_hour']:>13.4f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    settings = ControllerSettings()
    RESULTS.write_text(json.dumps({
        "benchmark": "detection", "seed": args.seed,
        "detector": {k: getattr(settings, k) for k in (
            "phi_threshold", "detector_min_std_s", "detector_acceptable_pause_s",
            "detector_window", "detector_min_samples", "detector_bootstrap_loss",
            "detector_warmup_decay")},
        "results": rows,
    }, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
