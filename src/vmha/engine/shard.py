"""Heartbeat sharding: each controller judges the silence of its share.

Every controller receives every heartbeat (agents send to all of them,
docs/controllers.md); the hash ring over the controllers' membership
(vmha.domain.ring) gives each one a share of the hosts. Two parts:

- `ShardWatch`, on a controller that does not lead: a phi detector for
  every host it hears (so a host that moves to it on a join or a leave
  comes with its heartbeat history, and is not suspected because of the
  switch), and a `ShardReport` of the hosts of its share that are silent —
  with the time each was last heard — published to the others with its
  membership record (vmha.adapters.coord). A host of its share that it has
  never heard is given a grace period from the moment it became its own
  (counted as heard then), as the engine does for every host at its start.
- `ShardView`, read by the leader's detector (vmha.engine.detection): for
  every host, the verdict of a second controller. A host turns suspect
  only when the leader's own detector finds it silent AND that controller
  reports it silent too: its owner, or for the leader's own share its
  *witness* (the first other member by name, which judges the leader's
  share besides its own: `witness_of`). Two controllers' views, so one
  controller cut off from the hosts but not from etcd — a follower or the
  leader itself — cannot make them suspect, let alone failed. Without a
  usable report (none yet, one made on another membership or for another
  leader, or one cut short because it would be too long) the leader judges
  the host alone, as a single controller does.

A report also says how many of the registered hosts its author heard
lately (`hears` of `hosts`): a leader that hears almost none while a
follower hears them hands leadership over (vmha.domain.handover).

Fencing and recovery stay with the leader's engine. Pure logic over the
detector and the ring; the controller (vmha.controller.service) feeds
heartbeats, the membership and the reports in, and carries reports out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from vmha.domain.detector import DetectorConfig, PhiDetector
from vmha.domain.handover import Hearing
from vmha.domain.ring import Ring
from vmha.ports import HeartbeatBatch

# A report names at most this many silent hosts: one controller that hears
# none of its share is cut off, not watching thousands of dead hosts, and
# its record in etcd must stay small. A longer list is cut and marked.
MAX_REPORTED = 1000
# A follower publishes its report again at least this often (`seq` + 1) even
# when nothing changed; a report whose `seq` has not moved for STALE_S (as
# the leader counts on its own clock: no skew between machines) is not used:
# a follower whose judging stopped must not keep saying "heard" for its share.
REFRESH_S = 2.0
STALE_S = 3 * REFRESH_S
# A controller "hears" a host that it heard within this many heartbeat
# intervals (vmha.domain.handover counts them).
HEARD_WITHIN = 3


@dataclass(frozen=True)
class ShardReport:
    """One controller's verdicts on its share: `silent` maps each silent
    host of its share to the (wall-clock) time it was last heard;
    `members` is the membership its share was computed on; `owned` how
    many hosts the share has; `truncated` that more were silent than listed."""

    members: tuple[str, ...] = ()
    owned: int = 0
    silent: Mapping[str, float] = field(default_factory=dict)
    truncated: bool = False
    witness_for: str = ""  # the leader whose share it judged too ("" none)
    seq: int = 0  # counts the publications (see REFRESH_S)
    # how many of the `hosts` registered hosts it heard within HEARD_WITHIN
    # intervals (vmha.domain.handover: may a deaf leader hand over to it?)
    hears: int = 0
    hosts: int = 0

    def same(self, other: ShardReport) -> bool:
        """The same verdicts (whatever the `seq`)."""
        return replace(self, seq=0) == replace(other, seq=0)

    def to_json(self) -> str:
        return json.dumps({"members": list(self.members), "owned": self.owned,
                           "silent": {h: round(t, 3) for h, t in sorted(self.silent.items())},
                           "truncated": self.truncated, "witness_for": self.witness_for,
                           "seq": self.seq, "hears": self.hears, "hosts": self.hosts},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ShardReport | None:
        """The report in `text`; None when empty or unreadable."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(tuple(str(m) for m in data["members"]), int(data["owned"]),
                       {str(h): float(t) for h, t in data["silent"].items()},
                       bool(data.get("truncated", False)), str(data.get("witness_for", "")),
                       int(data.get("seq", 0)), int(data.get("hears", 0)),
                       int(data.get("hosts", 0)))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def witness_of(members: Iterable[str], leader: str | None) -> str | None:
    """The member that judges the leader's share besides its own: the
    first other member by name (None: the leader is alone)."""
    return next((m for m in sorted(members) if m != leader), None) if leader else None


def count_heard(detectors: Mapping[str, PhiDetector], hosts: Iterable[str], since: float,
                grace: bool) -> int:
    """How many of `hosts` were last heard at `since` or later. `grace`: a
    host never heard but given a grace period (its detector's arrival set,
    no heartbeat yet) counts too; without it, only real heartbeats count."""
    count = 0
    for host in hosts:
        det = detectors.get(host)
        if det is None or det.last_arrival is None or det.last_arrival < since:
            continue
        if grace or det.last_seq is not None:
            count += 1
    return count


def judged_at(last: float | None, now: float, heard_until: float, lost_until: float) -> float:
    """The moment up to which a host's silence counts: no later than the
    intake has read, and without the time in which our own kernel dropped
    heartbeats (vmha.engine.detection.HostMonitor.silent, same rule)."""
    at = min(now, heard_until)
    if last is not None and last < lost_until:
        at = last + max(0.0, at - lost_until)
    return at


class ShardWatch:
    """A follower's detectors and its verdicts on its share (module doc)."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.detectors: dict[str, PhiDetector] = {}
        self.heard_until = 0.0
        self.lost_until = 0.0
        self.applied = 0

    def adopt(self, detectors: Mapping[str, PhiDetector], heard_until: float,
              lost_until: float) -> None:
        """Carry on from a stopped engine's detectors (a leader deposed, e.g.
        when etcd lost quorum): its hosts' history, not a cold start."""
        self.detectors = dict(detectors)
        self.heard_until, self.lost_until = heard_until, lost_until

    def apply(self, batch: HeartbeatBatch, now: float) -> None:
        """Heartbeats the intake verified since the last call."""
        self.lost_until = max(self.lost_until, batch.lost_until)
        for host, seq, sent_at, arrived_at in batch.arrivals:
            det = self.detectors.get(host)
            if det is None:
                det = self.detectors[host] = PhiDetector(self.config)
            learn = det.last_arrival is None or det.last_arrival >= self.lost_until
            det.heartbeat(seq, sent_at, arrived_at, learn)
        self.applied += len(batch.arrivals)
        self.heard_until = min(now, batch.read_until)

    def report(self, members: tuple[str, ...], owned: Iterable[str], now: float,
               witnessed: Iterable[str] = (), witness_for: str = "") -> ShardReport:
        """Which of `owned` (and of `witnessed`, the share of leader
        `witness_for`) are silent now. A host never heard is counted as
        heard now (its grace period starts when it becomes ours)."""
        silent: dict[str, float] = {}
        count = 0
        for host in owned:
            count += 1
            self._judge(host, now, silent)
        for host in witnessed:
            self._judge(host, now, silent)
        truncated = len(silent) > MAX_REPORTED
        if truncated:
            silent = dict(sorted(silent.items(), key=lambda kv: kv[1])[:MAX_REPORTED])
        return ShardReport(members, count, silent, truncated, witness_for)

    def hears(self, hosts: Iterable[str], now: float) -> int:
        """How many of `hosts` this follower really heard lately: arrivals
        within HEARD_WITHIN intervals of `now` (not of what its intake has
        read: a follower that stopped reading must not claim to hear)."""
        since = now - HEARD_WITHIN * self.config.interval_s
        return count_heard(self.detectors, hosts, since, grace=False)

    def _judge(self, host: str, now: float, silent: dict[str, float]) -> None:
        det = self.detectors.get(host)
        if det is None:
            det = self.detectors[host] = PhiDetector(self.config)
            det.last_arrival = now
            return
        last = det.last_arrival
        if last is not None and det.suspect(judged_at(last, now, self.heard_until,
                                                      self.lost_until)):
            silent[host] = last

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the detectors of hosts no longer registered."""
        keep = set(keep)
        for host in [h for h in self.detectors if h not in keep]:
            del self.detectors[host]


class ShardView:
    """The leader's view of who owns what and what the owners report.

    `owns(host)`: in this controller's share. `verdict(host)`: True (the
    second controller — its owner, or this one's witness for its own
    share — reports it silent), False (it judges it and does not), or None
    (no usable report: judge it alone). `take_changes()` hands the detector the hosts whose verdict
    may have changed since the last call, or `every=True` when the ring
    did (a join or a leave)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ring = Ring([name])
        self.reports: dict[str, ShardReport] = {}
        self._moved_at: dict[str, float] = {}  # member -> when its report's seq last moved
        self._now = 0.0
        self._changed: set[str] = set()
        self._every = False

    def owner(self, host: str) -> str:
        return self.ring.owner(host) or self.name

    def owns(self, host: str) -> bool:
        return self.owner(host) == self.name

    def second(self, host: str) -> str | None:
        """The other controller whose report decides with ours: its owner,
        or for a host of our own share our witness."""
        owner = self.owner(host)
        return witness_of(self.ring.members, self.name) if owner == self.name else owner

    def _report_on(self, host: str) -> ShardReport | None:
        """The second controller's usable report on `host`, if any."""
        second = self.second(host)
        report = self.reports.get(second) if second is not None else None
        if report is None or report.members != self.ring.members or report.truncated:
            return None
        if self._now - self._moved_at.get(second or "", -STALE_S) > STALE_S:
            return None  # its author stopped publishing: judge alone
        if self.owns(host) and report.witness_for != self.name:
            return None  # it does not judge our share (yet)
        return report

    def verdict(self, host: str) -> bool | None:
        report = self._report_on(host)
        return None if report is None else host in report.silent

    def last_heard(self, host: str) -> float | None:
        """When the second controller last heard `host`, if it reports it silent."""
        report = self._report_on(host)
        return None if report is None else report.silent.get(host)

    def update(self, members: Iterable[str], reports: Mapping[str, ShardReport],
               now: float) -> None:
        """A round's membership and reports (this controller's own ignored),
        at `now` (this controller's clock)."""
        ring = Ring(members) if members else Ring([self.name])
        if self.name not in ring.members:  # not in the group (yet): it watches alone
            ring = Ring([*ring.members, self.name])
        if ring != self.ring:
            self.ring = ring
            self._every = True
        fresh = {m: r for m, r in reports.items() if m != self.name and m in ring.members}
        stale_before = {m for m in self.reports if self._stale(m)}
        self._now = now
        for member, got in fresh.items():
            had = self.reports.get(member)
            if had is None or had.seq != got.seq:
                self._moved_at[member] = now
        for member in list(self._moved_at):
            if member not in fresh:
                del self._moved_at[member]
        if {m for m in fresh if self._stale(m)} != stale_before & set(fresh):
            self._every = True  # a report went stale or came back: its hosts change judge
        for member in set(fresh) | set(self.reports):
            old, new = self.reports.get(member), fresh.get(member)
            if old == new or (old is not None and new is not None and old.same(new)):
                continue
            if (old is None or new is None or old.members != new.members
                    or old.truncated != new.truncated or old.witness_for != new.witness_for):
                self._every = True  # a whole share's verdicts came or went
            else:
                self._changed |= set(old.silent) ^ set(new.silent)
        self.reports = fresh

    def hearings(self) -> list[Hearing]:
        """What every other member's fresh report says it hears (reports of
        any membership: only their counts matter here)."""
        return [Hearing(m, r.hears, r.hosts, self._moved_at.get(m, 0.0))
                for m, r in sorted(self.reports.items()) if r.hosts > 0 and not self._stale(m)]

    def _stale(self, member: str) -> bool:
        return self._now - self._moved_at.get(member, -STALE_S) > STALE_S

    def take_changes(self) -> tuple[set[str], bool]:
        changed, every = self._changed, self._every
        self._changed, self._every = set(), False
        return changed, every
