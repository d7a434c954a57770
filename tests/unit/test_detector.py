"""Phi-accrual detector with loss awareness: detection time vs false alarms."""

from __future__ import annotations

import random

import pytest

from vmha.domain.detector import DetectorConfig, PhiDetector, q_tail


def feed(det: PhiDetector, loss: float, jitter: float, seed: int, until: float,
         interval: float = 1.0, tick: float = 0.1, stop: float | None = None
         ) -> tuple[int, float | None]:
    """Drive `det` with beats every `interval` (lost with prob `loss`, delayed
    by |N(0, jitter)|) until `until`; the sender stops at `stop`. Returns the
    number of suspicions before `stop` and the first suspicion time after it."""
    rng = random.Random(seed)
    arrivals = []
    for seq in range(int(until / interval)):
        sent = seq * interval
        if stop is not None and sent >= stop:
            break
        if rng.random() >= loss:
            arrivals.append((sent + abs(rng.gauss(0, jitter)), seq, sent))
    arrivals.sort()
    det.last_arrival = 0.0
    i, t, was, false_alarms, detected = 0, 0.0, False, 0, None
    while t < until:
        while i < len(arrivals) and arrivals[i][0] <= t:
            det.heartbeat(arrivals[i][1], arrivals[i][2], arrivals[i][0])
            i += 1
        now_suspect = det.suspect(t)
        if now_suspect and not was:
            if stop is None or t < stop:
                false_alarms += 1
            elif detected is None:
                detected = t
        was = now_suspect
        t = round(t + tick, 6)
    return false_alarms, detected


def test_q_tail() -> None:
    assert q_tail(0.0) == pytest.approx(0.5)
    assert q_tail(1.96) == pytest.approx(0.025, abs=1e-3)


def test_clean_host_that_stops_is_suspect_in_2_to_3_seconds() -> None:
    for seed in range(5):
        det = PhiDetector()
        # last heartbeat sent at t=119, the host dies right after it
        _, detected = feed(det, 0.0, 0.01, seed, until=140, stop=119.5)
        assert detected is not None
        assert 2.0 <= detected - 119.0 <= 3.0, detected


def test_30_percent_loss_with_jitter_never_suspect_in_10_minutes() -> None:
    for seed in range(20):
        false_alarms, _ = feed(PhiDetector(), 0.3, 0.2, seed, until=600)
        assert false_alarms == 0, f"seed {seed}"


def test_10_percent_loss_detection_time_is_reasonable() -> None:
    times = []
    for seed in range(10):
        false_alarms, detected = feed(PhiDetector(), 0.1, 0.2, seed, until=300, stop=240.5)
        assert false_alarms == 0
        assert detected is not None
        times.append(detected - 240.5)
    assert max(times) < 10.0
    assert sorted(times)[5] > 2.0  # slower than a clean host: loss is expected


def test_lossy_host_needs_a_longer_silence_than_a_clean_one() -> None:
    clean, lossy = PhiDetector(), PhiDetector()
    feed(clean, 0.0, 0.05, 1, until=200)
    feed(lossy, 0.3, 0.05, 1, until=200)
    # same silence after their last heartbeat
    assert clean.loss_rate() < 0.01 < 0.25 < lossy.loss_rate()
    assert clean.phi(clean.last_arrival + 4) > lossy.phi(lossy.last_arrival + 4)  # type: ignore[operator]


def test_one_late_packet_does_nothing() -> None:
    det = PhiDetector()
    for seq in range(100):
        det.heartbeat(seq, float(seq), float(seq))
    # beat 100 is 1.2 s late: at no point before it arrives is the host suspect
    for k in range(1, 23):
        assert not det.suspect(99 + k * 0.1), k * 0.1
    det.heartbeat(100, 100.0, 101.2)
    det.heartbeat(101, 101.0, 101.0 + 0.01)
    assert not det.suspect(102.0)


def test_outage_does_not_poison_the_loss_estimate() -> None:
    det = PhiDetector()
    for seq in range(100):
        det.heartbeat(seq, float(seq), float(seq))
    # down for 60 s, then back with a sequence gap of 60
    det.heartbeat(160, 160.0, 160.0)
    assert det.loss_rate() < 0.01


def test_reordered_and_duplicate_beats_are_ignored_and_agent_restart_resets() -> None:
    det = PhiDetector()
    for seq in range(20):
        det.heartbeat(seq, float(seq), float(seq))
    samples = det.samples
    det.heartbeat(18, 18.0, 20.1)  # late duplicate
    assert det.samples == samples and det.last_seq == 19
    det.heartbeat(0, 21.0, 21.0)  # agent restarted: seq back to 0, newer sent_at
    assert det.last_seq == 0 and det.last_arrival == 21.0


def test_warm_up_is_cautious() -> None:
    det = PhiDetector(DetectorConfig())
    det.heartbeat(0, 0.0, 0.0)
    det.heartbeat(1, 1.0, 1.0)
    # two beats: no loss estimate yet, so 4 s of silence is not enough
    assert not det.suspect(5.0)
    assert det.suspect(1.0 + 20)
