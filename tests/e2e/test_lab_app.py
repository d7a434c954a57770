"""Application and guest-OS recovery, end to end: real QEMU guests on a 2-host lab.

One lab (2 hosts, the controller in libvirt mode, 3 guests whose agents
probe `/health` every second, 2 failures in a row) runs the tests below in
order. Faults are real: the guest's failure control kills the application
(`app-kill`), stops it so it accepts connections and never answers
(`app-hang`), or stops every process in the guest (`guest-hang`, so its
QEMU guest agent stops answering too). QEMU processes are read from /proc.

  vm1 host1  app auto: [exec:/etc/init.d/app restart, reset] (custom for one test)
  vm2 host2  app auto: [reset] only, at most 1 restart per 10 minutes
  vm3 host1  app notify; guest auto without a watchdog device, guest-ping 1 s x 3

Then `fence_vmha` (driven like Pacemaker's fencer, options on stdin) powers
vm1 off (its QEMU process gone from /proc when `off` returns) and on again,
and last vm1 and vm2 become an anti-affinity group before host1 fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from vmha.adapters.cloud.libvirt import domain_uuid
from vmha.lab import controller as lab_controller
from vmha.lab import faults, net, state, vms
from vmha.lab import lab as lab_ops
from vmha.lab.agentapi import agent_request
from vmha.lab.image import APP_COMMAND

pytestmark = pytest.mark.slow

PROBE = {"interval_s": 1, "timeout_s": 0.9, "failure_threshold": 2, "initial_delay_s": 30}
EXEC = f"exec:{APP_COMMAND} restart"


def _policy(index: int, **extra: Any) -> dict[str, Any]:
    probe = {"kind": "http", "target": f"http://{vms.vm_address(index)}:8080/health", **PROBE}
    return {"host": "auto", "guest": "auto", "probes": [probe], **extra}


POLICIES = [
    _policy(1, app="auto", app_actions=[EXEC, "reset"], app_grace_s=20, max_restarts=10),
    _policy(2, app="auto", app_actions=["reset"], app_grace_s=30, max_restarts=1,
            window_s=600),
    _policy(3, app="notify", watchdog_action="none", guest_ping_s=1, guest_ping_failures=3),
]
PLACES = ["host1", "host2", "host1"]
SETTINGS = lab_ops.LabSettings(
    hosts=2, heartbeat_interval_s=0.5, watchdog_timeout_s=3.0, controller_port=8783,
    heartbeat_port=8784,
    controller={"restart_backoff_s": 1.0, "host_return_healthy_s": 3.0,
                "verify_poll_s": 0.5, "job_poll_s": 0.5, "fence_poll_s": 0.5},
)


@dataclass
class Lab:
    dir: Path
    api: httpx.Client
    ids: dict[str, str]  # vm name -> instance id

    def vm(self, name: str) -> dict[str, Any]:
        got: dict[str, Any] = vms.status(self.dir)["instances"][name]
        return got

    def events(self, etype: str, subject: str, since: int = 0) -> list[Any]:
        params: dict[str, Any] = {"type": etype, "since": since, "limit": 500,
                                  "subject": subject}
        items: list[Any] = self.api.get("/v1/events", params=params).json()["items"]
        return items

    def cursor(self) -> int:
        since = 0
        while True:
            page = self.api.get("/v1/events", params={"since": since, "limit": 500}).json()
            if not page["items"]:
                return since
            since = page["next_since"]

    def jobs(self, name: str) -> list[Any]:
        got = self.api.get("/v1/jobs", params={"kind": "instance_recovery",
                                               "subject": self.ids[name], "limit": 100})
        items: list[Any] = got.json()["items"]
        return sorted(items, key=lambda j: j["created_at"])

    def qemu_pid(self, name: str) -> int | None:
        """The live QEMU process of `name`'s domain, from /proc."""
        uuid = domain_uuid(self.ids[name])
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                args = net.cmdline(int(entry)).split()
                if args and "qemu-system" in args[0] and uuid in args and \
                        net.alive(int(entry)):
                    return int(entry)
        return None


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str,
             every_s: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def app_answers(address: str) -> bool:
    try:
        # (2 s: a guest under TCG on a busy machine answers late, not never)
        return httpx.get(f"http://{address}:8080/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def ended_job(lab: Lab, name: str) -> dict[str, Any]:
    """`name`'s newest recovery job once it has ended (it ends when its step
    returns, which may come after the application answers again)."""
    return dict(wait_for(lambda: (jobs := lab.jobs(name)) and jobs[-1]["state"]
                         in ("done", "failed") and jobs[-1], 60, f"{name}'s job ended"))


def down_then_up(address: str, timeout_s: float) -> tuple[float, float]:
    """Poll the application every 0.1 s: when it stopped answering, and when
    it answered again."""
    deadline = time.monotonic() + timeout_s
    down = 0.0
    while time.monotonic() < deadline:
        ok = app_answers(address)
        if not ok and not down:
            down = time.time()
        if ok and down:
            return down, time.time()
        time.sleep(0.1)
    raise AssertionError(f"{address}'s application did not go down and come back "
                         f"within {timeout_s} s")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, lab_ready: None) -> Iterator[Lab]:
    lab_dir = tmp_path_factory.mktemp("applab")
    try:
        st = lab_ops.up(lab_dir, SETTINGS)
        ctl = st["controller"]
        client = httpx.Client(base_url=ctl["url"], timeout=10,
                              headers={"Authorization": f"Bearer {ctl['token']}"})
        # one of two hosts failing is the anti-affinity test, not a controller cut off
        client.patch("/v1/segments/lab", json={"mass_failure_threshold": 1.0})
        for policy, host in zip(POLICIES, PLACES, strict=True):
            vms.create(lab_dir, 1, [policy], hosts=[host], wait=False)
        vms.wait_running(lab_dir, ["vm1", "vm2", "vm3"])
        ids = {n: v["id"] for n, v in state.load(lab_dir)["vms"].items()}
        lab = Lab(lab_dir, client, ids)
        for name in ids:  # the probes count only after their initial delay
            wait_for(lambda n=name: app_answers(lab.vm(n)["address"]), 60, f"{name}'s app")
        time.sleep(PROBE["initial_delay_s"])
        yield lab
    finally:
        faults.down(lab_dir)


def test_killed_app_is_restarted_inside_the_guest(lab: Lab) -> None:
    since, pid = lab.cursor(), lab.qemu_pid("vm1")
    address, iid = lab.vm("vm1")["address"], lab.ids["vm1"]
    vms.guest_fault(lab.dir, "vm1", "app-kill")
    _down, up = down_then_up(address, 60)
    failed = wait_for(lambda: lab.events("instance.app_failed", iid, since), 30, "app_failed")
    # how fast it answers again is bench/app_probe.py's (a busy machine's guest
    # agent is slow); that it was the in-guest restart is the job's steps below
    print(f"vm1 answering {up - failed[0]['time']:.2f} s after detection")
    wait_for(lambda: lab.events("instance.app_recovered", iid, since), 60, "app_recovered")
    job = wait_for(lambda: [j for j in lab.jobs("vm1") if j["state"] == "done"], 60,
                   "vm1's recovery job done")[-1]
    assert [s["name"] for s in job["steps"]] == [EXEC]
    assert job["steps"][0]["state"] == "done" and "exit 0" in job["steps"][0]["detail"]
    assert lab.qemu_pid("vm1") == pid, "the guest was restarted, not only its application"
    assert not lab.events("instance.restarted", iid, since)


def test_hung_app_is_detected_by_its_timeout_and_restarted(lab: Lab) -> None:
    since, pid = lab.cursor(), lab.qemu_pid("vm1")
    iid = lab.ids["vm1"]
    vms.guest_fault(lab.dir, "vm1", "app-hang")  # accepts connections, never answers
    failed = wait_for(lambda: lab.events("instance.app_failed", iid, since), 60, "app_failed")
    assert "failed 2 times in a row" in failed[0]["payload"]["reason"]
    wait_for(lambda: lab.events("instance.app_recovered", iid, since), 60, "app_recovered")
    assert app_answers(lab.vm("vm1")["address"])
    assert lab.qemu_pid("vm1") == pid
    assert len(lab.jobs("vm1")) == 2


def test_custom_app_asks_then_falls_back_or_takes_the_answer(lab: Lab) -> None:
    """vm1 with `app: custom` (deadline 5 s, fallback auto): its failure publishes
    a decision with a deadline. Unanswered, the fallback runs the escalation (the
    in-guest restart) at the deadline; answered `reset` through the decisions API,
    the guest is reset and the fallback never runs."""
    iid, address = lab.ids["vm1"], lab.vm("vm1")["address"]
    custom = {**POLICIES[0], "app": "custom", "custom_deadline_s": 5, "custom_fallback": "auto"}
    lab.api.patch(f"/v1/instances/{iid}", json={"policy": custom}).raise_for_status()
    try:
        since, pid, jobs_before = lab.cursor(), lab.qemu_pid("vm1"), len(lab.jobs("vm1"))
        vms.guest_fault(lab.dir, "vm1", "app-kill")
        asked = wait_for(lambda: lab.events("decision.requested", iid, since), 60,
                         "vm1's decision.requested")[0]
        ask = asked["payload"]
        assert (ask["layer"], ask["fallback"], ask["deadline_s"]) == ("app", "auto", 5)
        assert ask["deadline"] == pytest.approx(asked["time"] + 5, abs=0.01)
        assert "reset" in ask["allowed"] and ask["token"]
        # nothing runs before the deadline (read after it on a busy machine, the
        # job's created_at below says so)
        jobs_now = len(lab.jobs("vm1"))
        if time.time() < ask["deadline"]:
            assert jobs_now == jobs_before
        timed_out = wait_for(lambda: lab.events("decision.timed_out", iid, since), 60,
                             "vm1's decision.timed_out")[0]
        assert timed_out["time"] >= ask["deadline"]
        assert timed_out["payload"]["fallback"] == "auto"
        wait_for(lambda: lab.events("instance.app_recovered", iid, since), 60,
                 "vm1 recovered by the fallback")
        # the app may answer before its restart command returns: the job ends then
        job = ended_job(lab, "vm1")
        assert len(lab.jobs("vm1")) == jobs_before + 1 and job["state"] == "done"
        assert [s["name"] for s in job["steps"]] == [EXEC]
        assert job["created_at"] >= ask["deadline"]
        assert lab.qemu_pid("vm1") == pid and app_answers(address)

        since = lab.cursor()
        vms.guest_fault(lab.dir, "vm1", "app-kill")
        ask = wait_for(lambda: lab.events("decision.requested", iid, since), 60,
                       "vm1's second decision.requested")[0]["payload"]
        answer = lab.api.post("/v1/decisions", json={"token": ask["token"], "action": "reset"})
        assert answer.status_code == 202, answer.text
        assert answer.json()["job"]["kind"] == "action"
        restarted = wait_for(lambda: lab.events("instance.restarted", iid, since), 60,
                             "vm1 reset by the answer")
        assert restarted[0]["payload"]["reason"].startswith("reset")
        wait_for(lambda: lab.events("instance.app_recovered", iid, since), 60,
                 "vm1's application after the reset")
        wait_for(lambda: time.time() > ask["deadline"] + 1, 10, "the deadline passed")
        assert not lab.events("decision.timed_out", iid, since)  # the answer settled it
        assert len(lab.jobs("vm1")) == jobs_before + 1  # no escalation: the fallback never ran
        assert lab.qemu_pid("vm1") == pid  # a reset keeps the QEMU process
    finally:
        lab.api.patch(f"/v1/instances/{iid}", json={"policy": POLICIES[0]}).raise_for_status()


def test_reset_only_escalation_resets_the_guest(lab: Lab) -> None:
    since, pid = lab.cursor(), lab.qemu_pid("vm2")
    iid = lab.ids["vm2"]
    vms.guest_fault(lab.dir, "vm2", "app-kill")
    restarted = wait_for(lambda: lab.events("instance.restarted", iid, since), 60,
                         "vm2 reset")
    assert restarted[0]["payload"]["reason"].startswith("reset on host2")
    wait_for(lambda: lab.events("instance.app_recovered", iid, since), 60,
             "vm2's application after the reset")
    assert app_answers(lab.vm("vm2")["address"])
    assert lab.qemu_pid("vm2") == pid  # a reset keeps the QEMU process: the guest rebooted
    ended_job(lab, "vm2")
    (job,) = lab.jobs("vm2")
    assert job["state"] == "done" and [s["name"] for s in job["steps"]] == ["reset"]


def test_spent_budget_stays_spent_across_a_controller_sigkill(lab: Lab) -> None:
    iid, address = lab.ids["vm2"], lab.vm("vm2")["address"]
    since = lab.cursor()
    vms.guest_fault(lab.dir, "vm2", "app-kill")  # its second failure in 10 minutes
    # (its probe counts failures again once initial_delay_s has passed since the reset)
    spent = wait_for(lambda: lab.events("instance.recovery_failed", iid, since),
                     PROBE["initial_delay_s"] + 20, "vm2 recovery_failed")
    assert "budget spent: 1 restarts in 600 s (max 1)" in spent[0]["payload"]["reason"]
    st = state.load(lab.dir)
    assert lab_controller.kill_controller(st["controller"]) is not None  # SIGKILL
    lab_controller.restart_controller(st["controller"])
    state.save(lab.dir, st)
    restart_app_by_hand(lab, "vm2")  # then kill it again
    wait_for(lambda: lab.events("instance.app_recovered", iid, since), 60, "vm2 recovered")
    since, pid = lab.cursor(), lab.qemu_pid("vm2")
    vms.guest_fault(lab.dir, "vm2", "app-kill")
    again = wait_for(lambda: lab.events("instance.recovery_failed", iid, since), 60,
                     "vm2 recovery_failed after the controller restart")
    assert "budget spent" in again[0]["payload"]["reason"]
    time.sleep(3)
    assert not lab.events("instance.restarted", iid, since)
    assert lab.qemu_pid("vm2") == pid and not app_answers(address)
    assert len(lab.jobs("vm2")) == 1


def restart_app_by_hand(lab: Lab, name: str) -> None:
    """`/etc/init.d/app restart` in the guest through its host agent's exec API."""
    st = state.load(lab.dir)
    host = st["hosts"][lab.vm(name)["host"]]
    out = agent_request(host["address"], st["agent_token"],
                        f"/v1/domains/{domain_uuid(lab.ids[name])}/exec",
                        {"command": [APP_COMMAND, "restart"]}, timeout_s=30)
    assert out["exitcode"] == 0, out


def test_notify_publishes_only(lab: Lab) -> None:
    since, pid = lab.cursor(), lab.qemu_pid("vm3")
    iid = lab.ids["vm3"]
    vms.guest_fault(lab.dir, "vm3", "app-kill")
    wait_for(lambda: lab.events("instance.app_failed", iid, since), 60, "vm3 app_failed")
    time.sleep(5)
    assert lab.jobs("vm3") == [] and not app_answers(lab.vm("vm3")["address"])
    assert not lab.events("instance.restarted", iid, since)
    assert lab.qemu_pid("vm3") == pid


def test_guest_without_watchdog_hangs_and_its_guest_agent_tells(lab: Lab) -> None:
    iid = lab.ids["vm3"]
    restart_app_by_hand(lab, "vm3")  # the failure control is its application's (killed above)
    since = lab.cursor()
    vms.guest_fault(lab.dir, "vm3", "guest-hang")  # every process stopped, qemu-ga too
    gone = wait_for(lambda: lab.events("instance.guest_unresponsive", iid, since), 60,
                    "vm3 guest_unresponsive")
    assert "guest-ping" in gone[0]["payload"]["reason"]
    restarted = wait_for(lambda: lab.events("instance.restarted", iid, since), 60,
                         "vm3 reset by the guest layer")
    assert restarted[0]["payload"]["reason"].startswith("reset on host1")
    wait_for(lambda: app_answers(lab.vm("vm3")["address"]), 120, "vm3's application")
    ended_job(lab, "vm3")  # the controller hears of the guest after the test does
    (job,) = lab.jobs("vm3")
    assert job["state"] == "done" and job["data"]["layer"] == "guest"


def fence(lab: Lab, **options: str) -> subprocess.CompletedProcess[str]:
    """`fence_vmha` as Pacemaker's fencer runs it: options on stdin."""
    url = urlsplit(str(lab.api.base_url))
    token = lab.api.headers["Authorization"].removeprefix("Bearer ")
    base = {"ip": str(url.hostname), "ipport": str(url.port), "password": token,
            "power_timeout": "60"}
    exe = shutil.which("fence_vmha", path=str(Path(sys.executable).parent))
    assert exe is not None, "fence_vmha is not installed (pip install -e .)"
    stdin = "".join(f"{k}={v}\n" for k, v in {**base, **options}.items())
    return subprocess.run([exe], input=stdin, capture_output=True, text=True, timeout=120)


def test_fence_vmha_powers_a_real_guest_off_and_on(lab: Lab) -> None:
    iid = lab.ids["vm1"]
    meta = fence(lab, action="metadata")
    root = ET.fromstring(meta.stdout)  # noqa: S314 - our own agent's output
    assert meta.returncode == 0 and root.get("name") == "fence_vmha"
    listed = fence(lab, action="list")
    assert f"{iid},vm1" in listed.stdout.splitlines(), listed.stdout + listed.stderr
    assert fence(lab, action="status", plug=iid).returncode == 0
    assert lab.qemu_pid("vm1") is not None
    off = fence(lab, action="off", plug=iid)
    assert off.returncode == 0, off.stderr
    assert lab.qemu_pid("vm1") is None, "off returned while the guest's QEMU still ran"
    status = fence(lab, action="status", plug=iid)
    assert (status.returncode, status.stdout.strip()) == (2, "Status: OFF")
    on = fence(lab, action="on", plug=iid)
    assert on.returncode == 0, on.stderr
    wait_for(lambda: lab.qemu_pid("vm1"), 60, "vm1's QEMU after on")
    assert fence(lab, action="status", plug=iid).returncode == 0
    wait_for(lambda: app_answers(lab.vm("vm1")["address"]), 180, "vm1's application after on")

def test_anti_affinity_holds_when_a_members_host_fails(lab: Lab) -> None:
    """vm1 (host1) and vm2 (host2) form a group: when host1 dies, vm1 may not
    go beside vm2 (the only other host) and is unplaceable with the reason;
    vm3 (no group) moves."""
    for name in ("vm1", "vm2"):
        got = lab.api.patch(f"/v1/instances/{lab.ids[name]}",
                            json={"anti_affinity_group": "pair"})
        assert got.status_code == 200, got.text
    since = lab.cursor()
    faults.fail(lab.dir, "host1", "power-off")
    unplaced = wait_for(lambda: lab.events("instance.unplaceable", lab.ids["vm1"], since), 120,
                        "vm1 unplaceable")
    assert "anti-affinity group pair" in unplaced[0]["payload"]["reason"]
    wait_for(lambda: lab.vm("vm3")["host"] == "host2" and app_answers(lab.vm("vm3")["address"]),
             180, "vm3 moved to host2")
    assert lab.vm("vm1")["qemu_on"] == [] and lab.vm("vm2")["qemu_on"] == ["host2"]
