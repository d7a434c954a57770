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


@pytest.mark.parametrize(("loss", "jitter", "beats"), [
    (0.0, 0.01, 60), (0.0, 0.01, 4), (0.0, 0.01, 9), (0.0, 0.2, 60), (0.1, 0.05, 120),
    (0.3, 0.2, 300), (0.5, 0.3, 200),
])
def test_suspect_at_is_when_suspect_turns_true_a_little_early_never_late(
    loss: float, jitter: float, beats: int
) -> None:
    """The deadline the detector loop waits for: at most ~1 % early (it
    looks again then), never more than a few ms late."""
    rng = random.Random(beats)
    det = PhiDetector()
    assert det.suspect_at() is None
    for seq in range(beats):
        if rng.random() >= loss:
            det.heartbeat(seq, float(seq), seq + abs(rng.gauss(0, jitter)))
    at = det.suspect_at()
    assert at is not None and det.last_arrival is not None
    first = next(t for t in (det.last_arrival + k / 1000 for k in range(200_000))
                 if det.suspect(t))
    early = 0.02 + 0.01 * (first - det.last_arrival)  # see suspicion_delay: errs early
    assert first - early <= at <= first + 0.005


def test_suspect_at_caps_a_hopeless_model_at_an_hour() -> None:
    det = PhiDetector(DetectorConfig(min_loss=0.999))
    det.heartbeat(1, 0.0, 0.0)
    at = det.suspect_at()
    assert at is not None and at == pytest.approx(3600.25)


def test_quickest_suspicion_bounds_how_long_a_deadline_may_wait() -> None:
    warming, warm = PhiDetector(), PhiDetector()
    for seq in range(4):
        warming.heartbeat(seq, float(seq), float(seq))
    for seq in range(100):
        warm.heartbeat(seq, float(seq), float(seq))
    assert warming.suspect_at() == pytest.approx(3 + 10.25, abs=0.2)  # no history: lossy link
    assert 2.4 <= warming.quickest_suspicion_s() <= 2.6  # what a clean model would allow
    assert warm.quickest_suspicion_s() == pytest.approx(warm.suspect_at() - 99, abs=0.1)


def test_peek_phi_from_another_thread_never_reads_half_updated_sums() -> None:
    """The API shows phi from its worker threads while the engine's thread
    adds heartbeats. `_add` appends a gap before it updates the running
    sums; a reader that derived the model right then saw more gaps than
    beats sent and took the root of a negative loss count (an HTTP 500 on
    a host listing under load). That moment, frozen:"""
    det = PhiDetector()
    for seq in range(40):
        det.heartbeat(seq, float(seq), float(seq))
    shown = det.phi(41.5)  # the engine's thread looks (it computes the model)
    assert det.peek_phi(41.5) == shown
    det._cached = None  # what `_add` does first ...
    det._samples.append((1.0, 1))  # ... then the gap, the sums not yet
    assert det.peek_phi(41.5) == shown  # the last model the detector computed


def test_peek_phi_before_any_model_is_the_warm_up_model() -> None:
    cold, warming = PhiDetector(), PhiDetector()
    cold.heartbeat(0, 0.0, 0.0)
    warming.heartbeat(0, 0.0, 0.0)
    assert cold.peek_phi(6.0) == pytest.approx(warming.phi(6.0))
    assert PhiDetector().peek_phi(6.0) == 0.0  # never heard: no suspicion shown


def test_a_host_never_heard_uses_the_configured_prior() -> None:
    """After a controller restart a detector starts without history: it is
    judged like a host heard once (the configured interval and
    bootstrap_loss), not with a 50 % loss guess (17 s at 1 s beats)."""
    never, once = PhiDetector(), PhiDetector()
    never.last_arrival = 0.0
    once.heartbeat(0, 0.0, 0.0)
    never_at, once_at = never.suspect_at(), once.suspect_at()
    assert never_at is not None and once_at is not None
    assert never_at == pytest.approx(once_at, abs=0.05)
    assert never_at < 11.0


def test_overdue_at_is_one_interval_the_pause_and_twice_the_jitter() -> None:
    det = PhiDetector()
    assert det.overdue_at() is None
    for seq in range(100):
        det.heartbeat(seq, float(seq), float(seq))
    assert det.overdue_at() == pytest.approx(99 + 1.0 + 0.25 + 0.2, abs=0.01)
    at = det.overdue_at()
    assert at is not None and not det.suspect(at)  # overdue is not suspect
