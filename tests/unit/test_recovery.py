"""The recovery job state machine, driven by hand (no engine, no ports)."""

from __future__ import annotations

from dataclasses import replace

from vmha.domain import recovery as r
from vmha.domain.isolation import CutOffWindow, Sample
from vmha.domain.jobs import HostRecoveryData
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


# -- the agent_watchdog level: peer samples over the whole window ------------

SELF_FENCE = (("agent_watchdog",), ("manual",))
CTX_SF = r.JobContext(self_fence_deadline_s=20.0, sample_gap_s=4.0)


def _sample_result(confirm: r.ConfirmFenced, at: float, cannot_reach: int = 2,
                   reach: int = 0) -> r.Result:
    sample = Sample(at, 2, reach=reach, cannot_reach=cannot_reach)
    return r.Result(confirm, False, "sample", retry_at=at + 2.0 if sample.cut_off else None,
                    sample=sample)


def test_self_fence_needs_cut_off_samples_over_the_whole_window() -> None:
    job = r.decide(new_job(levels=SELF_FENCE), CTX_SF, 12.0).job  # fencing
    assert r.host_data(job).cut_off.since == 10.0  # its last heartbeat
    t = 12.0
    while True:
        (confirm,) = r.decide(job, CTX_SF, t).intents
        assert isinstance(confirm, r.ConfirmFenced) and confirm.deadline_s == 20.0
        d = r.apply(job, _sample_result(confirm, t), t)
        job = d.job
        if job.state is JobState.FENCED:
            break
        assert d.wait_until == t + 2.0 and job.state is JobState.FENCING
        t += 2.0
    assert t == 30.0  # 10 (last heartbeat) + 20
    assert r.host_data(job).fence.confirmed_by == (
        "agent self-fence deadline passed: cut off for 20.0 s (10 peer samples in a row)")


def test_a_peer_contact_restarts_the_window_and_fails_the_level() -> None:
    job = r.decide(new_job(levels=SELF_FENCE), CTX_SF, 12.0).job
    (confirm,) = r.decide(job, CTX_SF, 12.0).intents
    job = r.apply(job, _sample_result(confirm, 12.0), 12.0).job
    (confirm,) = r.decide(job, CTX_SF, 14.0).intents
    d = r.apply(job, _sample_result(confirm, 14.0, cannot_reach=1, reach=1), 14.0)
    data = r.host_data(d.job)
    assert d.job.state is JobState.FENCING and data.fence.level == 1  # on to manual
    assert data.cut_off.since == 14.0 and not data.fence.confirmed_by
    # the old rule: cut off now and past last_seen + 20 -> fenced; no longer
    retry = replace(d.job, data=replace(data, fence=replace(data.fence, level=0)))
    (confirm,) = r.decide(retry, CTX_SF, 31.0).intents
    assert confirm.deadline == 34.0
    d = r.apply(retry, _sample_result(confirm, 31.0), 31.0)
    assert d.job.state is JobState.FENCING and d.wait_until == 33.0
    assert r.host_data(d.job).cut_off.since == 31.0  # a gap since 14: restarted


def test_too_few_answers_restart_the_window_and_sampling_goes_on_for_a_while() -> None:
    """A peer that failed meanwhile cannot answer: no sign of contact, so
    the window restarts but the level is sampled on (the lab's six-host
    timeline: host2 cut off during host5's window); only after
    INCONCLUSIVE_SAMPLING deadlines since the last contact does it fail."""
    job = r.decide(new_job(levels=SELF_FENCE), CTX_SF, 12.0).job
    (confirm,) = r.decide(job, CTX_SF, 12.0).intents
    assert confirm.sample_until == 10.0 + r.INCONCLUSIVE_SAMPLING * 20.0
    job = r.apply(job, _sample_result(confirm, 12.0), 12.0).job
    (confirm,) = r.decide(job, CTX_SF, 14.0).intents
    short = r.Result(confirm, False, "too few", retry_at=16.0,
                     sample=Sample(14.0, 2, cannot_reach=1))
    d = r.apply(job, short, 14.0)
    data = r.host_data(d.job)
    assert d.job.state is JobState.FENCING and data.fence.level == 0 and d.wait_until == 16.0
    assert data.cut_off.since == 14.0 and data.cut_off.samples == 0  # restarted
    t = 16.0
    while r.host_data(d.job).fence.confirmed_by is None:  # cut off again: proven 20 s on
        (confirm,) = r.decide(d.job, CTX_SF, t).intents
        d = r.apply(d.job, _sample_result(confirm, t), t)
        t += 2.0
    assert d.job.state is JobState.FENCED and t - 2.0 == 34.0
    # past sample_until a short sample fails the level like any unproven one
    late = r.Result(confirm, False, "too few", retry_at=72.0,
                    sample=Sample(70.0, 2, cannot_reach=1))
    d = r.apply(job, late, 70.0)
    assert r.host_data(d.job).fence.level == 1


def test_a_job_row_without_a_window_reads_as_an_empty_one() -> None:
    job = new_job(levels=SELF_FENCE)
    raw = r.host_data(job).to_storage()
    assert raw["cut_off"] == {"since": 10.0, "sampled_at": 10.0, "samples": 0}
    del raw["cut_off"]
    old = HostRecoveryData.from_storage(raw, "h1")
    assert old.cut_off == CutOffWindow()
    assert HostRecoveryData.from_storage(r.host_data(job).to_storage(), "h1") == r.host_data(job)
