"""Mass-failure guard, controller isolation and the fence rate limit."""

from __future__ import annotations

from vmha.domain.guard import (
    FenceBudget,
    controller_isolated,
    may_resume,
    segment_health,
    should_pause,
)
from vmha.domain.model import Host, HostState


def hosts(states: list[HostState], since: float = 100.0) -> list[Host]:
    return [Host(f"h{i}", "s1", state=s, state_since=since) for i, s in enumerate(states)]


U, S, F, FD = HostState.UP, HostState.SUSPECT, HostState.FAILED, HostState.FENCED


def test_more_than_half_down_at_once_pauses() -> None:
    health = segment_health(hosts([S, S, F, U, U]), {}, now=105, window_s=60)
    assert (health.total, health.down, health.recent) == (5, 3, 3)
    assert should_pause(health, 0.5)


def test_exactly_half_does_not_pause_and_one_host_never_does() -> None:
    assert not should_pause(segment_health(hosts([S, U]), {}, 105, 60), 0.5)
    assert not should_pause(segment_health(hosts([F]), {}, 105, 60), 0.5)


def test_old_failures_and_handled_hosts_do_not_count() -> None:
    old = hosts([F, F, U, U, U], since=0.0)
    assert not should_pause(segment_health(old, {}, now=500, window_s=60), 0.5)
    handled = hosts([FD, FD, S, U])
    assert not should_pause(segment_health(handled, {}, now=105, window_s=60), 0.5)


def test_maintenance_hosts_are_left_out() -> None:
    hs = [*hosts([S, S, U]), Host("m1", "s1", state=HostState.MAINTENANCE, maintenance=True)]
    health = segment_health(hs, {}, 105, 60)
    assert health.total == 3 and should_pause(health, 0.5)


def test_resume_when_share_drops() -> None:
    assert not may_resume(segment_health(hosts([S, S, F, U, U]), {}, 500, 60), 0.5)
    assert may_resume(segment_health(hosts([S, S, U, U, U]), {}, 500, 60), 0.5)


def test_isolation_needs_every_host_down() -> None:
    seg1 = segment_health(hosts([S, F]), {}, 105, 60)
    seg2 = segment_health(hosts([S]), {}, 105, 60)
    assert controller_isolated([seg1, seg2])
    assert not controller_isolated([seg1, segment_health(hosts([S, U]), {}, 105, 60)])
    assert not controller_isolated([segment_health(hosts([S]), {}, 105, 60)])


def test_fence_rate_limit_one_per_30_s_beyond_the_first() -> None:
    budget = FenceBudget()
    assert budget.allows(0.0, burst=1, interval_s=30)
    budget = budget.record(0.0)
    assert not budget.allows(10.0, 1, 30)
    assert budget.next_allowed(10.0, 1, 30) == 30.0
    assert budget.allows(30.0, 1, 30)
    budget = budget.record(30.0)
    assert budget.next_allowed(31.0, 1, 30) == 60.0
    assert FenceBudget().record(0.0).allows(1.0, burst=2, interval_s=30)


def test_health_of_the_troubled_hosts_alone_equals_counting_the_segment() -> None:
    from vmha.domain.guard import SegmentHealth, health_of

    hosts = [Host(f"h{i}", "s1", state=state, state_since=since) for i, (state, since) in
             enumerate([(HostState.UP, 0.0), (HostState.SUSPECT, 95.0),
                        (HostState.FAILED, 10.0), (HostState.FENCING, 70.0),
                        (HostState.RECOVERED, 90.0), (HostState.UP, 99.0)])]
    hosts.append(Host("m", "s1", state=HostState.MAINTENANCE, maintenance=True))
    trouble = {"h1": 95.0, "h2": 10.0, "h3": 70.0}
    assert health_of(6, trouble.values(), 100.0, 60.0) == segment_health(
        hosts, trouble, 100.0, 60.0) == SegmentHealth(6, 3, 2)
