"""Membership and leader election on a real 3-member etcd cluster.

Each test uses a key prefix of its own on the module's cluster. Leases are
2 s (etcd's shortest with its default election timeout), so the timings
below are loose bounds, not measurements (bench/failover.py measures).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from vmha.adapters.coord import build_coordinator
from vmha.adapters.coord.etcd import EtcdCoordinator, parse_url
from vmha.domain.errors import ConfigError
from vmha.lab.etcd import EtcdCluster
from vmha.ports import ControllerInfo, CoordView

LEASE_S = 2.0


def group(etcd: EtcdCluster, prefix: str, n: int = 3) -> list[EtcdCoordinator]:
    out = []
    for i in range(1, n + 1):
        coord = build_coordinator(f"{etcd.url}/{prefix}", f"controller{i}", LEASE_S)
        assert isinstance(coord, EtcdCoordinator)
        coord.join(ControllerInfo(coord.name, f"http://198.18.0.{i}:7070", f"198.18.0.{i}:7071"))
        out.append(coord)
    return out


def until(check: Callable[[], CoordView | None], timeout_s: float) -> CoordView:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = check()
        if view is not None:
            return view
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s")


def test_one_leader_and_everyone_sees_the_whole_group(etcd: EtcdCluster) -> None:
    coords = group(etcd, "one-leader")
    views = [c.step() for c in coords]
    views = [c.step() for c in coords]  # the first ones joined before the others
    assert [v.leading for v in views] == [True, False, False]
    assert {v.leader for v in views} == {"controller1"}
    assert len({v.revision for v in views}) == 1 and views[0].revision > 0
    assert [m.name for m in views[2].members] == ["controller1", "controller2", "controller3"]
    assert views[1].members[0].api_url == "http://198.18.0.1:7070"
    assert 0 < views[0].valid_until - time.monotonic() <= LEASE_S
    for c in coords:
        c.resign()


def test_a_silent_leader_is_replaced_after_its_lease(etcd: EtcdCluster) -> None:
    """The leader stops renewing (a SIGSTOP, a dead process): another
    controller leads once etcd expired the lease, with a newer term, and
    the old one, stepping again, learns it is no longer the leader."""
    coords = group(etcd, "silent")
    for c in coords:
        c.step()
    first = coords[0].step()
    assert first.leading
    silent_at = time.monotonic()

    def new_leader() -> CoordView | None:
        views = [c.step() for c in coords[1:]]
        return views[0] if views[0].leader not in (None, "controller1") else None

    view = until(new_leader, LEASE_S + 20)  # etcd expires leases late when busy
    assert time.monotonic() - silent_at >= first.valid_until - silent_at - 0.05
    assert view.revision > first.revision
    late = coords[0].step()
    assert not late.leading and late.leader == view.leader
    for c in coords:
        c.resign()


def test_resigning_hands_over_at_once(etcd: EtcdCluster) -> None:
    coords = group(etcd, "resign", 2)
    for c in coords:
        c.step()
    coords[0].resign()
    assert coords[1].step().leading  # no lease to wait for
    assert [m.name for m in coords[1].step().members] == ["controller2"]
    coords[1].resign()


def test_without_quorum_nobody_leads_and_the_leader_stops_within_its_lease(
        etcd: EtcdCluster) -> None:
    coords = group(etcd, "quorum", 2)
    for c in coords:
        c.step()
    led = coords[0].step()
    assert led.leading
    etcd.pause_member("etcd1")
    etcd.pause_member("etcd2")
    try:
        view = coords[0].step()
        assert not view.healthy and view.error
        # still leading only on the old lease's deadline, never past it
        assert not view.leading or view.valid_until == led.valid_until
        time.sleep(max(0.0, led.valid_until - time.monotonic()))
        for c in coords:
            after = c.step()
            assert not after.leading and not after.healthy
    finally:
        etcd.resume_member("etcd1")
        etcd.resume_member("etcd2")
    back = until(lambda: next((v for v in (c.step() for c in coords) if v.leading), None),
                 LEASE_S + 30)
    # etcd extends leases over its own election: the old lease may have
    # survived, and then the same controller leads again in the same term
    assert back.healthy and back.revision >= led.revision
    assert back.leader == "controller1" or back.revision > led.revision
    for c in coords:
        c.resign()


def test_one_member_down_changes_nothing(etcd: EtcdCluster) -> None:
    """Endpoints are tried in turn: the member in use going away is not an
    outage while the other two keep quorum."""
    coords = group(etcd, "one-down", 2)
    for c in coords:
        c.step()
    etcd.stop_member("etcd1")
    try:
        views = [c.step() for c in coords]
        assert all(v.healthy for v in views), [v.error for v in views]
        assert views[0].leading and views[1].leader == "controller1"
    finally:
        etcd.start_member("etcd1")
        etcd.wait_healthy()
    for c in coords:
        c.resign()


def test_urls() -> None:
    assert parse_url("etcd://a:1,[::1]:2/x/y/") == ([("a", 1), ("::1", 2)], "/x/y")
    assert parse_url("etcd://127.0.0.1:2379") == ([("127.0.0.1", 2379)], "/vmha")
    for bad in ("etcd://a", "etcd://a:b", "etcd://:1", "zk://a:1", "etcd://a:0"):
        with pytest.raises(ConfigError, match="coordination url"):
            build_coordinator(bad, "c1", 5)


def test_the_local_coordinator_always_leads_alone() -> None:
    coord = build_coordinator("local", "c1", 5)
    coord.join(ControllerInfo("c1", "http://127.0.0.1:7070"))
    view = coord.step()
    assert view.leading and view.leader == "c1" and view.healthy
    assert [m.api_url for m in view.members] == ["http://127.0.0.1:7070"]
    assert view.valid_until > time.monotonic() + 1e6
    coord.resign()
    assert not coord.step().leading


def test_an_abstaining_leader_gives_the_key_up_and_another_leads(etcd: EtcdCluster) -> None:
    """A leader that hands over (vmha.domain.handover) deletes the leader
    key at its next round, keeps its lease and membership, and does not
    stand again while it abstains; the next controller's round wins."""
    coords = group(etcd, "abstain", 2)
    for c in coords:
        c.step()
    assert coords[0].step().leading
    coords[0].abstain(True)
    given = coords[0].step()
    assert not given.leading and given.leader is None
    assert [m.name for m in given.members] == ["controller1", "controller2"]
    assert not coords[0].step().leading  # the key is free, it does not take it back
    taken = coords[1].step()
    assert taken.leading and taken.leader == "controller2"
    assert coords[0].step().leader == "controller2"
    coords[0].abstain(False)  # standing again does not take it from a leader
    assert coords[0].step().leader == "controller2"
    coords[1].abstain(True)
    assert coords[1].step().leader is None
    assert coords[0].step().leading
    for c in coords:
        c.resign()
