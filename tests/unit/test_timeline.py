"""A host recovery's timeline (vmha.domain.timeline): phases from the job's
recorded steps only. A table of named jobs, then the real Engine on a
virtual clock, whose verify step says when the cloud waited for the
application (vmha.ports.AppChecked)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from engine_harness import World

from vmha.adapters.cloud.fake import FakeCloud
from vmha.domain.jobs import HostRecoveryData
from vmha.domain.model import Instance, Job, JobKind, JobState, JobStep, StepState
from vmha.domain.timeline import APP_ANSWERS, timeline
from vmha.ports import ListQuery
from vmha.sim.loop import run_virtual

T0 = 1000.0
DONE = StepState.DONE
FENCE = (JobStep("fence:0:ipmi:off", DONE, T0 + 4, T0 + 5),
         JobStep("fence:0:ipmi:confirm", DONE, T0 + 5, T0 + 6))
DISABLE = (JobStep("disable_compute", DONE, T0 + 6, T0 + 6.5),
           JobStep("plan", DONE, T0 + 6.5, T0 + 6.5))
EVACUATE = (JobStep("evacuate:a1@h2#1", DONE, T0 + 7, T0 + 8),
            JobStep("evacuate:a2@h3#1", DONE, T0 + 7, T0 + 9))
RUNNING_A1 = JobStep("verify:a1@h2#1", DONE, T0 + 8, T0 + 12, "running on h2")
ANSWERS_A2 = JobStep("verify:a2@h3#1", DONE, T0 + 9, T0 + 15, f"running on h3; {APP_ANSWERS}")


def job(steps: tuple[JobStep, ...], state: JobState = JobState.DONE) -> Job:
    return Job(id="j1", kind=JobKind.HOST_RECOVERY, subject="h1", state=state, steps=steps,
               created_at=T0 + 3, updated_at=T0 + 20, data=HostRecoveryData("h1", last_seen=T0))


CASES: dict[str, tuple[Job, dict[str, tuple[float, float | None]], float | None]] = {
    # name: (job, phase -> (start offset, duration), total)
    "openstack: Nova's ACTIVE verified, no app check": (
        job((*FENCE, *DISABLE, EVACUATE[0], RUNNING_A1)),
        {"detect": (0, 3), "fence": (4, 2), "force_down": (6, 0.5), "dispatch": (7, 1),
         "running": (8, 4)}, 12),
    "libvirt with health URLs: the app answering, no separate running": (
        job((*FENCE, *DISABLE, EVACUATE[1], ANSWERS_A2)),
        {"detect": (0, 3), "fence": (4, 2), "force_down": (6, 0.5), "dispatch": (7, 2),
         "app_answering": (9, 6)}, 15),
    "both kinds of instance: both phases": (
        job((*FENCE, *DISABLE, *EVACUATE, RUNNING_A1, ANSWERS_A2)),
        {"detect": (0, 3), "fence": (4, 2), "force_down": (6, 0.5), "dispatch": (7, 2),
         "running": (8, 4), "app_answering": (9, 6)}, 15),
    "no disable step recorded: no force-down drawn": (
        job((*FENCE, EVACUATE[0], RUNNING_A1)),
        {"detect": (0, 3), "fence": (4, 2), "dispatch": (7, 1), "running": (8, 4)}, 12),
    "a verify under way: drawn under running, open-ended, no total": (
        job((*FENCE, *DISABLE, EVACUATE[1], JobStep("verify:a2@h3#1", StepState.RUNNING,
                                                    T0 + 9)), JobState.VERIFYING),
        {"detect": (0, 3), "fence": (4, 2), "force_down": (6, 0.5), "dispatch": (7, 2),
         "running": (9, None)}, None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_phases_come_from_the_recorded_steps(name: str) -> None:
    the_job, want, total = CASES[name]
    tl = timeline(the_job)
    got = {p.name: (p.start - tl.origin, p.duration_s) for p in tl.phases}
    assert got == want
    assert tl.total_s == total


def test_verify_is_every_verify_step_together_for_the_metrics() -> None:
    tl = timeline(job((*FENCE, *DISABLE, *EVACUATE, RUNNING_A1, ANSWERS_A2)))
    assert tl.duration("verify") == 7  # T0+8 .. T0+15
    assert tl.duration("running") == 4 and tl.duration("app_answering") == 6
    assert timeline(job(FENCE)).duration("verify") is None


class AppCloud(FakeCloud):
    """A fake cloud whose "running" waits for the application of the
    instances with a health check (as LibvirtCloud with a health_url)."""

    def __init__(self, checked: set[str]) -> None:
        super().__init__()
        self.checked = checked

    def checks_app(self, instance: Instance) -> bool:
        return instance.id in self.checked


def host_job(w: World, host: str) -> Job | None:
    found = [j for j in w.store.list_jobs(ListQuery(limit=100)).items if j.subject == host]
    return found[0] if found and found[0].state is JobState.DONE else None


def test_the_engines_verify_step_says_when_the_app_was_waited_for() -> None:
    w = World(cloud=AppCloud({"vm1"}))  # vm1 has a health check, vm2 not
    w.add_cluster(["h1", "h2", "h3"])
    for name, priority in (("vm1", 900), ("vm2", 100)):
        w.add_vm(name, "h1", priority=priority)

    async def main() -> Job:
        w.start()
        await asyncio.sleep(30)  # heartbeat history first
        w.power_off("h1")
        for _ in range(300):
            done = host_job(w, "h1")
            if done is not None:
                break
            await asyncio.sleep(1)
        await w.close()
        assert done is not None, "h1's recovery did not finish in 300 virtual seconds"
        return done

    the_job = run_virtual(main())
    details: dict[str, Any] = {s.name.split("@")[0]: s.detail for s in the_job.steps
                               if s.name.startswith("verify:")}
    assert details["verify:vm1"].endswith(f"; {APP_ANSWERS}")
    assert APP_ANSWERS not in details["verify:vm2"]
    names = [p.name for p in timeline(the_job).phases]
    assert names == ["detect", "fence", "force_down", "dispatch", "running", "app_answering"]
