"""Phi-accrual failure detector for host heartbeats, aware of lost beats.

Called by the engine's detector loop (`heartbeat()` on every received
heartbeat, `phi()` on every tick) and by `bench/detection.py`. Pure: time
arrives as `now`; no clock, no I/O.

Why not the textbook phi-accrual? It fits one normal distribution to the
observed inter-arrival gaps. With 30 % loss the gaps are a mix of 1, 2, 3 ...
intervals (mean ~1.43 s, std ~0.8 s at 1 s beats), so the threshold lands
near 7 s, while 6 consecutive losses (p = 0.3^6 ~ 7e-4 per beat) happen about
once every two or three 10-minute runs: false suspicions. And a clean host
is then detected late. Heartbeats carry sequence numbers, so we can
separate *how many beats were lost* from *how late the last one is*.

The model
---------
Beats are sent every T seconds. Each beat is lost independently with
probability p; a beat that arrives has a delay jitter, so the gap between two
arrivals differs from (seq difference) x T by a residual r ~ N(0, s^2).
From a sliding window of the last `window` arrivals:

    T     = sum(gap) / sum(dseq)                 (seconds per beat)
    s     = max(min_std_s, std(gap - dseq * T))
    p_hat = (lost + prior_lost) / (sent + prior_lost)
    p     = max(min_loss, warm-up floor, p_hat + z * sqrt(lost) / sent)

`lost` counts the sequence numbers skipped, `sent` every sequence number
covered; `z * sqrt(lost)/sent` is an upper confidence margin (Poisson error
of the loss count), so a lossy host whose loss estimate happens to be low
is still treated as lossy, while a clean host keeps p tiny.

Given the last arrival at t0 and `e = now - t0 - acceptable_pause_s`, beat
j (j = 1, 2, ...) after the last one is still missing with probability

    m_j = p + (1 - p) * Q((e - j*T) / s)          (lost, or late by jitter)

and, beats being independent, a live host is silent this long with
probability P = prod_j m_j. The detector reports phi = -log10(P); the host
is suspect when phi >= threshold. For j with e - j*T far beyond s, m_j = p
(exactly "k consecutive losses": p^k); the product is computed in closed
form for those and term by term only near `e`.

Consequences (defaults: threshold 5, min_std 0.1 s, pause 0.25 s):
- clean host at 1 s: p ~ 1e-3, P < 1e-5 needs two missing beats and the
  second late by ~2.3 s -> suspect ~2.5 s after the last heartbeat;
- 30 % loss: p ~ 0.3-0.35 -> needs ~10-11 consecutive losses (chance per
  10-minute run ~1e-3), so no false suspicion, detection after ~11 s;
- 10 % loss: ~5-6 beats -> ~6 s.
The acceptable pause is a floor: a single beat late by up to ~1.5 intervals
never makes a host suspect.

Warm-up: a handful of clean beats says little ("no loss in 9 beats" happens
4 % of the time on a 30 % lossy link), so p is at least a floor that fades:
`bootstrap_loss` (0.3) until `min_samples` (5) gaps were seen, then
0.3 * (5 / n) ** 3. A clean host at 1 s is therefore suspect ~4.5 s after
its last beat when it has lived 10 s, ~3.4 s at 20 s, ~2.5 s from about
30 s on. Measured: 1,000 ten-minute runs at 30 % loss / 200 ms jitter
(detectors starting cold) gave no false suspicion; bench/detection.py
reports the long-run rate per host-hour (about 0.01-0.03 at 30 % loss).

Cold start (issue 11 item 12): a detector that has learnt nothing (a host
never heard since the controller started, or heard once) uses the prior
from the configuration: the configured interval, a jitter of a quarter of
it and `bootstrap_loss`. It is not faster than that: a few clean beats
cannot tell a clean link from a 30 % lossy one, and a clean-link prior
would make such a link suspect about one cold start in three (two lost
beats in a row). Hosts with a BMC are detected as fast cold as warm by
the engine's BMC fast path (`vmha.engine.detection`): when a heartbeat is
overdue (`overdue_at`) the BMC is read at once, and power off is proof.

Outages are not loss: a gap during which the host would already have been
suspect (phi >= threshold just before the beat arrived) does not enter the
statistics, so a host that was down for a minute is not treated as lossy
afterwards. A sequence number that goes backwards with a newer `sent_at`
means the agent restarted: the sequence baseline is reset.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

_SQRT2 = math.sqrt(2.0)
_TAIL_SIGMAS = 6.0  # beyond this many std, a beat is "surely due": m_j = p
_PHI_CAP = 300.0
_LOG2 = math.log10(2.0)
_DELAY_MAX_S = 3600.0  # suspicion further away than this: look again then
_DELAY_EARLY_S = 0.01  # a deadline errs on the early side by this much,
_DELAY_EARLY_SHARE = 0.005  # plus this share of the delay (the model's rounding)
_DELAYS: dict[tuple[float, float, float, float], float] = {}  # memo of suspicion_delay
_DELAYS_MAX = 4096


@dataclass(frozen=True)
class DetectorConfig:
    """Tuning of the detector (see the module docstring for the math)."""

    interval_s: float = 1.0  # expected heartbeat interval (used in warm-up)
    threshold: float = 5.0  # phi at which a host is suspect
    min_std_s: float = 0.1  # floor of the gap residual std
    acceptable_pause_s: float = 0.25  # silence always tolerated on top
    window: int = 300  # arrivals kept for statistics
    min_samples: int = 5  # gaps needed before the model is used
    bootstrap_loss: float = 0.3  # loss assumed until min_samples gaps are seen
    warmup_decay: float = 3.0  # how fast that assumption fades afterwards
    min_loss: float = 1e-3  # floor of the loss estimate
    prior_lost: float = 0.05  # pseudo-count of lost beats (Bayesian prior)
    loss_z: float = 2.0  # confidence margin on the loss estimate


def q_tail(x: float) -> float:
    """P(N(0,1) > x)."""
    return 0.5 * math.erfc(x / _SQRT2)


class PhiDetector:
    """Heartbeat history of one host. Not thread-safe; cheap per call."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self._samples: deque[tuple[float, int]] = deque()  # (gap seconds, dseq)
        self._sum_gap = 0.0
        self._sum_gap2 = 0.0
        self._sum_gap_d = 0.0
        self._sum_d = 0
        self._sum_d2 = 0
        self.last_arrival: float | None = None
        self.last_seq: int | None = None
        self.last_sent: float | None = None
        self._cached: tuple[float, float, float] | None = None
        # the last model this detector's own thread computed, never cleared:
        # what another thread may read (`peek_phi`)
        self._shown: tuple[float, float, float] | None = None

    # -- input -----------------------------------------------------------

    def heartbeat(self, seq: int, sent_at: float, now: float, learn: bool = True) -> None:
        """Record heartbeat `seq` (sent at the agent's `sent_at`) received at
        `now`. `learn=False`: the gap since the last one says nothing about
        the link (the receiver itself lost beats): it only moves the baseline."""
        if self.last_seq is None or self.last_arrival is None:
            self._set_last(seq, sent_at, now)
            return
        if seq <= self.last_seq:
            if self.last_sent is not None and sent_at > self.last_sent:
                self._set_last(seq, sent_at, now)  # agent restarted: new baseline
            return  # duplicate or reordered beat: says nothing new
        if learn and self.phi(now) < self.config.threshold:
            self._add(now - self.last_arrival, seq - self.last_seq)
        self._set_last(seq, sent_at, now)

    def _set_last(self, seq: int, sent_at: float, now: float) -> None:
        self.last_seq, self.last_sent, self.last_arrival = seq, sent_at, now

    def _add(self, gap: float, dseq: int) -> None:
        self._cached = None
        self._samples.append((gap, dseq))
        self._sum_gap += gap
        self._sum_gap2 += gap * gap
        self._sum_gap_d += gap * dseq
        self._sum_d += dseq
        self._sum_d2 += dseq * dseq
        if len(self._samples) > self.config.window:
            old_gap, old_d = self._samples.popleft()
            self._sum_gap -= old_gap
            self._sum_gap2 -= old_gap * old_gap
            self._sum_gap_d -= old_gap * old_d
            self._sum_d -= old_d
            self._sum_d2 -= old_d * old_d

    # -- model -------------------------------------------------------------

    @property
    def samples(self) -> int:
        return len(self._samples)

    def interval(self) -> float:
        """Estimated seconds between beats."""
        if self._sum_d <= 0:
            return self.config.interval_s
        return max(1e-3, self._sum_gap / self._sum_d)

    def jitter_std(self) -> float:
        """Std of the gap residual, at least `min_std_s`."""
        n = len(self._samples)
        if n < 2:
            return max(self.config.min_std_s, self.config.interval_s / 4)
        t = self.interval()
        sse = self._sum_gap2 - 2 * t * self._sum_gap_d + t * t * self._sum_d2
        return max(self.config.min_std_s, math.sqrt(max(0.0, sse) / n))

    def loss_rate(self) -> float:
        """Conservative estimate of the per-beat loss probability."""
        cfg = self.config
        sent = self._sum_d
        if sent <= 0:  # nothing learnt yet: the prior (see warmup_floor)
            return max(cfg.min_loss, cfg.bootstrap_loss)
        lost = sent - len(self._samples)
        p_hat = (lost + cfg.prior_lost) / (sent + cfg.prior_lost)
        margin = cfg.loss_z * math.sqrt(lost) / sent
        return min(0.999, max(cfg.min_loss, p_hat + margin))

    # -- output ------------------------------------------------------------

    def warmup_floor(self) -> float:
        """Least loss to assume from the number of gaps seen: `bootstrap_loss`
        until `min_samples`, then fading as (min_samples / n) ** warmup_decay,
        because "no loss in 9 beats" says little about a 30 % lossy link."""
        cfg = self.config
        n = len(self._samples)
        if n < cfg.min_samples:
            return cfg.bootstrap_loss
        return float(cfg.bootstrap_loss * (cfg.min_samples / n) ** cfg.warmup_decay)

    def silence(self, now: float) -> float:
        """Seconds since the last heartbeat (0 before the first one)."""
        return 0.0 if self.last_arrival is None else max(0.0, now - self.last_arrival)

    def phi(self, now: float) -> float:
        """Suspicion level: -log10(P(a live host is silent this long))."""
        if self.last_arrival is None:
            return 0.0
        cfg = self.config
        elapsed = now - self.last_arrival - cfg.acceptable_pause_s
        if elapsed <= 0:
            return 0.0
        interval, std, loss = self._model()
        return _phi_of(elapsed, interval, std, loss)

    def _model(self) -> tuple[float, float, float]:
        """(T, s, p), cached until the statistics change (the detector loop
        asks ten times a second, heartbeats arrive about once)."""
        if self._cached is None:
            self._cached = self._shown = self._fresh_model()
        return self._cached

    def _fresh_model(self) -> tuple[float, float, float]:
        return self.interval(), self.jitter_std(), max(self.loss_rate(), self.warmup_floor())

    def peek_phi(self, now: float) -> float:
        """`phi(now)` for display by another thread (the API). It reads only
        values the detector's own thread replaces whole: the last arrival
        and the last model that thread computed (at most one heartbeat old;
        the warm-up model before the first). It never derives the model from
        the running sums, which `_add` updates one after another: read
        half-updated they made `loss_rate` take the root of a negative loss
        count (an HTTP 500 on a host listing under load)."""
        last = self.last_arrival
        if last is None:
            return 0.0
        elapsed = now - last - self.config.acceptable_pause_s
        if elapsed <= 0:
            return 0.0
        return _phi_of(elapsed, *(self._shown or self._cold_model()))

    def _cold_model(self) -> tuple[float, float, float]:
        """The model before any gap was seen (what `_fresh_model` gives then)."""
        cfg = self.config
        return (cfg.interval_s, max(cfg.min_std_s, cfg.interval_s / 4),
                max(cfg.min_loss, cfg.bootstrap_loss))

    def suspect_at(self) -> float | None:
        """When this host turns suspect if no heartbeat arrives from now on
        (None before its first one): a deadline for the detector loop, which
        confirms with `suspect(now)` when it falls due. Errs early, by ~10 ms
        plus the model's rounding in `suspicion_delay` (never late by more)."""
        if self.last_arrival is None:
            return None
        interval, std, loss = self._model()
        delay = suspicion_delay(interval, std, loss, self.config.threshold)
        return self.last_arrival + self.config.acceptable_pause_s + delay

    def overdue_at(self) -> float | None:
        """When the next heartbeat is late: one interval, the acceptable
        pause and twice the jitter after the last one (None before it). Not
        a suspicion: the moment to look at other evidence (the engine reads
        the host's BMC then)."""
        if self.last_arrival is None:
            return None
        interval, std, _ = self._model()
        return self.last_arrival + interval + self.config.acceptable_pause_s + 2.0 * std

    def quickest_suspicion_s(self) -> float:
        """The least silence after which this host could be suspect if a
        heartbeat came right now: the delay of a clean link (least loss and
        jitter the model allows) at its current interval. New heartbeats may
        sharpen the model (a warming-up detector), so a deadline must not be
        further away than this from the moment it is set."""
        cfg = self.config
        delay = suspicion_delay(self.interval(), cfg.min_std_s, cfg.min_loss, cfg.threshold)
        return cfg.acceptable_pause_s + delay

    def suspect(self, now: float) -> bool:
        if self.last_arrival is None:
            return False
        interval, std, _ = self._model()
        # Quick no: within one interval of the pause every term m_j >= 1/2
        # and at most 1 + 6s/T terms count, so phi <= log10(2) * (1 + 6s/T).
        elapsed = now - self.last_arrival - self.config.acceptable_pause_s
        bound = _LOG2 * (1.0 + _TAIL_SIGMAS * std / interval)
        if elapsed <= interval and bound < self.config.threshold:
            return False
        return self.phi(now) >= self.config.threshold


def _phi_of(elapsed: float, interval: float, std: float, loss: float) -> float:
    """-log10 of prod_j [loss + (1-loss) Q((elapsed - j*interval)/std)]."""
    log_loss = math.log10(loss)
    # beats with elapsed - j*T > TAIL*std are surely due: m_j = loss exactly
    surely_due = max(0, math.floor((elapsed - _TAIL_SIGMAS * std) / interval))
    log_p = surely_due * log_loss
    j = surely_due + 1
    while j * interval - elapsed < _TAIL_SIGMAS * std:
        m = loss + (1.0 - loss) * q_tail((elapsed - j * interval) / std)
        log_p += math.log10(max(m, 1e-300))
        j += 1
        if -log_p > _PHI_CAP:
            break
    return min(_PHI_CAP, -log_p)


def suspicion_delay(interval: float, std: float, loss: float, threshold: float) -> float:
    """Silence (beyond the acceptable pause) after which phi reaches
    `threshold`, a little early. Solved by bisection on `_phi_of`, which
    grows with silence, for the model rounded to 0.1 % (interval, jitter,
    and -log10 of the loss: the delay is about proportional to each), and
    memoized: hosts with the same rhythm share one answer, so a deadline
    costs a dict lookup almost always."""
    key = (_round_rel(interval), _round_rel(std), _round_rel(-math.log10(loss)), threshold)
    delay = _DELAYS.get(key)
    if delay is None:
        delay = _solve_delay(key[0], key[1], 10.0 ** -key[2], threshold)
        if len(_DELAYS) >= _DELAYS_MAX:
            _DELAYS.clear()
        _DELAYS[key] = delay
    return delay


def _solve_delay(interval: float, std: float, loss: float, threshold: float) -> float:
    high = interval
    while _phi_of(high, interval, std, loss) < threshold:
        if high >= _DELAY_MAX_S:
            return _DELAY_MAX_S
        high *= 2.0
    low = 0.0
    while high - low > 1e-3:
        mid = (low + high) / 2.0
        if _phi_of(mid, interval, std, loss) < threshold:
            low = mid
        else:
            high = mid
    return max(0.0, low * (1.0 - _DELAY_EARLY_SHARE) - _DELAY_EARLY_S)


def _round_rel(x: float) -> float:
    """`x` (> 0) to 3 significant digits."""
    return float(f"{x:.3g}")
