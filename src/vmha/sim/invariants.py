"""Safety invariants, checked on the world's ground truth during a run.

- never_running_twice: at no moment does an instance run (or sit paused,
  holding its disks) on two hosts at once.
- no_recovery_before_fence: an instance is started on a new host only when
  its old host is no longer running it AND, if the controller declared
  that host failed, a fence confirmation (`host.fenced`) was recorded since.
- no_fence_while_paused: no power-off request reaches a BMC while the
  host's segment has automatic recovery paused (`segment.recovery_paused`
  without a later `segment.recovery_resumed`).

The world calls `on_running_copies`, `on_start` and `on_power_off`; the
store tap feeds every stored event to `observe_event`. Violations are
logged as ``INVARIANT`` lines and kept for the JSON report.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmha.domain.model import Event
from vmha.sim.log import SimLog

NAMES = ("never_running_twice", "no_recovery_before_fence", "no_fence_while_paused")


@dataclass(frozen=True)
class Violation:
    t: float
    name: str
    subject: str
    what: str


class Invariants:
    def __init__(self, log: SimLog, segment_of: dict[str, str]) -> None:
        self._log = log
        self._segment_of = segment_of
        self.paused: set[str] = set()
        self._open_failure: set[str] = set()  # failed and not fenced since
        self.violations: list[Violation] = []

    def observe_event(self, event: Event) -> None:
        segment = str(event.payload.get("segment", event.subject))
        if event.type == "segment.recovery_paused":
            self.paused.add(segment)
        elif event.type == "segment.recovery_resumed":
            self.paused.discard(segment)
        elif event.type == "host.failed":
            self._open_failure.add(event.subject)
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

    def on_power_off(self, host: str, method: str) -> None:
        segment = self._segment_of.get(host, "")
        if segment in self.paused:
            self._broken("no_fence_while_paused", host,
                         f"{method} power-off requested while segment {segment} is paused")

    def summary(self) -> dict[str, bool]:
        broken = {v.name for v in self.violations}
        return {name: name not in broken for name in NAMES}
