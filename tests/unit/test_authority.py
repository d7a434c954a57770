"""A leader checks its lease right before each fence and each change of the
cloud (vmha.controller.authority): a leader that lost it between recording
a step and making the call does not make the call."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from engine_harness import World

from vmha.adapters.cloud.fake import FakeCloud
from vmha.adapters.fencing.fake import FakeFencer
from vmha.adapters.store.fake import FakeStore
from vmha.controller.authority import GuardedCloud, GuardedFencer, guarded
from vmha.controller.inbox import Inbox
from vmha.domain.errors import NotLeader
from vmha.domain.model import Event, Host, Instance, Job, StepState
from vmha.engine import Engine
from vmha.ports import ListQuery, PowerState
from vmha.sim.loop import VirtualClock, run_virtual


def test_changes_need_authority_and_reads_do_not() -> None:
    fencer, cloud = FakeFencer(), FakeCloud()
    held = {"lease": True}
    gf = GuardedFencer(fencer, lambda: held["lease"])
    gc = GuardedCloud(cloud, lambda: held["lease"])
    host, inst = Host("h1", "s1"), Instance("vm1", "vm1", "h1")

    async def main() -> None:
        await gf.power_off(host)
        await gc.start_instance(inst, "h2")
        held["lease"] = False
        assert await gf.power_status(host) is PowerState.OFF
        await gc.instance_state(inst, "h2")
        for call in (gf.power_off(host), gf.power_on(host), gc.start_instance(inst, "h2"),
                     gc.stop_instance(inst, "h2"), gc.reset_instance(inst, "h2"),
                     gc.disable_host("h1", "x"), gc.enable_host("h1")):
            with pytest.raises(NotLeader, match="no longer certainly holds"):
                await call

    asyncio.run(main())
    assert fencer.count("off") == 1 and fencer.count("on") == 0
    assert cloud.count("start") == 1 and cloud.count("stop") == 0
    assert gf.method == fencer.method and gc.running is cloud.running  # the rest passes


class RebuildingCloud(FakeCloud):
    """A cloud with the optional extras (OpenStack has rebuild_instance)."""

    def __init__(self) -> None:
        super().__init__()
        self.extras: list[str] = []

    async def rebuild_instance(self, instance: Instance, host: str) -> None:
        self.extras.append(f"rebuild {instance.id}")

    async def reboot_instance(self, instance: Instance, host: str) -> None:
        self.extras.append(f"reboot {instance.id}")


def test_the_optional_changes_need_authority_too() -> None:
    cloud = RebuildingCloud()
    held = {"lease": True}
    gc = GuardedCloud(cloud, lambda: held["lease"])
    inst = Instance("vm1", "vm1", "h1")

    async def main() -> None:
        await gc.rebuild_instance(inst, "h1")
        held["lease"] = False
        for call in (gc.rebuild_instance(inst, "h1"), gc.reboot_instance(inst, "h1")):
            with pytest.raises(NotLeader, match="no longer certainly holds"):
                await call

    asyncio.run(main())
    assert cloud.extras == ["rebuild vm1"]


class LeaseLostWhenFenceRecorded(FakeStore):
    """The leader is 'paused' right after it recorded the fence step as
    started: from then on its lease is gone (authority() says no)."""

    lost = False

    def save_job(self, job: Job, expected_generation: int,
                 events: Sequence[Event] = ()) -> Job:
        saved = super().save_job(job, expected_generation, events)
        if any(s.name.startswith("fence") and s.state is StepState.RUNNING for s in job.steps):
            self.lost = True
        return saved


def test_a_leader_that_lost_its_lease_after_recording_the_fence_does_not_fence() -> None:
    async def main() -> World:
        w = World(store=LeaseLostWhenFenceRecorded())
        w.add_cluster(["h1", "h2", "h3"])
        w.add_vm("vm1", "h1")
        store = w.store
        assert isinstance(store, LeaseLostWhenFenceRecorded)
        fencers, cloud = guarded({"ipmi": w.fencer}, w.cloud, lambda: not store.lost)
        clock = VirtualClock()
        w.controller = Engine(w.settings, store, clock, w.ids, fencers, cloud, w.prober,
                              inbox=Inbox())
        w.task = asyncio.ensure_future(w.controller.run())
        for name in ("h1", "h2", "h3"):
            w.agents.append(asyncio.ensure_future(w._agent(name, clock)))
        await asyncio.sleep(30)
        w.power_off("h1")
        await asyncio.sleep(30)
        await w.close()
        return w

    w = run_virtual(main())
    assert isinstance(w.store, LeaseLostWhenFenceRecorded) and w.store.lost
    assert w.fencer.count("off") == 0  # recorded as started, never made
    assert w.cloud.count("start") == 0
    job = next(j for j in w.store.list_jobs(ListQuery(limit=100)).items if j.subject == "h1")
    off = next(s for s in job.steps if s.name == "fence:0:ipmi:off")
    assert off.state is StepState.FAILED and "no longer certainly holds" in off.detail
