"""`vmha decide` and `vmha instance action` against a real `vmha serve`
process with `[cloud] adapter = "libvirt"` and a `custom` guest policy.

No VMs: an agent-less host and instance are registered through the API and
a crash is reported as the host's agent would (`POST /v1/agents/{host}/events`).
That publishes `instance.crashed` and `decision.requested`; the decision is
then answered in time, answered late (409 naming what the fallback did) or
never answered (`decision.timed_out`, fallback `auto` or `none`). Actions
reach no agent and their jobs fail, which is fine: what is checked is the
decisions, the jobs and the CLI's output, errors and exit codes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from live_server import ADMIN, AGENT, VIEWER, LiveServer, until
from typer.testing import CliRunner, Result

from vmha.adapters.cloud.libvirt import domain_uuid
from vmha.cli.main import app

Vmha = Callable[..., Result]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("decisions"), '[cloud]\nadapter = "libvirt"\n')
    server.start()
    assert server.api("POST", "/v1/segments", json={"name": "s1"}).status_code == 201
    for host in ("cn1", "cn2"):
        made = server.api("POST", "/v1/hosts", json={"name": host, "segment": "s1"})
        assert made.status_code == 201, made.text
    yield server
    server.stop()


@pytest.fixture
def vmha(live: LiveServer) -> Vmha:
    def run(*args: str, token: str = ADMIN) -> Result:
        env = {"VMHA_URL": live.url, "VMHA_TOKEN": token, "COLUMNS": "200"}
        return CliRunner().invoke(app, list(args), env=env)

    return run


def _instance(live: LiveServer, iid: str, **policy: Any) -> None:
    made = live.api("POST", "/v1/instances", json={
        "id": iid, "name": iid, "host": "cn1", "policy": {"guest": "custom", **policy}})
    assert made.status_code == 201, made.text


def _crash(live: LiveServer, iid: str) -> dict[str, Any]:
    """Report a guest panic of `iid`; return its decision.requested event."""
    sent = live.api("POST", "/v1/agents/cn1/events", token=AGENT, json={
        "boot_id": "", "events": [{"instance": domain_uuid(iid), "name": iid,
                                   "kind": "crashed", "detail": "panicked",
                                   "requested": False, "time": 0}]})
    assert sent.status_code == 202 and sent.json() == {"accepted": 1, "known": 1}, sent.text
    (event,) = _wait_events(live, iid, "decision.requested")
    return event


def _events(live: LiveServer, iid: str, kind: str) -> list[dict[str, Any]]:
    page = live.api("GET", "/v1/events", params={"type": kind, "subject": iid, "limit": 100})
    return list(page.json()["items"])


def _wait_events(live: LiveServer, iid: str, kind: str, count: int = 1,
                 timeout: float = 15) -> list[dict[str, Any]]:
    until(lambda: len(_events(live, iid, kind)) >= count, timeout, f"no {kind} for {iid}")
    return _events(live, iid, kind)


def _jobs(live: LiveServer, iid: str, kind: str) -> list[dict[str, Any]]:
    page = live.api("GET", "/v1/jobs", params={"kind": kind, "subject": iid})
    return list(page.json()["items"])


def _finished(live: LiveServer, job_id: str) -> bool:
    return live.api("GET", f"/v1/jobs/{job_id}").json()["state"] in ("done", "failed")


def test_a_decision_answered_in_time(live: LiveServer, vmha: Vmha) -> None:
    _instance(live, "vm-a", custom_deadline_s=60)
    asked = _crash(live, "vm-a")["payload"]
    assert asked["allowed"] == ["restart", "reset", "stop", "ignore"]
    assert (asked["layer"], asked["fallback"], asked["fallback_action"]) == (
        "guest", "auto", "restart")
    assert [e["payload"]["reason"] for e in _events(live, "vm-a", "instance.crashed")] == [
        "crashed: panicked"]

    result = vmha("decide", asked["token"], "stop")
    assert result.exit_code == 0, result.output
    [action] = _jobs(live, "vm-a", "action")
    decision_line, job_line, follow = result.stdout.splitlines()
    assert decision_line == f"decision {asked['decision']}: answered by ops: stop"
    assert re.fullmatch(rf"job {action['id']} \(action\) \w+: stop of instance vm-a "
                        rf"requested by ops \(decision {asked['decision']}\)", job_line)
    assert follow == f"follow it with: vmha job show {action['id']}"
    decision = live.api("GET", f"/v1/jobs/{asked['decision']}").json()
    assert decision["state"] == "done"

    again = vmha("decide", asked["token"], "restart")
    assert again.exit_code == 1 and again.stdout == ""
    assert again.stderr.startswith("error: 409 ")
    assert (f"decision {asked['decision']} for instance vm-a was already answered by ops: "
            f"action 'stop' (job {action['id']})") in again.stderr
    assert again.stderr.count("\n") == 1
    until(lambda: _finished(live, action["id"]), 15, "the stop job never finished")
    assert not _events(live, "vm-a", "decision.timed_out")


def test_a_late_answer_is_refused_naming_the_fallback(live: LiveServer, vmha: Vmha) -> None:
    _instance(live, "vm-b", custom_deadline_s=1)
    asked = _crash(live, "vm-b")["payload"]
    # Never answered in time: the fallback (auto -> restart) runs as a job.
    (timed_out,) = _wait_events(live, "vm-b", "decision.timed_out")
    assert timed_out["payload"]["decision"] == asked["decision"]
    assert (timed_out["payload"]["fallback"], timed_out["payload"]["action"]) == (
        "auto", "restart")
    assert timed_out["time"] - asked["deadline"] < 1.0
    until(lambda: bool(_jobs(live, "vm-b", "action")), 10, "no fallback action job")
    [action] = _jobs(live, "vm-b", "action")
    (started,) = _events(live, action["id"], "job.started")
    assert (started["payload"]["action"], started["payload"]["by"]) == ("restart", "fallback")

    late = vmha("decide", asked["token"], "reset")
    assert late.exit_code == 1 and late.stdout == ""
    assert late.stderr.startswith("error: 409 ")
    assert (f"decision {asked['decision']} for instance vm-b timed out before this answer; "
            f"its fallback 'auto' was applied: action 'restart' was done instead "
            f"(job {action['id']})") in late.stderr

    late_json = vmha("decide", asked["token"], "reset", "--json")
    assert late_json.exit_code == 1 and late_json.stdout == ""  # errors stay on stderr


def test_never_answered_with_fallback_none_does_nothing(live: LiveServer) -> None:
    _instance(live, "vm-c", custom_deadline_s=0.5, custom_fallback="none")
    asked = _crash(live, "vm-c")["payload"]
    assert (asked["fallback"], asked["fallback_action"]) == ("none", None)
    (timed_out,) = _wait_events(live, "vm-c", "decision.timed_out")
    assert timed_out["payload"]["fallback"] == "none"
    assert timed_out["payload"]["action"] is None
    decision = live.api("GET", f"/v1/jobs/{asked['decision']}").json()
    assert decision["state"] == "done"
    assert not _jobs(live, "vm-c", "action")


def test_decide_refusals(live: LiveServer, vmha: Vmha) -> None:
    _instance(live, "vm-d", custom_deadline_s=60)
    asked = _crash(live, "vm-d")["payload"]

    wrong = vmha("decide", asked["token"], "evacuate")
    assert wrong.exit_code == 1
    assert wrong.stderr.startswith("error: 422 Invalid input: body.action: 'evacuate' is not "
                                   "allowed for this decision")
    unknown = vmha("decide", "no-such-decision.secret", "stop")
    assert unknown.exit_code == 1 and unknown.stderr.startswith("error: 404 Not found: ")
    forged = vmha("decide", f"{asked['decision']}.not-the-secret", "stop")
    assert forged.exit_code == 1 and forged.stderr.startswith("error: 404 Not found: ")
    viewer = vmha("decide", asked["token"], "stop", token=VIEWER)
    assert viewer.exit_code == 1 and viewer.stderr.startswith("error: 403 ")

    # Still open after all that; --json prints the API's answer.
    answered = vmha("decide", asked["token"], "ignore", "--json")
    assert answered.exit_code == 0, answered.output
    body = json.loads(answered.stdout)
    assert body["decision"]["id"] == asked["decision"]
    assert body["decision"]["state"] == "done" and body["job"] is None


def test_instance_action_output_and_refusals(live: LiveServer, vmha: Vmha) -> None:
    _instance(live, "vm-e")
    missing = vmha("instance", "action", "vm-none", "restart")
    assert missing.exit_code == 1 and missing.stdout == ""
    assert missing.stderr == "error: 404 Not found: instance 'vm-none' does not exist\n"

    bad = vmha("instance", "action", "vm-e", "explode")
    assert bad.exit_code == 1
    assert bad.stderr == ("error: 422 Invalid input: body.action: Input should be 'restart', "
                          "'reset', 'stop', 'start', 'evacuate', 'rebuild' or 'ignore'\n")

    unfenced = vmha("instance", "action", "vm-e", "evacuate", "--host", "cn2")
    assert unfenced.exit_code == 1 and unfenced.stderr.startswith("error: 409 ")
    assert ("evacuate of instance vm-e refused: host cn1 of instance vm-e is up and not "
            "fenced: evacuating could run the instance twice; fence it first") in unfenced.stderr
    target = vmha("instance", "action", "vm-e", "restart", "--host", "cn2")
    assert target.exit_code == 1
    assert "a target host only makes sense for evacuate, not restart" in target.stderr
    viewer = vmha("instance", "action", "vm-e", "stop", token=VIEWER)
    assert viewer.exit_code == 1 and viewer.stderr.startswith("error: 403 ")

    done = vmha("instance", "action", "vm-e", "stop")
    assert done.exit_code == 0, done.output
    [job] = _jobs(live, "vm-e", "action")
    first, follow = done.stdout.splitlines()
    assert re.fullmatch(rf"job {job['id']} \(action\) \w+: stop of instance vm-e requested "
                        "by ops", first), first
    assert follow == f"follow it with: vmha job show {job['id']}"
    busy = vmha("instance", "action", "vm-e", "start")
    until(lambda: _finished(live, job["id"]), 15, "the stop job never finished")
    if busy.exit_code == 1:  # refused while the stop job ran: it says so
        assert f"its action job {job['id']} (stop) is not finished" in busy.stderr
    raw = vmha("instance", "action", "vm-e", "reset", "--json")
    assert raw.exit_code == 0, raw.output
    shown = json.loads(raw.stdout)
    assert shown["kind"] == "action" and shown["subject"] == "vm-e"
    assert shown["id"] in {j["id"] for j in _jobs(live, "vm-e", "action")}

