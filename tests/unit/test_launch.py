"""The engine's first start of defined instances, and hypervisor events."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from engine_harness import World

from vmha.domain.model import Capacity, Instance, InstanceState
from vmha.domain.policy import HAPolicy
from vmha.domain.spec import InstanceSpec
from vmha.sim.loop import run_virtual

SPEC = InstanceSpec(image="lab", address="198.18.1.11/24")


def building(vid: str, host: str | None) -> Instance:
    return Instance(vid, vid, host, resources=Capacity(1, 128), state=InstanceState.BUILDING,
                    spec=SPEC, policy=HAPolicy())


def test_a_new_instance_goes_to_the_least_loaded_host_and_runs() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2"])
        w.add_vm("busy", "h1")
        w.store.create_instance(building("new", None))
        ctl = w.start()
        ctl.launch("new")
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
            await ctl.domain_event("h2", "vm1", "crashed"),  # not its host: stale
            await ctl.domain_event("h1", "vm1", "stopped", "destroyed", requested=True),
            await ctl.domain_event("h1", "vm1", "paused"),  # informative only
            await ctl.domain_event("h1", "nope", "crashed"),
            await ctl.domain_event("h1", "vm1", "crashed", "panicked"),
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
        assert await ctl.domain_event("h1", "vm1", "watchdog", "poweroff")
        assert not await ctl.domain_event("h1", "vm1", "stopped", "shutdown")
        await asyncio.sleep(30)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.events("instance.") == [("instance.watchdog", "vm1")]
    assert w.placement("vm1") == ("h1", "stopped")
    assert w.cloud.count("start", "vm1") == 0
