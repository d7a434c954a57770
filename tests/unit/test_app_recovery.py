"""The Engine runs guest and application recoveries as durable jobs: agents'
probe verdicts (domain reports) in, escalation steps through the cloud out,
budgets and backoff from the store across controller restarts."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from engine_harness import World

from vmha.adapters.cloud.fake import FakeCloud
from vmha.adapters.cloud.libvirt import domain_uuid, exec_result
from vmha.controller.authority import GuardedCloud
from vmha.domain.commands import DomainEvents, DomainReport
from vmha.domain.errors import NotLeader
from vmha.domain.model import Instance, JobKind, JobState
from vmha.ports import EventQuery, GuestControl, ListQuery
from vmha.sim.loop import run_virtual

STEPS = ["exec:/etc/init.d/app restart", "reset"]


def report(kind: str, vm: str = "vm1", probe: str = "http http://vm1:8080/health",
           detail: str = "timed out", count: int = 3) -> DomainEvents:
    return DomainEvents("h1", (DomainReport(domain_uuid(vm), vm, kind, detail, probe=probe,
                                            count=count),))


def jobs(w: World) -> list:
    page = w.store.list_jobs(ListQuery(filters={"kind": JobKind.INSTANCE_RECOVERY.value}))
    return list(page.items)


def test_app_failed_runs_the_exec_step_and_recovery_ends_the_job() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2"])
        w.add_vm("vm1", "h1", app="auto", app_actions=STEPS, app_grace_s=20)
        w.start()
        await asyncio.sleep(5)
        assert await w.ask(report("app_failed")) == 1
        await asyncio.sleep(1)
        await w.ask(report("app_recovered", detail="", count=1))
        await asyncio.sleep(30)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.cloud.count("exec", "vm1") == 1 and w.cloud.count("reset") == 0
    (job,) = jobs(w)
    assert job.state is JobState.DONE and [s.name for s in job.steps] == [STEPS[0]]
    assert job.data.layer == "app" and job.data.steps == tuple(STEPS)
    types = [t for t, _ in w.events("instance.")]
    assert types == ["instance.app_failed", "instance.app_recovered"]
    (failed,) = [e for e in w.store.list_events(EventQuery(limit=100))
                 if e.type == "instance.app_failed"]
    assert "http http://vm1:8080/health failed 3 times in a row: timed out" in \
        failed.payload["reason"]


def test_still_failing_after_the_grace_time_resets_and_then_gives_up() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2"])
        w.add_vm("vm1", "h1", app="auto", app_actions=STEPS, app_grace_s=20)
        w.start()
        await asyncio.sleep(5)
        await w.ask(report("app_failed"))
        await asyncio.sleep(60)
        await w.close()
        return w

    w = run_virtual(main())
    assert [op for op, vm, _ in w.cloud.calls if vm == "vm1" and op in ("exec", "reset")] == \
        ["exec", "reset"]
    (job,) = jobs(w)
    assert job.state is JobState.FAILED and "nothing left to try" in job.reason
    assert w.event_times("instance.restarted", "vm1") == pytest.approx([25.0])  # 5 + grace
    assert w.placement("vm1") == ("h1", "error")


def test_budget_and_grace_survive_a_controller_restart() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2"])
        w.add_vm("vm1", "h1", app="auto", app_actions=STEPS, app_grace_s=20, max_restarts=2)
        w.start()
        await asyncio.sleep(5)
        await w.ask(report("app_failed"))
        await asyncio.sleep(10)  # in the exec step's grace time
        await w.stop_controller()
        w.start()
        await asyncio.sleep(20)  # the stored grace ends at 25: reset then
        await w.ask(report("app_recovered", detail="", count=1))
        await asyncio.sleep(5)
        await w.stop_controller()
        w.start()
        await asyncio.sleep(5)
        await w.ask(report("app_failed"))  # 2 of 2 used: spent, also after the restart
        await asyncio.sleep(30)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.event_times("instance.restarted", "vm1") == pytest.approx([25.0])
    assert w.cloud.count("exec", "vm1") == 1 and w.cloud.count("reset", "vm1") == 1
    assert [t for t, _ in w.events("instance.recovery_failed")] == ["instance.recovery_failed"]
    assert len(jobs(w)) == 1


def test_an_unresponsive_guest_is_reset_after_the_backoff() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2"])
        w.add_vm("vm1", "h1", guest="auto")
        w.start()
        await asyncio.sleep(5)
        await w.ask(report("guest_unresponsive", probe="guest-ping", detail="no answer"))
        await asyncio.sleep(30)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.cloud.count("reset", "vm1") == 1 and w.cloud.count("stop", "vm1") == 0
    assert w.event_times("instance.restarted", "vm1") == pytest.approx([15.0])
    (job,) = jobs(w)
    assert job.state is JobState.DONE and job.data.layer == "guest"


def test_notify_publishes_and_runs_nothing() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2"])
        w.add_vm("vm1", "h1", app="notify", app_actions=STEPS)
        w.start()
        await asyncio.sleep(5)
        await w.ask(report("app_failed"))
        await asyncio.sleep(60)
        await w.close()
        return w

    w = run_virtual(main())
    assert [t for t, _ in w.events("instance.")] == ["instance.app_failed"]
    assert jobs(w) == [] and not [c for c in w.cloud.calls if c[1] == "vm1"]


def test_guarded_cloud_checks_the_lease_for_guest_steps_too() -> None:
    held = {"lease": False}
    guarded = GuardedCloud(FakeCloud(), lambda: held["lease"])
    inst = Instance("vm1", "vm1", "h1")
    assert isinstance(guarded, GuestControl)

    async def main() -> None:
        for call in (guarded.exec_in_guest(inst, "h1", ["/bin/true"], 5.0),
                     guarded.reboot_instance(inst, "h1")):
            with pytest.raises(NotLeader):
                await call
        held["lease"] = True
        assert (await guarded.exec_in_guest(inst, "h1", ["/bin/true"], 5.0)).ok

    asyncio.run(main())


def test_exec_answers_in_words_without_the_guests_output() -> None:
    ok = exec_result({"exitcode": 0, "duration_s": 0.81, "stdout": "secret", "stderr": ""})
    assert ok.ok and ok.detail == "exit 0 in 0.8 s"
    bad = exec_result({"exitcode": 3, "duration_s": 1, "stderr": "password=hunter2"})
    assert not bad.ok and "hunter2" not in bad.detail and bad.detail.startswith("exit 3")
    late = exec_result({"exitcode": None, "timed_out": True, "duration_s": 30})
    assert not late.ok and late.detail.startswith("timed out")


def test_a_recovery_ends_when_the_instance_moved_to_another_host() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2"])
        w.add_vm("vm1", "h1", app="auto", app_actions=STEPS, app_grace_s=20)
        w.start()
        await asyncio.sleep(5)
        await w.ask(report("app_failed"))
        await asyncio.sleep(1)
        moved = w.store.get_instance("vm1")
        w.store.update_instance(replace(moved, host="h2"))  # as a host recovery would
        await asyncio.sleep(30)
        await w.close()
        return w

    w = run_virtual(main())
    (job,) = jobs(w)
    assert job.state is JobState.FAILED and "moved from h1 to h2" in job.reason
    assert w.cloud.count("reset") == 0


class RebuildingCloud(FakeCloud):
    """A cloud with OpenStack's extra step (the fake Nova of a unit test)."""

    async def rebuild_instance(self, instance: Instance, host: str) -> None:
        self._reach("rebuild", instance.id, host)
        self.running.setdefault(instance.id, set()).add(host)


@pytest.mark.parametrize("rebuilds", [True, False])
def test_rebuild_is_a_step_where_the_cloud_rebuilds(rebuilds: bool) -> None:
    async def main() -> World:
        w = World(cloud=RebuildingCloud() if rebuilds else FakeCloud())
        w.add_cluster(["h1", "h2"])
        w.add_vm("vm1", "h1", app="auto", app_actions=["rebuild", "reset"], app_grace_s=20)
        w.start()
        await asyncio.sleep(5)
        await w.ask(report("app_failed"))
        await asyncio.sleep(1)
        await w.ask(report("app_recovered", detail="", count=1))
        await asyncio.sleep(30)
        await w.close()
        return w

    w = run_virtual(main())
    (job,) = jobs(w)
    ops = [op for op, vm, _ in w.cloud.calls if vm == "vm1" and op in ("rebuild", "reset")]
    if rebuilds:
        assert ops == ["rebuild"] and job.state is JobState.DONE
        assert [(s.name, s.state.value) for s in job.steps] == [("rebuild", "done")]
        (restarted,) = [e for e in w.store.list_events(EventQuery(limit=100))
                        if e.type == "instance.restarted"]
        assert "rebuilt from its image on h1" in restarted.payload["reason"]
    else:  # a policy from before, or a cloud's metadata: the step fails, the next runs
        assert ops == ["reset"]
        assert job.steps[0].name == "rebuild" and job.steps[0].state.value == "failed"
        assert "cannot rebuild" in job.steps[0].detail
