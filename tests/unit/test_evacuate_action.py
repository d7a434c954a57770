"""An operator's `evacuate` moves the instance on the same path as automatic
recovery (vmha.engine.moves), with its safety handling: a target that may
receive instances now, the move counted only once the cloud says it runs
there, a failed attempt undone and planned again elsewhere, the target
recorded before the start so a resumed job never starts it on a second host.
Before, the action started the instance on the planner's pick and recorded
it running there at once."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from engine_harness import World

from vmha.domain import decisions
from vmha.domain.commands import InstanceAction
from vmha.domain.model import HostState, Job, JobState
from vmha.sim.loop import run_virtual


def fenced_world(hosts: list[str]) -> World:
    """h1 is dead and fenced (as its recovery job leaves it), vm1 still on it."""
    w = World()
    w.add_cluster(hosts)
    w.add_vm("vm1", "h1")
    w.power_off("h1")
    h1 = w.store.get_host("h1")
    w.store.update_host(replace(h1, state=HostState.FENCED))
    return w


async def evacuate(w: World, target: str | None = None) -> Job:
    """Ask for it through the inbox and wait until its job ends."""
    job: Job = await w.ask(InstanceAction("vm1", "evacuate", target, "ann"))
    for _ in range(600):
        await asyncio.sleep(0.5)
        job = w.store.get_job(job.id)
        if job.finished:
            return job
    raise AssertionError("the evacuate job did not finish")


def test_a_target_that_accepts_the_start_but_fails_it_is_undone_and_planned_again() -> None:
    async def main() -> tuple[World, Job]:
        w = fenced_world(["h1", "h2", "h3"])
        w.add_vm("x3", "h3", ram_mb=8192)  # h2 is the emptiest: the planner's first pick
        w.cloud.failing_targets.add("h2")  # Nova's NoValidHost: accepted, then ERROR
        w.start()
        await asyncio.sleep(20)
        job = await evacuate(w)
        await w.close()
        return w, job

    w, job = run_virtual(main())
    assert job.state is JobState.DONE, job.reason
    assert ("failed", "vm1", "h2") in w.cloud.calls  # it was tried there first
    assert w.placement("vm1") == ("h3", "running")  # not recorded on h2, where nothing runs
    assert w.cloud.running["vm1"] == {"h3"}
    assert decisions.action_data(job).moving_to == "h3"


def test_a_host_the_cloud_has_not_enabled_again_is_no_target() -> None:
    """A host up again after its recovery whose compute service the cloud
    has not enabled yet (the engine's `not_enabled`): automatic moves skip
    it, and now the action does too, by the planner or by name."""

    async def main() -> tuple[World, Job, Job]:
        w = fenced_world(["h1", "h2", "h3"])
        w.add_vm("x3", "h3", ram_mb=8192)  # h2 would be the planner's pick
        engine = w.start()
        await asyncio.sleep(20)
        engine.monitor.not_enabled.add("h2")
        named = await evacuate(w, "h2")
        planned = await evacuate(w)
        await w.close()
        return w, named, planned

    w, named, planned = run_virtual(main())
    assert named.state is JobState.FAILED
    assert "target host h2 is not sending heartbeats (or its compute service is not " \
           "enabled again yet)" in named.reason
    assert planned.state is JobState.DONE, planned.reason
    assert w.placement("vm1") == ("h3", "running")
    assert ("start", "vm1", "h2") not in w.cloud.calls


def test_a_resumed_evacuation_looks_at_its_recorded_target_first() -> None:
    """A controller restarted after the start on h3 was sent: the new one
    finds vm1 running there and does not start it on another host."""

    async def main() -> tuple[World, Any]:
        w = fenced_world(["h1", "h2", "h3"])
        w.cloud.start_delay_s = 5.0
        w.start()
        await asyncio.sleep(20)
        job: Job = await w.ask(InstanceAction("vm1", "evacuate", "h3", "ann"))
        for _ in range(100):
            await asyncio.sleep(0.1)
            if ("start", "vm1", "h3") in w.cloud.calls:
                break
        await w.stop_controller()  # mid-start
        w.cloud.running["vm1"] = {"h3"}  # the cloud completed the start it had accepted
        await asyncio.sleep(10)
        w.start()
        for _ in range(600):
            await asyncio.sleep(0.5)
            if w.store.get_job(job.id).finished:
                break
        await w.close()
        return w, w.store.get_job(job.id)

    w, job = run_virtual(main())
    assert job.state is JobState.DONE, job.reason
    assert w.cloud.count("start", "vm1") == 1  # looked there first: not started again
    assert ("state", "vm1", "h3") in w.cloud.calls
    assert w.cloud.running["vm1"] == {"h3"}
    assert w.placement("vm1") == ("h3", "running")
