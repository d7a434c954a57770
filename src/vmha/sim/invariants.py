"""Safety invariants, checked on the world's ground truth during a run.

- never_running_twice: at no moment does an instance run (or sit paused,
  holding its disks) on two hosts at once.
- no_recovery_before_fence: an instance is started on a new host only when
  its old host is no longer running it AND, if the controller declared
  that host failed, a fence confirmation (`host.fenced`) was recorded since.
- no_fence_while_paused: no power-off request reaches a BMC while the
  host's segment has automatic recovery paused (`segment.recovery_paused`
  without a later `segment.recovery_resumed`) and had it paused already
  when the controller sent the request (one sent just before the guard
  paused arrives a BMC round trip later: it was allowed when sent).

Two more judged from the world's ground truth alone (issue 11 item 14:
the controller's own events cannot show its own mistakes):

- no_fence_of_a_healthy_host: no power-off request reaches a host that was
  powered on, with its agent running and a clean network link (no loss,
  delay or cut; only its link to the controller may be down) all the time
  from HEALTHY_BEFORE_S before the controller declared it failed until the
  request, and that is in contact at the request by its agent's own rule
  (its controller link up, or a majority of its segment alive and reachable
  over clean links), unless an operator ordered its fence. Such a host serves its
  VMs: whatever the controller saw, its peers could reach it. (One cut from
  the controller whose peers died, or are reachable only over lossy links,
  is not: it may fence itself.)
- no_fence_in_a_mass_outage: no power-off request reaches a live host while
  more than the segment's `mass_failure_threshold` of its hosts (and at
  least two) are powered on but cut off from the network, each since
  between OUTAGE_SEEN_S and the guard's window ago (long enough for a warm
  detector to have seen it, recent enough to count for the guard) or,
  when the host itself was cut off, since no later than it (the detector
  sees them no later than the host it is about to fence), unless
  an operator resumed the segment or put one of its hosts in maintenance.
  Only cuts of hosts whose link was clean and whose health had not changed
  for WARM_S before count (the world says so: `cut_off_since`): a cold or
  lossy detector may rightly take longer.

The world calls `on_running_copies`, `on_start` and `on_power_off`; the
store tap feeds every stored event to `observe_event`. Violations are
logged as ``INVARIANT`` lines and kept for the JSON report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from vmha.domain.model import Event
from vmha.sim.log import SimLog

NAMES = ("never_running_twice", "no_recovery_before_fence", "no_fence_while_paused",
         "no_fence_of_a_healthy_host", "no_fence_in_a_mass_outage")
HEALTHY_BEFORE_S = 30.0  # the evidence a failure verdict may rest on is younger
OUTAGE_SEEN_S = 4.0  # a cut-off host is suspect by then to a warm detector (~2.5 s)
WARM_S = 30.0  # a detector that heard this long from a clean link is warm
SAME_CUT_S = 0.5  # cut off at the same moment as the host being powered off


class Truth(Protocol):
    """What the world knows about a host right now."""

    def healthy(self, host: str) -> bool: ...
    def cut_off_since(self, host: str) -> float | None: ...
    def alive(self, host: str) -> bool: ...
    def in_contact(self, host: str) -> bool: ...
    def now(self) -> float: ...


@dataclass(frozen=True)
class Violation:
    t: float
    name: str
    subject: str
    what: str


@dataclass(frozen=True)
class Guarding:
    """The guard's settings and the operator's actions, as the scenario says."""

    thresholds: dict[str, float] = field(default_factory=dict)  # segment -> share
    window_s: float = 60.0
    # (seconds since the start, segment): an operator resumed it or put a host
    # of it in maintenance
    overrides: tuple[tuple[float, str], ...] = ()
    operator_fences: tuple[tuple[float, str], ...] = ()  # (seconds since the start, host)


class Invariants:
    def __init__(self, log: SimLog, segment_of: dict[str, str],
                 truth: Truth | None = None, guarding: Guarding | None = None) -> None:
        self._log = log
        self._segment_of = segment_of
        self._truth = truth
        self._guarding = guarding or Guarding()
        self.paused: dict[str, float] = {}  # segment -> when its recovery was paused
        self._open_failure: set[str] = set()  # failed and not fenced since
        self._failed_at: dict[str, float] = {}  # host -> its last host.failed
        self._health_changed: dict[str, float] = {}  # host -> last change of its health
        self.violations: list[Violation] = []

    def observe_event(self, event: Event) -> None:
        segment = str(event.payload.get("segment", event.subject))
        if event.type == "segment.recovery_paused":
            self.paused.setdefault(segment, event.time)
        elif event.type == "segment.recovery_resumed":
            self.paused.pop(segment, None)
        elif event.type == "host.failed":
            self._open_failure.add(event.subject)
            self._failed_at[event.subject] = event.time
        elif event.type in ("host.fenced", "host.up"):
            self._open_failure.discard(event.subject)

    def _broken(self, name: str, subject: str, what: str) -> None:
        self.violations.append(Violation(self._log.rel(), name, subject, what))
        self._log.invariant(subject, name, what)

    def on_running_copies(self, vm: str, hosts: list[str]) -> None:
        if len(hosts) > 1:
            self._broken("never_running_twice", vm, f"running on {', '.join(sorted(hosts))}")

    def on_start(self, vm: str, new_host: str, old_host: str | None,
                 old_still_running: bool) -> None:
        if old_host is None or old_host == new_host:
            return
        if old_still_running:
            self._broken("no_recovery_before_fence", vm,
                         f"started on {new_host} while {old_host} still runs it")
        elif old_host in self._open_failure:
            self._broken("no_recovery_before_fence", vm,
                         f"started on {new_host} before a fence of {old_host} was confirmed")

    def health_changed(self, host: str) -> float:
        """When the world last changed the host's health (-inf: never)."""
        return self._health_changed.get(host, float("-inf"))

    def on_health_change(self, host: str, now: float) -> None:
        """The world changed the host's power, agent or network link."""
        self._health_changed[host] = now

    def on_power_off(self, host: str, method: str, sent_at: float | None = None) -> None:
        """A BMC accepted a power-off the controller sent at `sent_at`
        (None: now)."""
        segment = self._segment_of.get(host, "")
        paused_at = self.paused.get(segment)
        if paused_at is not None and (sent_at is None or paused_at <= sent_at):
            self._broken("no_fence_while_paused", host,
                         f"{method} power-off requested while segment {segment} is paused")
        if self._truth is not None:
            self._judge_power_off(host, method, segment, self._truth.now())

    def _judge_power_off(self, host: str, method: str, segment: str, now: float) -> None:
        truth = self._truth
        assert truth is not None
        failed_at = self._failed_at.get(host)
        ordered = any(h == host and at <= self._log.rel(now)
                      for at, h in self._guarding.operator_fences)
        if (failed_at is not None and not ordered and truth.healthy(host)
                and truth.in_contact(host)
                and self._health_changed.get(host, -1e9) < failed_at - HEALTHY_BEFORE_S):
            self._broken("no_fence_of_a_healthy_host", host,
                         f"{method} power-off requested for a host healthy all along "
                         f"(failed at {self._log.rel(failed_at):.1f})")
        if not truth.alive(host):
            return
        g = self._guarding
        if any(seg == segment and at <= self._log.rel(now) for at, seg in g.overrides):
            return
        members = [h for h, seg in self._segment_of.items() if seg == segment]
        own = truth.cut_off_since(host)
        cut = []
        for h in members:
            since = truth.cut_off_since(h)
            if since is None or since < now - g.window_s:
                continue
            if since <= now - OUTAGE_SEEN_S or (own is not None and since <= own + SAME_CUT_S):
                cut.append(h)
        if len(cut) >= 2 and len(cut) > g.thresholds.get(segment, 0.5) * len(members):
            self._broken("no_fence_in_a_mass_outage", host,
                         f"{method} power-off requested while {len(cut)} of {len(members)} "
                         f"hosts of {segment} are cut off ({', '.join(sorted(cut))})")

    def summary(self) -> dict[str, bool]:
        broken = {v.name for v in self.violations}
        return {name: name not in broken for name in NAMES}
