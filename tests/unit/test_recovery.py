"""The recovery job state machine, driven by hand (no engine, no ports)."""

from __future__ import annotations

from dataclasses import replace

from vmha.domain import recovery as r
from vmha.domain.model import Host, HostState, Instance, JobState
from vmha.domain.planner import Placement, Plan, Unplaced

CTX = r.JobContext(max_parallel=2)


def new_job(n: int = 3, levels: tuple[tuple[str, ...], ...] = (("ipmi",), ("manual",))
            ) -> r.Job:
    host = Host("h1", "s1", state=HostState.FAILED, fence_levels=levels)
    vms = [Instance(f"vm{i}", f"vm{i}", "h1") for i in range(n)]
    return r.new_host_job("j1", host, vms, {}, last_seen=10.0, now=12.0, reason="dead")


def step(job: r.Job, ctx: r.JobContext = CTX, now: float = 20.0) -> r.Decision:
    return r.decide(job, ctx, now)


def to_evacuating(job: r.Job) -> r.Job:
    job = step(job).job  # -> fencing
    off = step(job).intents[0]
    job = r.apply(job, r.Result(off, True), 20).job
    confirm = step(job).intents[0]
    job = r.apply(job, r.Result(confirm, True, "ipmi reports power off"), 20).job
    disable = step(job).intents[0]
    job = r.apply(job, r.Result(disable, True), 20).job
    plan_intent = step(job).intents[0]
    assert isinstance(plan_intent, r.PlanEvacuation)
    placements = tuple(Placement(i, "h2") for i in plan_intent.instances)
    job = r.apply(job, r.Result(plan_intent, True, plan=Plan(placements)), 20).job
    d = step(job)
    assert d.job.state is JobState.EVACUATING and d.host_state is HostState.RECOVERING
    return d.job


def test_fence_then_evacuate_in_order() -> None:
    job = new_job()
    d = step(job)
    assert d.job.state is JobState.FENCING and d.host_state is HostState.FENCING
    (off,) = step(d.job).intents
    assert isinstance(off, r.FenceHost) and off.methods == ("ipmi",)
    job = r.apply(d.job, r.Result(off, True), 20).job
    (confirm,) = step(job).intents
    assert isinstance(confirm, r.ConfirmFenced)
    d = r.apply(job, r.Result(confirm, True, "ipmi reports power off"), 20)
    assert d.job.state is JobState.FENCED and d.host_state is HostState.FENCED
    assert isinstance(step(d.job).intents[0], r.DisableCompute)


def test_no_evacuation_before_the_fence_is_confirmed() -> None:
    job = step(new_job()).job
    for t in range(20, 400, 10):  # every fence attempt fails, retried for minutes
        d = step(job, now=t)
        assert not any(isinstance(i, r.Evacuate | r.VerifyInstance) for i in d.intents)
        assert d.job.state in (JobState.FENCING, JobState.PAUSED)
        job = d.job
        for intent in d.intents:
            job = r.apply(job, r.Result(intent, False, "bmc unreachable"), t).job


def test_stale_generation_is_ignored() -> None:
    job = step(new_job()).job
    (off,) = step(job).intents
    old = replace(off, generation=off.generation - 1)
    d = r.apply(job, r.Result(old, True), 20)
    assert d.job is job


def test_every_level_failing_pauses_with_fence_failed_and_retries_later() -> None:
    job = step(new_job()).job
    (off,) = step(job).intents
    job = r.apply(job, r.Result(off, True), 20).job
    (confirm,) = step(job).intents
    job = r.apply(job, r.Result(confirm, False, "stays on"), 20).job
    (manual,) = step(job).intents
    assert manual.methods == ("manual",)
    job = r.apply(job, r.Result(manual, False, "no ack"), 20).job
    d = step(job)
    assert d.job.state is JobState.PAUSED and d.host_event == "host.fence_failed"
    assert d.host_state is HostState.FAILED
    assert step(d.job, now=30).wait_until == 80.0  # fence_retry_s = 60
    again = step(d.job, now=80)
    assert again.job.state is JobState.FENCING


def test_operator_ack_confirms_the_fence() -> None:
    job = step(new_job()).job
    job = r.acknowledge(job, "alice", 21)
    d = step(job, now=21)
    assert d.job.state is JobState.FENCED and "alice" in d.host_reason


def test_blocked_segment_pauses_and_resumes_where_it_was() -> None:
    blocked = replace(CTX, blocked="segment s1 recovery paused")
    d = step(new_job(), blocked)
    assert d.job.state is JobState.PAUSED and not d.intents
    assert step(d.job, blocked).wait_until is None
    resumed = step(d.job)
    assert resumed.job.state is JobState.PENDING


def test_host_returning_before_fencing_cancels() -> None:
    d = step(new_job(), replace(CTX, host_returned=True))
    assert d.job.state is JobState.FAILED and d.host_state is HostState.UP


def test_parallelism_limit() -> None:
    job = to_evacuating(new_job(5))
    d = step(job)
    evacs = [i for i in d.intents if isinstance(i, r.Evacuate)]
    assert len(evacs) == 2  # max_parallel
    assert [u.event_type for u in d.instances] == ["instance.evacuating"] * 2


def test_failed_start_is_replanned_on_another_host() -> None:
    job = to_evacuating(new_job(1))
    (evac,) = step(job).intents
    assert isinstance(evac, r.Evacuate) and evac.target == "h2"
    job = r.apply(step(job).job, r.Result(evac, False, "start failed"), 21).job
    (replan,) = step(job).intents
    assert isinstance(replan, r.PlanEvacuation) and replan.exclude == ("h2",)
    job = r.apply(job, r.Result(replan, True, plan=Plan((Placement("vm0", "h3"),))), 22).job
    d = step(job)
    (evac2,) = d.intents
    assert isinstance(evac2, r.Evacuate) and evac2.target == "h3" and evac2.attempt == 2
    # a late result of the first attempt changes nothing
    assert r.apply(d.job, r.Result(evac, True), 23).job is d.job
    job = r.apply(d.job, r.Result(evac2, True), 23).job
    (verify,) = step(job).intents
    assert isinstance(verify, r.VerifyInstance)
    d = r.apply(job, r.Result(verify, True), 24)
    assert d.instances[0].host == "h3"
    done = step(d.job)
    assert done.job.state is JobState.DONE and done.host_state is HostState.RECOVERED


def test_unplaceable_and_handed_over_instances_finish_the_job() -> None:
    job = to_evacuating(new_job(1))
    (evac,) = step(job).intents
    job = r.apply(step(job).job, r.Result(evac, False, "target died", handed_over=True),
                  21).job
    d = step(job)
    assert d.job.state is JobState.DONE and "1 handed over" in d.job.reason
    job2 = step(step(new_job(1)).job).job
    job2 = r.acknowledge(job2, "bob", 20)
    job2 = step(job2).job
    job2 = r.apply(job2, r.Result(step(job2).intents[0], True), 20).job
    plan_intent = step(job2).intents[0]
    d = r.apply(job2, r.Result(plan_intent, True,
                               plan=Plan(unplaced=(Unplaced("vm0", "no host"),))), 21)
    assert d.instances[0].event_type == "instance.unplaceable"


def test_restart_resumes_an_interrupted_evacuation_with_a_check() -> None:
    job = to_evacuating(new_job(1))
    d = step(job)
    # the controller died after recording the start: decide again from the saved job
    (again,) = step(d.job).intents
    assert isinstance(again, r.Evacuate) and again.resume and again.attempt == 1


def test_a_host_heartbeating_again_is_not_fenced() -> None:
    alive = replace(CTX, host_alive=True)
    d = step(new_job(), alive)
    assert d.job.state is JobState.PENDING and not d.intents
    blocked = step(new_job(), replace(CTX, blocked="paused")).job
    assert step(blocked, alive).job is blocked  # stays paused: no fencing
