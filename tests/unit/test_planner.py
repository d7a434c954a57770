"""Recovery planner: priorities, capacity, reserved hosts, anti-affinity."""

from __future__ import annotations

import random

from vmha.domain.model import Capacity, Host, HostState, Instance, RecoveryMethod
from vmha.domain.planner import SCHEDULER, candidates_from, plan, plan_by_cloud
from vmha.domain.policy import HAPolicy


def vm(vid: str, vcpus: int = 2, ram: int = 2048, prio: int = 500, group: str | None = None,
       stopped: bool = False, host: str | None = "dead") -> Instance:
    pol = HAPolicy(priority=prio, evacuate_to_stopped=stopped)
    return Instance(vid, vid, host, resources=Capacity(vcpus, ram), policy=pol,
                    anti_affinity_group=group)


def host(name: str, vcpus: int = 16, ram: int = 32768, reserved: bool = False,
         state: HostState = HostState.UP, maintenance: bool = False) -> Host:
    return Host(name, "s1", capacity=Capacity(vcpus, ram), reserved=reserved, state=state,
                maintenance=maintenance)


def test_highest_priority_first_and_the_rest_reported_with_a_reason() -> None:
    cands = candidates_from([host("h1", vcpus=4, ram=8192)], [])
    p = plan([vm("low", 4, 8192, 100), vm("high", 4, 8192, 900)], cands)
    assert [(x.instance, x.host) for x in p.placements] == [("high", "h1")]
    assert [(u.instance, u.reason) for u in p.unplaced] == [
        ("low", "no host with 4 vCPU / 8192 MB free")]


def test_ties_are_broken_by_name() -> None:
    cands = candidates_from([host("h1", vcpus=2, ram=2048)], [])
    p = plan([vm("b"), vm("a"), vm("c")], cands)
    assert [x.instance for x in p.placements] == ["a"]


def test_used_capacity_counts_and_unschedulable_hosts_are_skipped() -> None:
    hosts = [host("full", 4, 4096), host("down", state=HostState.SUSPECT),
             host("maint", maintenance=True), host("free", 4, 4096)]
    placed = [vm("x", 4, 4096, host="full")]
    cands = candidates_from(hosts, placed, exclude=("dead",))
    assert [c.host.name for c in cands] == ["full", "free"]
    p = plan([vm("a", 2, 2048), vm("b", 2, 2048), vm("c", 2, 2048)], cands)
    assert {x.host for x in p.placements} == {"free"}
    assert [u.instance for u in p.unplaced] == ["c"]


def test_spreads_to_the_host_with_most_free_ram() -> None:
    cands = candidates_from([host("h1", ram=8192), host("h2", ram=16384)], [])
    p = plan([vm("a", ram=4096), vm("b", ram=4096), vm("c", ram=4096)], cands)
    assert [x.host for x in p.placements] == ["h2", "h2", "h1"]


def test_reserved_host_methods() -> None:
    hosts = [host("normal"), host("spare", reserved=True)]
    cands = candidates_from(hosts, [])
    def targets(method: RecoveryMethod, n: int = 1) -> list[str]:
        p = plan([vm(f"v{i}", 16, 32768) for i in range(n)], cands, method)
        return [x.host for x in p.placements]
    assert targets(RecoveryMethod.AUTO, 2) == ["normal"]
    assert targets(RecoveryMethod.RESERVED_HOST, 2) == ["spare"]
    assert targets(RecoveryMethod.AUTO_PRIORITY, 2) == ["normal", "spare"]
    assert targets(RecoveryMethod.RH_PRIORITY, 2) == ["spare", "normal"]


def test_reserved_method_without_reserved_hosts_says_so() -> None:
    p = plan([vm("a")], candidates_from([host("h1")], []), RecoveryMethod.RESERVED_HOST)
    assert p.unplaced[0].reason == "no schedulable host for recovery method reserved_host"


def test_anti_affinity_members_land_on_different_hosts() -> None:
    hosts = [host("h1"), host("h2"), host("h3")]
    placed = [vm("g0", group="g1", host="h3")]
    p = plan([vm("a", group="g1"), vm("b", group="g1"), vm("c", group="g1")],
             candidates_from(hosts, placed))
    assert sorted(x.host for x in p.placements) == ["h1", "h2"]
    assert [(u.instance, u.reason) for u in p.unplaced] == [
        ("c", "anti-affinity group g1 has no other host")]


def test_evacuate_to_stopped_is_carried() -> None:
    p = plan([vm("a", stopped=True)], candidates_from([host("h1")], []))
    assert p.placements[0].stopped is True


def test_deterministic_for_the_same_input_in_any_order() -> None:
    rng = random.Random(7)
    vms = [vm(f"v{i}", rng.choice([1, 2, 4]), rng.choice([1024, 2048, 8192]),
              rng.randrange(0, 1000), rng.choice([None, "g1", "g2"])) for i in range(300)]
    hosts = [host(f"h{i}", 16, 32768, reserved=i % 5 == 0) for i in range(20)]
    first = plan(vms, candidates_from(hosts, []), RecoveryMethod.AUTO_PRIORITY)
    shuffled = list(vms)
    rng.shuffle(shuffled)
    again = plan(shuffled, candidates_from(list(reversed(hosts)), []),
                 RecoveryMethod.AUTO_PRIORITY)
    assert first == again
    # capacity is never exceeded
    used: dict[str, list[int]] = {}
    by_id = {v.id: v for v in vms}
    for x in first.placements:
        u = used.setdefault(x.host, [0, 0])
        u[0] += by_id[x.instance].resources.vcpus
        u[1] += by_id[x.instance].resources.ram_mb
    assert all(v <= 16 and r <= 32768 for v, r in used.values())


def test_the_clouds_scheduler_gets_every_instance_by_priority_once() -> None:
    vms = [vm("low", prio=10), vm("high", prio=900, stopped=True), vm("mid", prio=500)]
    p = plan_by_cloud(vms)
    assert [(x.instance, x.host, x.stopped) for x in p.placements] == [
        ("high", SCHEDULER, True), ("mid", SCHEDULER, False), ("low", SCHEDULER, False)]
    again = plan_by_cloud(vms, refused=frozenset({"mid"}))
    assert [x.instance for x in again.placements] == ["high", "low"]
    assert [(u.instance, u.reason) for u in again.unplaced] == [
        ("mid", "the cloud's scheduler could not place it")]
