"""The engine's first start of defined instances, and hypervisor events."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from engine_harness import World

from vmha.domain.commands import DomainReport, Launch
from vmha.domain.model import Capacity, Instance, InstanceState
from vmha.domain.policy import HAPolicy
from vmha.domain.spec import InstanceSpec
from vmha.engine.reports import domain_event
from vmha.ports import EventQuery
from vmha.sim.loop import run_virtual

SPEC = InstanceSpec(image="lab", address="198.18.1.11/24")


def report(kind: str, detail: str = "", requested: bool = False) -> DomainReport:
    return DomainReport("(the uuid)", "vm", kind, detail, requested)


def building(vid: str, host: str | None) -> Instance:
    return Instance(vid, vid, host, resources=Capacity(1, 128), state=InstanceState.BUILDING,
                    spec=SPEC, policy=HAPolicy())


def test_a_new_instance_goes_to_the_least_loaded_host_and_runs() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2"])
        w.add_vm("busy", "h1")
        w.store.create_instance(building("new", None))
        w.start()
        await w.ask(Launch("new"))
        await asyncio.sleep(5)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.placement("new") == ("h2", "running")
    assert w.cloud.running["new"] == {"h2"}


def test_a_launch_cut_short_by_a_restart_is_done_by_the_next_controller() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1"])
        w.store.create_instance(building("new", "h1"))
        w.start()  # resume() launches every instance still building
        await asyncio.sleep(5)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.placement("new") == ("h1", "running")


def test_a_start_that_fails_is_recorded_and_published() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1"])
        w.cloud.refuse_start.add("h1")
        w.store.create_instance(building("new", "h1"))
        w.start()
        await asyncio.sleep(5)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.placement("new") == ("h1", "error")
    assert ("instance.recovery_failed", "new") in w.events("instance.")


def test_hypervisor_events_reach_the_guest_layer_only_from_the_instances_host() -> None:
    async def main() -> tuple[World, list[bool]]:
        w = World()
        w.add_cluster(["h1", "h2"])
        w.add_vm("vm1", "h1")
        ctl = w.start()
        await asyncio.sleep(1)
        acted = [
            await domain_event(ctl, "h2", "vm1", report("crashed")),  # not its host: stale
            await domain_event(ctl, "h1", "vm1", report("stopped", "destroyed", requested=True)),
            await domain_event(ctl, "h1", "vm1", report("paused")),  # informative only
            await domain_event(ctl, "h1", "nope", report("crashed")),
            await domain_event(ctl, "h1", "vm1", report("crashed", "panicked")),
        ]
        await asyncio.sleep(1)
        await w.close()
        return w, acted

    w, acted = run_virtual(main())
    assert acted == [False, False, False, False, True]
    assert w.events("instance.") == [("instance.crashed", "vm1")]
    assert w.store.get_instance("vm1").state is InstanceState.CRASHED


def test_replace_keeps_spec() -> None:
    inst = building("x", "h1")
    assert replace(inst, host="h2").spec == SPEC


def test_the_stop_after_a_poweroff_watchdog_is_not_a_crash() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1"])
        w.add_vm("vm1", "h1", watchdog_action="poweroff")
        ctl = w.start()
        await asyncio.sleep(1)
        assert await domain_event(ctl, "h1", "vm1", report("watchdog", "poweroff"))
        assert not await domain_event(ctl, "h1", "vm1", report("stopped", "shutdown"))
        await asyncio.sleep(30)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.events("instance.") == [("instance.watchdog", "vm1")]
    assert w.placement("vm1") == ("h1", "stopped")
    assert w.cloud.count("start", "vm1") == 0


def test_a_new_group_member_never_starts_beside_another() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3"])
        w.add_vm("db", "h2")  # h2 and h3 carry one instance each, h1 none
        w.add_vm("web1", "h3")
        w.store.update_instance(replace(w.store.get_instance("web1"),
                                        anti_affinity_group="web"))
        w.store.create_instance(replace(building("web2", None), anti_affinity_group="web"))
        w.store.create_instance(replace(building("web3", "h3"), anti_affinity_group="web"))
        w.start()  # both launched at start-up (still building)
        await asyncio.sleep(5)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.placement("web2") == ("h1", "running")  # the least loaded host without web
    assert w.placement("web3") == ("h3", "error")
    assert "web3" not in w.cloud.running
    (event,) = [e for e in w.store.list_events(EventQuery(limit=100))
                if e.type == "instance.unplaceable"]
    assert event.subject == "web3"
    assert "anti-affinity group web: web1 (web1) is already on h3" in event.payload["reason"]


def test_no_host_without_a_member_is_unplaceable() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1"])
        w.add_vm("web1", "h1")
        w.store.update_instance(replace(w.store.get_instance("web1"),
                                        anti_affinity_group="web"))
        w.store.create_instance(replace(building("web2", None), anti_affinity_group="web"))
        w.start()
        await asyncio.sleep(5)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.placement("web2") == (None, "error")
    assert [t for t, s in w.events("instance.") if s == "web2"] == ["instance.unplaceable"]
