"""The real Engine on a virtual clock with FakeStore and scriptable fakes."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from engine_harness import World

from vmha.domain.commands import FenceAck, InstanceEvent, ResumeSegment, SetMaintenance
from vmha.domain.model import Host, HostState
from vmha.engine import ControllerSettings
from vmha.ports import EventQuery, ListQuery, PowerState
from vmha.sim.loop import run_virtual


def test_dead_host_is_fenced_and_its_instances_move() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3", "h4"])
        w.add_vm("vm1", "h1", priority=900)
        w.add_vm("vm2", "h1", priority=100)
        w.add_vm("vm3", "h2")
        w.start()
        await asyncio.sleep(30)
        w.power_off("h1")
        await asyncio.sleep(60)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.host_state("h1") == HostState.RECOVERED.value
    suspect = w.event_times("host.suspect", "h1")[0]
    assert 31.5 <= suspect <= 33.5  # ~2.5 s after the last heartbeat at t=30
    types = [t for t, s in w.events("host.") if s == "h1"]
    assert types == ["host.suspect", "host.failed", "host.fencing", "host.fenced",
                     "host.recovering", "host.recovered"]
    assert w.fencer.power["h1"] is PowerState.OFF
    for vid in ("vm1", "vm2"):
        host, state = w.placement(vid)
        assert host in {"h2", "h3", "h4"} and state == "running"
        assert w.cloud.running[vid] == {host}
    # the higher priority instance was evacuated first
    evac = [s for t, s in w.events("instance.evacuating")]
    assert evac[:2] == ["vm1", "vm2"]


def test_bmc_stuck_on_means_fence_failed_and_nothing_started() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3"], levels=(("ipmi",),))
        w.add_vm("vm1", "h1")
        w.fencer.stuck_on.add("h1")
        w.start()
        await asyncio.sleep(20)
        w.silent.add("h1")
        w.prober.cut("h1")  # unreachable, but powered on and still running vm1
        await asyncio.sleep(100)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.host_state("h1") == HostState.FAILED.value
    assert ("host.fence_failed", "h1") in w.events("host.")
    assert w.cloud.count("start") == 0
    assert w.cloud.running["vm1"] == {"h1"}
    assert w.placement("vm1") == ("h1", "running")
    # retried on schedule (every 60 s): more than one power-off attempt
    assert w.fencer.count("off", "h1") >= 2


def test_controller_restart_mid_job_resumes_without_repeating() -> None:
    async def main() -> World:
        w = World(settings=ControllerSettings(max_parallel_evacuations=2))
        w.cloud.start_delay_s = 2.0
        w.add_cluster(["h1", "h2", "h3"])
        for i in range(6):
            w.add_vm(f"vm{i}", "h1", priority=100 * i)
        w.start()
        await asyncio.sleep(20)
        w.power_off("h1")
        # stop as soon as some, but not all, instances were started elsewhere
        for _ in range(2000):
            await asyncio.sleep(0.01)
            if w.cloud.count("started") >= 1:
                break
        await w.stop_controller()
        assert w.cloud.count("started") < 6
        w.start()
        await asyncio.sleep(60)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.host_state("h1") == HostState.RECOVERED.value
    assert w.fencer.count("off", "h1") == 1
    for i in range(6):
        assert w.cloud.count("started", f"vm{i}") == 1
        host, state = w.placement(f"vm{i}")
        assert state == "running" and w.cloud.running[f"vm{i}"] == {host}
    job = w.store.list_jobs(ListQuery()).items[0]
    done = [s.name for s in job.steps if s.state == "done"]
    assert len(done) == len(set(done)), "a finished step ran twice"


def test_partitioned_host_is_never_fenced() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3"])
        w.add_vm("vm1", "h1")
        w.start()
        await asyncio.sleep(20)
        w.silent.add("h1")  # controller link only: peers still reach it
        await asyncio.sleep(60)
        w.silent.discard("h1")
        await asyncio.sleep(5)
        await w.close()
        return w

    w = run_virtual(main())
    types = [t for t, s in w.events("host.") if s == "h1"]
    assert types == ["host.suspect", "host.partitioned", "host.up"]
    assert w.fencer.count("off") == 0 and w.cloud.count("start") == 0


def test_mass_failure_pauses_fencing_until_hosts_return() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3", "h4", "h5"])
        w.start()
        await asyncio.sleep(30)
        for h in ("h1", "h2", "h3"):
            w.silent.add(h)
            w.prober.cut(h)
        await asyncio.sleep(30)
        assert w.fencer.count("off") == 0
        for h in ("h1", "h2", "h3"):
            w.silent.discard(h)
            w.prober.heal(h)
        await asyncio.sleep(60)
        await w.close()
        return w

    w = run_virtual(main())
    assert ("segment.recovery_paused", "s1") in w.events("segment.")
    assert ("segment.recovery_resumed", "s1") in w.events("segment.")
    assert w.fencer.count("off") == 0
    assert all(w.host_state(h) == "up" for h in ("h1", "h2", "h3"))


def test_operator_resume_lets_recovery_run() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3"])
        w.add_vm("vm1", "h1")
        w.start()
        await asyncio.sleep(30)
        w.power_off("h1")
        w.power_off("h2")
        await asyncio.sleep(15)  # paused; their self-fence deadline (20 s) not yet passed
        assert w.fencer.count("off") == 0
        assert w.controller is not None
        await w.ask(ResumeSegment("s1", "alice"))
        await asyncio.sleep(60)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.fencer.count("off", "h1") == 1
    assert w.placement("vm1") == ("h3", "running")


def test_self_fence_path_when_the_bmc_is_unreachable() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3"])
        w.add_vm("vm1", "h1")
        w.fencer.unreachable.add("h1")
        w.start()
        await asyncio.sleep(30)
        w.power_off("h1")
        await asyncio.sleep(60)
        await w.close()
        return w

    w = run_virtual(main())
    fenced = w.event_times("host.fenced", "h1")
    assert fenced and fenced[0] >= 29.9 + 20  # not before the self-fence deadline
    assert w.placement("vm1")[1] == "running"


def test_guest_crash_restarts_then_budget_runs_out() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2"])
        w.add_vm("vm1", "h1", guest="auto", max_restarts=2, window_s=600)
        w.start()
        await asyncio.sleep(5)
        for _ in range(3):
            await w.ask(InstanceEvent("vm1", "crashed", "pvpanic"))
            await asyncio.sleep(60)
        await w.close()
        return w

    w = run_virtual(main())
    assert [t for t, _ in w.events("instance.")] == [
        "instance.crashed", "instance.restarted", "instance.crashed", "instance.restarted",
        "instance.crashed", "instance.recovery_failed"]
    first = w.event_times("instance.restarted", "vm1")
    assert first == pytest.approx([15.0, 65.0 + 20])  # 10 s, then 20 s backoff
    assert w.placement("vm1") == ("h1", "error")


def test_returning_host_becomes_up_after_a_healthy_period() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2"])
        w.add_vm("vm1", "h1")
        w.start()
        await asyncio.sleep(30)
        w.power_off("h1")
        await asyncio.sleep(30)
        assert w.host_state("h1") == "recovered"
        w.silent.discard("h1")
        w.prober.heal("h1")
        await asyncio.sleep(60)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.host_state("h1") == "up"
    up = w.event_times("host.up", "h1")[0]
    assert 60 + 30 <= up <= 60 + 40
    assert w.placement("vm1")[0] == "h2"  # its old VM stays where it went
    assert ("enable", "", "h1") in w.cloud.calls


def test_a_refused_re_enable_is_retried_without_holding_up_detection() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2"])
        w.add_vm("vm1", "h1")
        w.cloud.enable_refusals["h1"] = 2  # e.g. Nova: evacuations not completed yet
        w.start()
        await asyncio.sleep(30)
        w.power_off("h1")
        await asyncio.sleep(30)
        w.silent.discard("h1")
        w.prober.heal("h1")
        await asyncio.sleep(60)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.host_state("h1") == "up"
    assert w.cloud.calls.count(("enable", "", "h1")) == 3  # two refusals, then done
    assert "h1" not in w.cloud.disabled


def h1_fails(w: World, for_s: float = 20.0) -> World:
    """Run `w`: h1 loses power at t=30, then `for_s` virtual seconds pass."""
    async def main() -> World:
        w.start()
        await asyncio.sleep(30)
        w.power_off("h1")
        await asyncio.sleep(for_s)
        await w.close()
        return w

    return run_virtual(main())


def test_a_move_the_cloud_reports_failed_is_replanned_at_once() -> None:
    w = World()
    w.add_cluster(["h1", "h2", "h3"], threshold=1.0)
    w.add_vm("vm1", "h1", vcpus=6)
    w.add_vm("vm2", "h3", vcpus=8)  # h2 has the most room: the planner picks it
    w.cloud.failing_targets.add("h2")  # e.g. Nova's NoValidHost for h2
    h1_fails(w)
    assert ("failed", "vm1", "h2") in w.cloud.calls
    assert w.placement("vm1")[0] == "h3"  # well before verify_timeout_s (30 s) ran out


def test_when_every_re_plan_fails_the_recovery_failed_on_the_failed_host() -> None:
    """Every target accepts the move and fails it: after the last re-plan
    finds no host, `instance.recovery_failed` (not `unplaceable`, which is
    for "no host fits" at the first plan), and vm1 is recorded in error on
    h1, where the cloud still has it."""
    w = World()
    w.add_cluster(["h1", "h2", "h3"], threshold=1.0)
    w.add_vm("vm1", "h1", vcpus=6)
    w.cloud.failing_targets.update({"h2", "h3"})
    h1_fails(w)
    assert {h for op, i, h in w.cloud.calls if op == "failed"} == {"h2", "h3"}
    assert w.placement("vm1") == ("h1", "error")
    assert [e for e in w.events("instance.") if e[0] != "instance.evacuating"] == [
        ("instance.recovery_failed", "vm1")]
    failed = w.store.list_events(EventQuery(types=("instance.recovery_failed",)))[0]
    assert failed.severity.value == "error" and failed.payload["job"] == "job-000001"
    assert failed.payload["reason"].startswith("2 moves failed (the last: the cloud reports")


def test_maintenance_host_is_ignored_and_not_a_target() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3"])
        w.add_vm("vm1", "h1")
        w.start()
        await asyncio.sleep(20)
        await w.ask(SetMaintenance("h2", True, "kernel upgrade"))
        w.silent.add("h2")  # rebooting in maintenance: not a failure
        await asyncio.sleep(10)
        w.power_off("h1")
        await asyncio.sleep(40)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.host_state("h2") == "maintenance"
    assert w.placement("vm1") == ("h3", "running")
    assert not [e for e in w.events("host.suspect") if e[1] == "h2"]


def test_operator_ack_fences_a_host_stuck_on() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3"], levels=(("ipmi",), ("manual",)))
        w.add_vm("vm1", "h1")
        w.fencer.stuck_on.add("h1")
        w.start()
        await asyncio.sleep(20)
        w.power_off("h1")  # dead, but the BMC cannot prove it
        await asyncio.sleep(30)
        assert w.cloud.count("start") == 0
        assert w.host_state("h1") == "failed"
        await w.ask(FenceAck("h1", "alice"))
        await asyncio.sleep(10)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.placement("vm1")[1] == "running" and w.placement("vm1")[0] != "h1"
    fenced = [e for e in w.events("host.fenced")]
    assert fenced == [("host.fenced", "h1")]


def test_failed_start_is_retried_on_another_host() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3"])
        w.add_vm("vm1", "h1")
        w.add_vm("busy", "h3", ram_mb=8192)  # h2 has the most free RAM: first choice
        w.cloud.refuse_start.add("h2")
        w.start()
        await asyncio.sleep(20)
        w.power_off("h1")
        await asyncio.sleep(40)
        await w.close()
        return w

    w = run_virtual(main())
    starts = [(op, host) for op, iid, host in w.cloud.calls if iid == "vm1"]
    assert ("start", "h2") in starts and ("stop", "h2") in starts
    assert w.placement("vm1") == ("h3", "running")
    assert w.cloud.running["vm1"] == {"h3"}


def test_pause_survives_a_controller_restart() -> None:
    """Three hosts cut off but alive (BMCs read on, no self-fence level):
    nothing proves them dead, so nothing happens until an operator resumes."""

    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3", "h4", "h5"], levels=(("ipmi",),))
        for h in ("h1", "h2", "h3"):
            w.add_vm(f"vm-{h}", h)
        w.start()
        await asyncio.sleep(30)
        for h in ("h1", "h2", "h3"):
            w.silent.add(h)
            w.prober.cut(h)
        await asyncio.sleep(60)
        await w.stop_controller()
        w.start()
        await asyncio.sleep(60)
        assert w.fencer.count("off") == 0, "fenced while the segment was paused"
        await w.ask(ResumeSegment("s1", "alice"))
        await asyncio.sleep(100)
        await w.close()
        return w

    w = run_virtual(main())
    offs = [t for t in w.event_times("host.fencing", "h1") + w.event_times("host.fencing", "h2")
            + w.event_times("host.fencing", "h3")]
    assert len(offs) == 3
    gaps = [b - a for a, b in zip(sorted(offs), sorted(offs)[1:], strict=False)]
    assert all(g >= 29.9 for g in gaps)  # one fence per 30 s in the segment
    assert all(w.placement(f"vm-{h}")[0] in {"h4", "h5"} for h in ("h1", "h2", "h3"))


def test_restart_does_not_declare_a_silent_host_up() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3"])
        w.start()
        await asyncio.sleep(30)
        w.silent.add("h1")  # partitioned from the controller
        await asyncio.sleep(20)
        await w.stop_controller()
        w.start()
        await asyncio.sleep(30)
        assert w.host_state("h1") == "partitioned"
        w.silent.discard("h1")
        await asyncio.sleep(5)
        await w.close()
        return w

    w = run_virtual(main())
    types = [t for t, s in w.events("host.") if s == "h1"]
    assert types == ["host.suspect", "host.partitioned", "host.up"]


def test_pending_restart_survives_a_controller_restart() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2"])
        w.add_vm("vm1", "h1", guest="auto")
        w.start()
        await asyncio.sleep(5)
        w.cloud.running["vm1"].discard("h1")
        await w.ask(InstanceEvent("vm1", "crashed", "pvpanic"))
        await asyncio.sleep(3)  # restart due at 15 s; the controller dies first
        await w.stop_controller()
        w.start()
        await asyncio.sleep(30)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.placement("vm1") == ("h1", "running")
    assert w.cloud.running["vm1"] == {"h1"}
    assert [t for t, _ in w.events("instance.")] == ["instance.crashed", "instance.restarted"]


def test_target_failing_mid_evacuation_hands_the_instance_to_its_own_recovery() -> None:
    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3", "h4"])
        w.add_vm("vm1", "h1")
        w.add_vm("a3", "h3", ram_mb=4096)
        w.add_vm("a4", "h4", ram_mb=4096)  # h2 is the emptiest: vm1's first target
        w.cloud.start_delay_s = 5.0
        w.start()
        await asyncio.sleep(40)
        w.power_off("h1")
        for _ in range(1000):
            await asyncio.sleep(0.1)
            if ("start", "vm1", "h2") in w.cloud.calls:
                break
        w.power_off("h2")  # dies while vm1 is starting there
        w.cloud.down_hosts.add("h2")
        await asyncio.sleep(120)
        await w.close()
        return w

    w = run_virtual(main())
    host, state = w.placement("vm1")
    assert host in {"h3", "h4"} and state == "running"
    assert w.cloud.running["vm1"] == {host}
    assert w.host_state("h2") == "recovered"
    assert w.fencer.power["h2"] is PowerState.OFF  # fenced before vm1 moved on


def test_a_host_without_a_registered_agent_is_not_watched() -> None:
    """No agent, no heartbeats to miss: such a host never turns suspect."""

    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3"])
        w.start()
        w.store.create_host(Host("h4", "s1"))  # no agent record, no heartbeats
        await asyncio.sleep(120)
        await w.close()
        return w

    w = run_virtual(main())
    assert w.host_state("h4") == "up"
    assert [t for t, s in w.events("host.") if s == "h4"] == []


def test_a_job_whose_host_vanished_ends_instead_of_failing_every_round(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A paused recovery job of a host that no longer exists (an older vmha
    let it be deleted): once the segment resumes, the job ends as failed,
    nothing is fenced or moved, and no round raises."""
    from vmha.domain import recovery
    from vmha.domain.jobs import PauseCause
    from vmha.domain.model import Job, JobState

    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3"])
        w.add_vm("vm1", "h3")
        gone = w.store.get_host("h3")
        job = recovery.new_host_job("job-old", gone, [w.store.get_instance("vm1")],
                                    {"vm1": True}, 0.0, 0.0, "no heartbeats")
        w.store.delete_host("h3")
        w.store.create_job(replace(job, state=JobState.PAUSED,
                                   data=replace(recovery.host_data(job),
                                                paused_for=PauseCause.BLOCKED,
                                                resume_to=JobState.PENDING)))
        w.start()
        await asyncio.sleep(30)
        await w.close()
        return w

    w = run_virtual(main())
    job: Job = w.store.get_job("job-old")
    assert job.state is JobState.FAILED
    assert job.reason == "host h3 no longer exists and was never fenced; nothing was moved"
    assert w.fencer.power.get("h3") is not PowerState.OFF
    assert w.placement("vm1") == ("h3", "running")
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def _paused_with_three_dead(bmc: str) -> World:
    """Five hosts, three die at once (60 %: the segment pauses) and stay
    dead; `bmc` says what their BMCs do: "off" (read power off) or
    "unreachable" (only the agent_watchdog level can prove them dead)."""

    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2", "h3", "h4", "h5"])
        for h in ("h1", "h2", "h3"):
            w.add_vm(f"vm-{h}", h)
        w.start()
        await asyncio.sleep(30)
        for h in ("h1", "h2", "h3"):
            w.power_off(h)
            if bmc == "off":
                w.fencer.power[h] = PowerState.OFF
            else:
                w.fencer.unreachable.add(h)
        await asyncio.sleep(60)
        await w.close()
        return w

    return run_virtual(main())


def test_a_paused_segment_recovers_hosts_proven_dead_without_fencing() -> None:
    """Issue 11 item 13: the guard stops fencing actions, not the recovery
    of hosts already proven dead (here: their BMCs read power off)."""
    w = _paused_with_three_dead("off")
    assert ("segment.recovery_paused", "s1") in w.events("segment.")
    assert w.fencer.count("off") == 0, "a power-off was sent while paused"
    for h in ("h1", "h2", "h3"):
        assert "host.fenced" in [t for t, s in w.events("host.") if s == h]
        assert w.placement(f"vm-{h}") in (("h4", "running"), ("h5", "running"))
    proofs = {str(e.payload["reason"]) for e in w.store.list_events(EventQuery(limit=10000))
              if e.type == "host.fenced"}
    assert proofs and all(p.startswith("ipmi reads power off (no power-off sent")
                          for p in proofs), proofs


def test_three_of_five_silent_with_unreachable_bmcs_are_not_taken_as_self_fenced() -> None:
    """Three of five hosts silent, their BMCs unreachable: each has four
    peers and keeps contact (its agent's rule) with two of them, so the two
    that answer "cannot reach it" never rule out a majority: the three may
    be one side of a partition, reaching each other and running their VMs.
    No self-fence deadline counts and nothing moves (an operator's ack or a
    BMC that reads off can still prove them dead)."""
    w = _paused_with_three_dead("unreachable")
    assert ("segment.recovery_paused", "s1") in w.events("segment.")
    assert w.fencer.count("off") == 0, "a power-off was sent while paused"
    for h in ("h1", "h2", "h3"):
        assert "host.fenced" not in [t for t, s in w.events("host.") if s == h]
        assert w.placement(f"vm-{h}")[0] == h
    job = next(j for j in w.store.list_jobs(ListQuery(limit=100)).items if j.subject == "h1")
    proofs = [s.detail for s in job.steps if s.name.startswith("proof:agent_watchdog")]
    assert proofs and all("2 of 4 peers answered that they cannot reach it; 3 needed" in p
                          for p in proofs), proofs


def test_an_isolated_controller_moves_nothing_even_for_a_proven_dead_host() -> None:
    """Every host looks down: the controller is probably the one cut off,
    so its idea of where instances could go is worthless: it waits, even
    for a host whose BMC reads off, and recovers once it hears hosts again."""

    async def main() -> World:
        w = World()
        w.add_cluster(["h1", "h2"])
        w.add_vm("vm1", "h1")
        w.start()
        await asyncio.sleep(30)
        w.power_off("h1")
        w.fencer.power["h1"] = PowerState.OFF
        w.silent.add("h2")  # h2 alive, but the controller hears nothing any more
        await asyncio.sleep(60)
        assert w.fencer.count("off") == 0
        assert w.placement("vm1")[0] == "h1"
        assert "host.fenced" not in [t for t, s in w.events("host.") if s == "h1"]
        w.silent.discard("h2")
        await asyncio.sleep(60)
        await w.close()
        return w

    w = run_virtual(main())
    assert ("controller.isolated", "controller") in w.events("controller.")
    assert w.events("instance.unplaceable") == []
    assert w.placement("vm1") == ("h2", "running")
