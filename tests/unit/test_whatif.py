"""What-if: the guard and the planner on an inventory, nothing touched."""

from __future__ import annotations

from vmha.domain.model import Capacity, Host, HostState, Instance, RecoveryMethod, Segment
from vmha.domain.policy import CustomFallback, HAPolicy, LayerMode
from vmha.domain.whatif import Inventory, policy_for, single_failures, what_if

NOW = 1000.0


def host(name: str, seg: str = "s1", vcpus: int = 8, ram: int = 8192, reserved: bool = False,
         state: HostState = HostState.UP, maintenance: bool = False) -> Host:
    return Host(name, seg, capacity=Capacity(vcpus, ram), reserved=reserved, state=state,
                maintenance=maintenance, state_since=0.0)


def vm(vid: str, on: str, ram: int = 2048, prio: int = 500,
       mode: LayerMode = LayerMode.AUTO, group: str | None = None) -> Instance:
    return Instance(vid, vid, on, resources=Capacity(1, ram),
                    policy=HAPolicy(host=mode, priority=prio), anti_affinity_group=group)


def inventory(hosts: list[Host], vms: list[Instance], paused: frozenset[str] = frozenset(),
              segments: dict[str, Segment] | None = None) -> Inventory:
    segs = segments or {s: Segment(s) for s in {h.segment for h in hosts}}
    hmap = {h.name: h for h in hosts}
    policies = {i.id: policy_for(i, segs, hmap, {}) for i in vms}
    return Inventory(segs, hmap, vms, policies, paused)


def test_each_instance_of_the_failed_host_is_placed_by_priority_and_reported() -> None:
    inv = inventory(
        [host("h1"), host("h2", ram=4096), host("h3", ram=4096), host("h4")],
        [vm("big", "h1", 4096, 900), vm("small", "h1", 2048, 100),
         vm("n", "h1", mode=LayerMode.NOTIFY), vm("c", "h1", mode=LayerMode.CUSTOM),
         vm("o", "h1", mode=LayerMode.OFF), vm("x", "h4", 8192)])
    w = what_if(inv, ["h1"], NOW)
    got = {o.instance: (o.action, o.target) for o in w.outcomes}
    # h4 is full; big takes one 4 GB host, small the other
    assert got == {"big": ("move", "h2"), "small": ("move", "h3"), "n": ("notify", None),
                   "c": ("custom", None), "o": ("off", None)}
    # reported by priority, then name, like the planner orders them
    assert [o.instance for o in w.outcomes] == ["big", "c", "n", "o", "small"]
    assert "decision.requested" in next(o.reason for o in w.outcomes if o.instance == "c")
    assert w.absorbed and not w.isolated
    assert [(s.segment, s.down, s.hosts, s.would_pause) for s in w.segments] == [
        ("s1", 1, 4, False)]


def test_the_inventory_is_not_changed() -> None:
    hosts = [host("h1"), host("h2")]
    vms = [vm("a", "h1")]
    inv = inventory(hosts, vms)
    what_if(inv, ["h1"], NOW)
    assert inv.hosts["h1"].state is HostState.UP and inv.instances[0].host == "h1"


def test_unplaceable_instances_say_why_and_the_segment_does_not_absorb_it() -> None:
    inv = inventory([host("h1"), host("h2", ram=2048)],
                    [vm("a", "h1", 2048, 900), vm("b", "h1", 2048, 100)])
    w = what_if(inv, ["h1"], NOW)
    assert [(o.instance, o.action) for o in w.outcomes] == [("a", "move"), ("b", "unplaceable")]
    assert w.unplaceable[0].reason == "no host with 1 vCPU / 2048 MB free"
    assert not w.absorbed


def test_half_a_segment_failing_at_once_would_pause_it() -> None:
    inv = inventory([host("h1"), host("h2"), host("h3")], [vm("a", "h1")])
    w = what_if(inv, ["h1", "h2"], NOW)
    (seg,) = w.segments
    assert seg.would_pause and not seg.recovers and seg.failing == 2
    assert "2 of 3 hosts of segment s1 failed at once" in seg.reason
    assert not w.absorbed
    # one host of three does not pause it
    assert what_if(inv, ["h1"], NOW).segments[0].would_pause is False


def test_a_paused_segment_recovers_nothing_and_isolation_is_reported() -> None:
    inv = inventory([host("h1"), host("h2")], [vm("a", "h1")], paused=frozenset({"s1"}))
    w = what_if(inv, ["h1"], NOW)
    assert w.segments[0].already_paused and not w.absorbed
    everything = what_if(inventory([host("h1"), host("h2")], []), ["h1", "h2"], NOW)
    assert everything.isolated


def test_several_failed_hosts_are_planned_in_turn_and_never_onto_each_other() -> None:
    inv = inventory([host("h1", ram=4096), host("h2", ram=4096), host("h3", ram=4096),
                     host("h4", ram=4096), host("h5", ram=4096)],
                    [vm("a", "h1", 4096), vm("b", "h2", 4096)],
                    segments={"s1": Segment("s1", mass_failure_threshold=0.9)})
    w = what_if(inv, ["h2", "h1"], NOW)
    targets = {o.instance: o.target for o in w.outcomes}
    assert w.failed == ("h1", "h2")
    assert targets["a"] not in ("h1", "h2") and targets["b"] not in ("h1", "h2")
    assert targets["a"] != targets["b"]  # the second sees the first one's move


def test_reserved_hosts_follow_the_segment_recovery_method() -> None:
    segs = {"s1": Segment("s1", recovery_method=RecoveryMethod.RESERVED_HOST)}
    inv = inventory([host("h1"), host("h2"), host("spare", reserved=True)], [vm("a", "h1")],
                    segments=segs)
    assert what_if(inv, ["h1"], NOW).outcomes[0].target == "spare"


def test_policy_for_prefers_inline_then_named_then_segment_default() -> None:
    segs = {"s1": Segment("s1", default_policy="seg")}
    hosts = {"h1": host("h1")}
    named = {"gold": HAPolicy(priority=900), "seg": HAPolicy(priority=10)}
    plain = Instance("i", "i", "h1")
    assert policy_for(plain, segs, hosts, named).priority == 10
    assert policy_for(Instance("i", "i", "h1", policy_name="gold"), segs, hosts,
                      named).priority == 900
    inline = Instance("i", "i", "h1", policy=HAPolicy(priority=1), policy_name="gold")
    assert policy_for(inline, segs, hosts, named).priority == 1
    assert policy_for(Instance("i", "i", None), segs, hosts, named).priority == 500


def test_custom_without_fallback_says_it_stays_down() -> None:
    pol = HAPolicy(host=LayerMode.CUSTOM, custom_fallback=CustomFallback.NONE)
    inst = Instance("c", "c", "h1", policy=pol)
    w = what_if(inventory([host("h1"), host("h2")], [inst]), ["h1"], NOW)
    assert "no fallback" in w.outcomes[0].reason


def test_single_failures_check_every_up_host() -> None:
    inv = inventory([host("h1", ram=4096), host("h2", ram=4096),
                     host("h3", state=HostState.FENCED), host("h4", maintenance=True)],
                    [vm("a", "h1", 4096), vm("b", "h2", 2048)])
    results = {w.failed: w.absorbed for w in single_failures(inv, NOW)}
    # h1's 4 GB instance finds no room on h2 (2 GB free); h2's fits on h1? no: h1 is full
    assert results == {("h1",): False, ("h2",): False}
    roomy = inventory([host("h1"), host("h2"), host("h3")], [vm("a", "h1"), vm("b", "h2")])
    assert all(w.absorbed for w in single_failures(roomy, NOW))


def test_notes_for_hosts_that_are_not_up() -> None:
    inv = inventory([host("h1", maintenance=True), host("h2", state=HostState.FENCED),
                     host("h3")], [])
    notes = what_if(inv, ["h1", "h2"], NOW).notes
    assert any("maintenance" in n for n in notes) and any("fenced already" in n for n in notes)
