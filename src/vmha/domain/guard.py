"""Mass-failure guard and fence rate limit (DESIGN.md rules 3 and 6).

Called by the engine after every host state change and before every fence.
Pure: host states and times come in, decisions come out.

- A segment is *paused* when more than `mass_failure_threshold` of its
  hosts (maintenance hosts excluded) became suspect/partitioned/failed
  within the last `window_s` seconds and still are: so many hosts dying at
  once is more likely the controller's own network. It takes at least two
  hosts: one failed host never pauses a segment. While paused, nothing is
  fenced or recovered in that segment.
- It resumes when the share of hosts that look down (at any age) drops to
  the threshold or below, or when an operator resumes it.
- When every host of every segment looks down (and there are at least two),
  the controller assumes it is the one cut off: no fencing anywhere.
- Fencing is rate limited per segment: `burst` fences at once, then one
  per `interval_s`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vmha.domain.model import Host, HostState

# States in which a host "looks down" for the guard. Fenced and later
# states do not count: the failure was handled, it is not happening now.
TROUBLE_STATES = frozenset(
    {HostState.SUSPECT, HostState.PARTITIONED, HostState.FAILED, HostState.FENCING}
)


@dataclass(frozen=True)
class SegmentHealth:
    total: int  # hosts not in maintenance
    down: int  # hosts that look down now
    recent: int  # of those, how many started looking down within the window

    @property
    def share(self) -> float:
        return self.down / self.total if self.total else 0.0

    @property
    def recent_share(self) -> float:
        return self.recent / self.total if self.total else 0.0


def segment_health(
    hosts: Iterable[Host], trouble_since: dict[str, float], now: float, window_s: float
) -> SegmentHealth:
    """Count a segment's hosts. `trouble_since[host]`: when it first left `up`."""
    total = down = recent = 0
    for host in hosts:
        if host.maintenance or host.state is HostState.MAINTENANCE:
            continue
        total += 1
        if host.state in TROUBLE_STATES:
            down += 1
            if now - trouble_since.get(host.name, host.state_since) <= window_s:
                recent += 1
    return SegmentHealth(total, down, recent)


def health_of(total: int, troubled_since: Iterable[float], now: float,
              window_s: float) -> SegmentHealth:
    """`segment_health` from the segment's size (maintenance excluded) and
    when each host that looks down now first left `up`: O(hosts in
    trouble), for a detector that keeps those counts as hosts change."""
    down = recent = 0
    for since in troubled_since:
        down += 1
        recent += now - since <= window_s
    return SegmentHealth(total, down, recent)


def should_pause(health: SegmentHealth, threshold: float) -> bool:
    """Too many hosts went down at once (more than `threshold`, strictly)."""
    return health.total > 0 and health.recent_share > threshold and health.recent > 1


def may_resume(health: SegmentHealth, threshold: float) -> bool:
    return health.share <= threshold


def pause_reason(segment: str, health: SegmentHealth, threshold: float) -> str:
    return (
        f"{health.recent} of {health.total} hosts of segment {segment} failed at once "
        f"(more than {threshold:.0%}); automatic fencing and recovery paused"
    )


def resume_reason(segment: str, health: SegmentHealth) -> str:
    return (
        f"{health.down} of {health.total} hosts of segment {segment} look down now; "
        "automatic recovery resumed"
    )


def controller_isolated(segments: Sequence[SegmentHealth]) -> bool:
    """Every host of every segment looks down: we are the ones cut off."""
    total = sum(s.total for s in segments)
    return total >= 2 and all(s.down == s.total for s in segments if s.total)


@dataclass(frozen=True)
class FenceBudget:
    """Fence starts of one segment, for the rate limit."""

    starts: tuple[float, ...] = ()

    def allows(self, now: float, burst: int, interval_s: float) -> bool:
        return self.next_allowed(now, burst, interval_s) <= now

    def next_allowed(self, now: float, burst: int, interval_s: float) -> float:
        """At most `burst` starts in any `burst * interval_s` window: the
        first `burst` go at once, then one per `interval_s` on average."""
        if len(self.starts) < burst:
            return now
        return max(now, self.starts[-burst] + burst * interval_s)

    def record(self, now: float, keep: int = 16) -> FenceBudget:
        return FenceBudget((*self.starts, now)[-keep:])
