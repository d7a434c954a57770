"""The controllers' hash ring (vmha.domain.ring): balance and minimal movement."""

from __future__ import annotations

from collections import Counter

import pytest

from vmha.domain.ring import Ring, moved

HOSTS = [f"host{i}" for i in range(30_000)]


def test_an_empty_ring_owns_nothing() -> None:
    assert Ring([]).owner("host1") is None
    assert Ring([]).shares(["host1"]) == {}


def test_one_member_owns_every_host() -> None:
    ring = Ring(["controller1"])
    assert {ring.owner(h) for h in HOSTS[:1000]} == {"controller1"}


def test_the_owner_does_not_depend_on_the_order_members_are_listed_in() -> None:
    a, b = Ring(["c1", "c2", "c3"]), Ring(["c3", "c1", "c2", "c1"])
    assert a == b
    assert [a.owner(h) for h in HOSTS[:2000]] == [b.owner(h) for h in HOSTS[:2000]]


@pytest.mark.parametrize("members", [2, 3, 5])
def test_shares_are_balanced(members: int) -> None:
    ring = Ring([f"controller{i}" for i in range(1, members + 1)])
    counts = Counter(ring.owner(h) for h in HOSTS)
    fair = len(HOSTS) / members
    assert len(counts) == members
    # 256 points per member: every share within 10 % of a fair one
    assert all(abs(n - fair) / fair < 0.10 for n in counts.values()), counts


def test_a_member_joining_takes_only_its_share_from_the_others() -> None:
    before = Ring(["c1", "c2", "c3"])
    after = Ring(["c1", "c2", "c3", "c4"])
    gone = moved(before, after, HOSTS)
    assert all(after.owner(h) == "c4" for h in gone)  # nothing moves between old members
    assert 0.15 < len(gone) / len(HOSTS) < 0.35  # about a quarter


def test_a_member_leaving_hands_out_only_its_own_hosts() -> None:
    before = Ring(["c1", "c2", "c3"])
    after = Ring(["c1", "c3"])
    gone = moved(before, after, HOSTS)
    assert gone == [h for h in HOSTS if before.owner(h) == "c2"]
    counts = Counter(after.owner(h) for h in gone)
    assert set(counts) == {"c1", "c3"}  # spread over the rest, not dumped on one
    assert min(counts.values()) / max(counts.values()) > 0.6


def test_shares_list_every_member_and_cover_every_host_once() -> None:
    ring = Ring(["c1", "c2", "c3"])
    shares = ring.shares(HOSTS[:3000])
    assert set(shares) == {"c1", "c2", "c3"}
    assert sorted(h for hosts in shares.values() for h in hosts) == sorted(HOSTS[:3000])
