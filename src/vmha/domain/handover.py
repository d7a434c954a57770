"""When a leader that hears no host hands leadership to one that does.

A leader cut off from the hosts but not from etcd keeps its lease: the
cross-controller confirmation (vmha.engine.shard) keeps it from suspecting
the hosts, but it cannot recover them either (its confirmation rounds and,
with the libvirt cloud, its calls to the agents do not reach them). The
controllers compare how many of the registered hosts each one hears:
followers publish their count in their shard report, the leader counts its
own.

- A controller is **deaf** when it hears at most DEAF_SHARE of the hosts,
  and **hears them** when it hears at least HEARS_SHARE. The two never
  overlap, so a controller cannot be both the one that steps aside and the
  one that would take over.
- The leader **resigns** when it has been deaf for HOLD_S without a break
  while another controller's fresh report, renewed since the hold-down
  began, says it hears the hosts (`HoldDown.observe`). When the hosts are
  really all dead, the followers hear none of them either, so nobody
  resigns.
- A follower **does not stand** for leader while it is deaf and another
  controller hears the hosts (`abstains`). When nobody else hears them (all
  dead, or the others gone), it stands again: some controller always stands.

Leadership moves only from a deaf controller to one that hears at least
half the hosts, after a hold-down; going back needs the new leader to turn
deaf in its turn while the old one hears again: it cannot flap on one fault.

Pure: no I/O, no clock (times are passed in). Used by vmha.controller.service.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DEAF_SHARE = 0.1  # hears at most this share of the registered hosts: deaf
HEARS_SHARE = 0.5  # hears at least this share: may lead instead
HOLD_S = 5.0  # a leader deaf this long (without a break) resigns


@dataclass(frozen=True)
class Hearing:
    """How many of the `hosts` registered hosts controller `name` heard
    lately; `at`: when it said so (its report last moved, on the observer's
    clock)."""

    name: str
    hears: int
    hosts: int
    at: float = 0.0

    @property
    def deaf(self) -> bool:
        return self.hosts > 0 and self.hears <= DEAF_SHARE * self.hosts

    @property
    def hearing(self) -> bool:
        return self.hosts > 0 and self.hears >= HEARS_SHARE * self.hosts

    def __str__(self) -> str:
        return f"{self.name} hears {self.hears} of {self.hosts} hosts"


def better(own: Hearing, others: Iterable[Hearing]) -> Hearing | None:
    """Another controller that hears the hosts while `own` is deaf (the one
    that hears most), or None."""
    if not own.deaf:
        return None
    found = [o for o in others if o.name != own.name and o.hearing]
    return max(found, key=lambda o: (o.hears / o.hosts, o.name)) if found else None


def abstains(own: Hearing, others: Iterable[Hearing]) -> bool:
    """A follower stays out of the election: deaf, and another hears the hosts."""
    return better(own, others) is not None


@dataclass(frozen=True)
class Decision:
    """What the leader's hold-down says: `started` (it began this call: log
    it), `resign` (the hold-down ran out), and why."""

    started: bool = False
    resign: bool = False
    reason: str = ""


class HoldDown:
    """The leader's side: deaf for HOLD_S, without a break, while another
    controller hears the hosts -> resign."""

    def __init__(self, hold_s: float = HOLD_S) -> None:
        self.hold_s = hold_s
        self.since: float | None = None

    def observe(self, own: Hearing, others: Iterable[Hearing], now: float) -> Decision:
        other = better(own, others)
        if other is None:
            self.since = None
            return Decision()
        reason = f"it hears {own.hears} of {own.hosts} hosts while {other}"
        if self.since is None:
            self.since = now
            return Decision(started=True, reason=reason)
        if now - self.since < self.hold_s or other.at <= self.since:
            # the other's word must also be renewed since this began: a
            # follower whose judging stalled must not carry a resignation
            return Decision(reason=reason)
        return Decision(resign=True, reason=f"{reason}, for {now - self.since:.1f} s")

    def reset(self) -> None:
        self.since = None
