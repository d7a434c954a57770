"""The pure decision and action rules of vmha.domain.decisions: named cases
on a fake clock (plain numbers)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vmha.domain import decisions
from vmha.domain.errors import Conflict, NotFound, ValidationError
from vmha.domain.model import Host, HostState, Instance, JobState
from vmha.domain.policy import CustomFallback, HAPolicy

T0 = 1000.0
INST = Instance(id="vm1", name="vm1", host="h1", project="p1")


def pending(layer: str = "guest", fallback: CustomFallback = CustomFallback.AUTO):
    policy = HAPolicy(custom_deadline_s=60, custom_fallback=fallback)
    req = decisions.Request(INST, layer, "crashed")
    return decisions.new_decision("d1", "s3cret", req, policy, T0)


def test_request_carries_token_deadline_allowed_and_keeps_only_a_digest() -> None:
    job, event = pending()
    assert event.type == "decision.requested" and event.project == "p1"
    assert event.payload["token"] == "d1.s3cret"
    assert event.payload["deadline"] == T0 + 60
    assert event.payload["allowed"] == ["restart", "reset", "stop", "ignore"]
    assert event.payload["fallback_action"] == "restart"
    assert "s3cret" not in str(job.data)
    assert job.data.to_storage()["token_sha256"] == decisions.digest("s3cret")
    decisions.check_token(job, "s3cret")
    with pytest.raises(NotFound):
        decisions.check_token(job, "guess")


@pytest.mark.parametrize(("name", "layer", "fallback", "at", "action"), [
    ("before the deadline nothing happens", "guest", CustomFallback.AUTO, T0 + 59.9, None),
    ("guest auto restarts", "guest", CustomFallback.AUTO, T0 + 60, "restart"),
    ("app auto escalates", "app", CustomFallback.AUTO, T0 + 61, "escalate"),
    ("host auto evacuates", "host", CustomFallback.AUTO, T0 + 60, "evacuate"),
    ("none does nothing", "guest", CustomFallback.NONE, T0 + 60, None),
])
def test_expire(name: str, layer: str, fallback: CustomFallback, at: float,
                action: str | None) -> None:
    job, _ = pending(layer, fallback)
    res = decisions.expire(job, at)
    if at < T0 + 60:
        assert res is None, name
        return
    assert res is not None and res.action == action, name
    assert res.job.state is JobState.DONE and res.job.data.to_storage()["outcome"] == "timed_out"
    assert res.events[0].type == "decision.timed_out"


def test_answer_in_time_then_late_answers_say_what_was_done() -> None:
    job, _ = pending()
    res = decisions.answer(job, "stop", "ann", T0 + 10)
    assert res.action == "stop" and res.job.data.to_storage()["by"] == "ann"
    with pytest.raises(Conflict, match="already answered by ann"):
        decisions.answer(res.job, "restart", "bob", T0 + 11)
    with pytest.raises(ValidationError, match="allowed: restart, reset, stop, ignore"):
        decisions.answer(job, "evacuate", "ann", T0 + 10)
    timed_out = decisions.expire(job, T0 + 60)
    assert timed_out is not None
    done = decisions.with_action_job(timed_out.job, "a7")
    with pytest.raises(Conflict, match=r"timed out before this answer.*'restart' was done "
                                       r"instead \(job a7\)"):
        decisions.answer(done, "stop", "ann", T0 + 70)
    assert decisions.answer(job, "ignore", "ann", T0).action is None


UP = Host(name="h1", segment="s1")
H2 = Host(name="h2", segment="s1")


@pytest.mark.parametrize(("name", "action", "host", "target", "busy", "refused"), [
    ("restart on an up host", "restart", UP, None, "", ""),
    ("restart on a failed host", "restart", replace(UP, state=HostState.FAILED), None, "",
     "not up"),
    ("evacuate off an up host", "evacuate", UP, None, "", "not fenced"),
    ("evacuate off a fencing host", "evacuate", replace(UP, state=HostState.FENCING), None,
     "", "not fenced"),
    ("evacuate off a fenced host", "evacuate", replace(UP, state=HostState.FENCED), H2, "", ""),
    ("evacuate off a recovered host", "evacuate", replace(UP, state=HostState.RECOVERED),
     None, "", ""),
    ("evacuate off maintenance", "evacuate", replace(UP, state=HostState.MAINTENANCE), H2,
     "", ""),
    ("evacuate to a failed target", "evacuate", replace(UP, state=HostState.FENCED),
     replace(H2, state=HostState.FAILED), "", "not schedulable"),
    ("evacuate while its host job moves it", "evacuate",
     replace(UP, state=HostState.RECOVERING), None, "job-1", "being moved"),
    ("rebuild without OpenStack", "rebuild", UP, None, "", "needs the OpenStack adapter"),
    ("ignore is always fine", "ignore", replace(UP, state=HostState.FENCING), None, "", ""),
])
def test_refusal(name: str, action: str, host: Host, target: Host | None, busy: str,
                 refused: str) -> None:
    why = decisions.refusal(action, INST, host, target, target.name if target else None,
                            busy)
    assert (refused in why and why) if refused else why == "", (name, why)
