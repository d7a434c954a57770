"""Guest and application recovery jobs, step by step (vmha.domain.escalation)."""

from __future__ import annotations

from vmha.domain import escalation as esc
from vmha.domain.model import Instance, InstanceState, Job, JobState, StepState
from vmha.domain.policy import HAPolicy

STEPS = ("exec:/etc/init.d/app restart", "reset")
POLICY = HAPolicy.from_dict({"app": "auto", "app_actions": list(STEPS), "app_grace_s": 20,
                             "max_restarts": 3})
VM = Instance("i1", "vm1", "h1", project="p1")


def opened(layer: str = "app", steps: tuple[str, ...] = STEPS, notify: bool = False) -> Job:
    out = esc.new_job("j1", VM, layer, steps, "probe failed", 100.0, 100.0, notify)
    assert [e.type for e in out.events] == ["job.started"]
    assert out.events[0].project == "p1" and out.job.state is JobState.PENDING
    return out.job


def types(out: esc.Outcome) -> list[str]:
    return [e.type for e in out.events]


def test_exec_then_the_application_answers() -> None:
    began = esc.begin_step(opened(), VM, POLICY, [], 100.0)
    assert began.job.state is JobState.EVACUATING and types(began) == ["job.step"]
    assert began.job.steps[-1].name == STEPS[0]
    assert began.job.steps[-1].state is StepState.RUNNING
    ran = esc.step_finished(began.job, VM, POLICY, True, "exit 0", 101.0, 1)
    assert ran.job.state is JobState.VERIFYING and esc.data(ran.job).grace_until == 121.0
    assert ran.state is None and types(ran) == ["job.step"]  # no restart of the guest
    done = esc.recovered(ran.job, 102.0, "the application answers again")
    assert done is not None and done.job.state is JobState.DONE


def test_still_failing_after_the_grace_time_escalates_to_reset() -> None:
    began = esc.begin_step(opened(), VM, POLICY, [], 100.0)
    ran = esc.step_finished(began.job, VM, POLICY, True, "exit 0", 101.0, 1)
    nxt = esc.grace_over(ran.job, VM, POLICY, [100.0], 121.0)
    assert nxt.job.state is JobState.EVACUATING and esc.data(nxt.job).action == "reset"
    assert "still fails 20 s after exec" in nxt.job.reason
    reset = esc.step_finished(nxt.job, VM, POLICY, True, "reset of i1", 122.0, 2)
    assert reset.state is InstanceState.RUNNING
    assert types(reset) == ["instance.restarted", "job.step"]
    assert "restart 2 of 3" in reset.events[0].payload["reason"]
    failed = esc.grace_over(reset.job, VM, POLICY, [100.0, 121.0], 142.0)
    assert failed.job.state is JobState.FAILED and failed.state is InstanceState.ERROR
    assert types(failed) == ["instance.recovery_failed", "job.failed"]
    assert "nothing left to try" in failed.events[0].payload["reason"]


def test_a_failed_step_escalates_at_once() -> None:
    began = esc.begin_step(opened(), VM, POLICY, [], 100.0)
    failed = esc.step_finished(began.job, VM, POLICY, False, "no guest agent", 101.0, 1)
    assert failed.job.state is JobState.VERIFYING
    assert esc.data(failed.job).grace_until == 101.0  # no waiting
    assert "next: reset" in failed.job.reason
    nxt = esc.grace_over(failed.job, VM, POLICY, [100.0], 101.0)
    assert esc.data(nxt.job).action == "reset" and nxt.job.reason == "step 2 of 2: reset"


def test_the_budget_counts_every_step_started() -> None:
    job = opened()
    spent = esc.begin_step(job, VM, POLICY, [10.0, 20.0, 30.0], 100.0)
    assert spent.job.state is JobState.FAILED
    assert "restart budget spent: 3 restarts in 600 s (max 3)" in spent.events[0].payload["reason"]
    began = esc.begin_step(job, VM, POLICY, [], 100.0)
    ran = esc.step_finished(began.job, VM, POLICY, True, "exit 0", 101.0, 1)
    other = esc.begin_step(opened(), VM, POLICY, [], 300.0).job
    assert esc.restart_times([ran.job, other], 400.0, 600.0) == [100.0, 300.0]
    assert esc.restart_times([ran.job, other], 750.0, 600.0) == [300.0]  # out of the window


def test_recovered_while_a_step_runs_ends_the_job_when_it_returns() -> None:
    began = esc.begin_step(opened(), VM, POLICY, [], 100.0)
    flagged = esc.recovered(began.job, 100.5, "answers")
    assert flagged is not None and flagged.job.state is JobState.EVACUATING
    assert flagged.events == () and esc.data(flagged.job).recovered
    done = esc.step_finished(flagged.job, VM, POLICY, True, "exit 0", 101.0, 1)
    assert done.job.state is JobState.DONE


def test_a_step_interrupted_by_a_controller_restart_is_not_run_again() -> None:
    began = esc.begin_step(opened(), VM, POLICY, [], 100.0)
    resumed = esc.interrupted(began.job, POLICY, 105.0)
    assert resumed.job.state is JobState.VERIFYING
    assert esc.data(resumed.job).grace_until == 125.0
    assert resumed.job.steps[-1].state is StepState.FAILED
    guest = esc.begin_step(opened("guest", ("restart",)), VM, POLICY, [], 100.0)
    assert esc.interrupted(guest.job, POLICY, 105.0).job.state is JobState.DONE


def test_guest_step_done_ends_the_job_and_notify_publishes_each_step() -> None:
    began = esc.begin_step(opened("guest", ("restart",), notify=True), VM, POLICY, [], 100.0)
    assert types(began) == ["job.step", "instance.recovery_step"]
    assert began.events[1].project == "p1"
    done = esc.step_finished(began.job, VM, POLICY, True, "restart of i1 on h1", 101.0, 1)
    assert done.job.state is JobState.DONE and done.state is InstanceState.RUNNING
    assert types(done) == ["instance.restarted", "job.done"]


def test_stored_jobs_round_trip() -> None:
    from vmha.domain.jobs import InstanceRecoveryData

    ran = esc.step_finished(esc.begin_step(opened(), VM, POLICY, [], 100.0).job, VM, POLICY,
                            True, "exit 0", 101.0, 1).job
    record = esc.data(ran)
    assert InstanceRecoveryData.from_storage(record.to_storage(), "i1") == record
    old = InstanceRecoveryData.from_storage({"action": "reset"}, "i1")  # an older row
    assert old.escalation == ("reset",)
