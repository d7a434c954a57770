"""Several controllers, end to end (issue 15): `vmha lab up --controllers 3`.

One lab for every test, in order: 3 hosts with BMC emulators, 3 `vmha
serve` each in its own network namespace on a 3-member etcd and
PostgreSQL, two QEMU guests on host1. A watcher thread reads /proc every
0.2 s for the guests' QEMU processes per host (the hypervisors' ground
truth) and every test asserts that no guest ever ran on two hosts at once.
Each test leaves every host and controller running again.

- the leader SIGKILLed while it fences host1 (its BMCs paused, so the
  power-off is in flight): the new leader fences and recovers, each VM
  starts once, the BMCs power host1 off once;
- the leader SIGSTOPped past its lease during a host failure, then resumed:
  replaced, steps down at once, nothing runs twice, one power-off (the
  store's refusal of a superseded epoch's writes is proven in
  tests/store/test_leadership_contract.py and tests/coord: here the
  resumed engine learned of its lost lease before it wrote);
- the leader cut off from etcd: steps down, another takes over, no host
  suspected;
- the leader cut off from the hosts but not from etcd: it sees every host
  silent at once, suspects, fails and fences nothing (its witness and the
  owners still hear them), and after a hold-down hands leadership to a
  controller that hears them, without taking it back once healed;
- etcd without quorum: no recovery action starts for a powered-off host;
  once quorum returns, it is fenced and its VM recovered;
- a rolling restart of every controller: no host suspected.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from labdiag import host_story
from vmha.adapters.cloud.libvirt import domain_uuid
from vmha.domain.ring import Ring
from vmha.lab import bmcs, controllers, faults, net, state, vms
from vmha.lab import lab as lab_ops

pytestmark = pytest.mark.slow

LEASE_S = 3.0
CONTROLLERS = ("controller1", "controller2", "controller3")
POLICY = {"host": "auto", "guest": "auto", "priority": 500}
SETTINGS = lab_ops.LabSettings(
    hosts=3, heartbeat_interval_s=0.5, watchdog_timeout_s=3.0, controller_port=8797,
    heartbeat_port=8798, controllers=3, lease_s=LEASE_S,
    controller={"host_return_healthy_s": 3.0, "fence_rate_interval_s": 1.0,
                "verify_poll_s": 0.5, "job_poll_s": 0.5, "fence_poll_s": 0.5},
)
POWER_OFF_LINE = re.compile(r"reset (ForceOff|GracefulShutdown|Off)|power off")


@dataclass
class Watcher:
    """Per (domain uuid, host): the spans its QEMU was seen in /proc."""

    lab_dir: Path
    seen: dict[tuple[str, str], list[list[float]]] = field(default_factory=dict)
    twice: list[tuple[float, str, list[str]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        st = state.load(self.lab_dir)
        while not self.stop.is_set():
            now = time.time()
            for uuid, hosts in vms.qemu_processes(st).items():
                if len(hosts) > 1:
                    self.twice.append((now, uuid, hosts))
                for host in hosts:
                    spans = self.seen.setdefault((uuid, host), [])
                    if spans and now - spans[-1][1] < 1.0:
                        spans[-1][1] = now
                    else:
                        spans.append([now, now])
            self.stop.wait(0.2)

    def starts_since(self, uuid: str, t: float) -> list[tuple[str, float]]:
        """(host, start) of every run of the domain that began after `t`."""
        return sorted(((h, s[0]) for (u, h), spans in self.seen.items() if u == uuid
                       for s in spans if s[0] > t), key=lambda x: x[1])


@dataclass
class Lab:
    dir: Path
    token: str
    watcher: Watcher
    ids: dict[str, str]

    def api(self) -> httpx.Client:
        """A client of a controller that runs uncut (followers forward changes)."""
        return httpx.Client(base_url=controllers.api_url(state.load(self.dir)), timeout=10,
                            headers={"Authorization": f"Bearer {self.token}"})

    def get(self, path: str, **params: Any) -> Any:
        with self.api() as client:
            resp = client.get(path, params=params)
            resp.raise_for_status()
            return resp.json()

    def events(self, etype: str, subject: str | None = None, since: int = 0) -> list[Any]:
        params: dict[str, Any] = {"type": etype, "since": since, "limit": 500}
        if subject:
            params["subject"] = subject
        return list(self.get("/v1/events", **params)["items"])

    def cursor(self) -> int:
        since = 0
        while True:
            page = self.get("/v1/events", since=since, limit=500)
            if not page["items"]:
                return since
            since = page["next_since"]

    def leader(self) -> str:
        # (an election after a fault takes a busy machine's etcd longer than 30 s)
        return controllers.wait_leader(state.load(self.dir), 120)

    def controller(self, name: str) -> dict[str, Any]:
        got: dict[str, Any] = state.load(self.dir)["controllers"][name]
        return got

    def vm(self, name: str) -> dict[str, Any]:
        got: dict[str, Any] = vms.status(self.dir)["instances"][name]
        return got

    def power_offs(self, host: str) -> int:
        """Power-offs the host's BMC emulators carried out (their log)."""
        log = Path(state.load(self.dir)["hosts"][host]["dir"]) / "bmc.log"
        return len(POWER_OFF_LINE.findall(log.read_text())) if log.exists() else 0


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
        return httpx.get(f"http://{address}:8080/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, lab_ready: None) -> Iterator[Lab]:
    lab_dir = tmp_path_factory.mktemp("ctllab")
    watcher = Watcher(lab_dir)
    thread = None
    try:
        st = lab_ops.up(lab_dir, SETTINGS)
        vms.create(lab_dir, 2, [POLICY, POLICY], hosts=["host1", "host1"], wait=False)
        vms.wait_running(lab_dir, ["vm1", "vm2"])
        thread = threading.Thread(target=watcher.run, daemon=True)
        thread.start()
        ids = {n: v["id"] for n, v in state.load(lab_dir)["vms"].items()}
        yield Lab(lab_dir, st["controller"]["token"], watcher, ids)
    finally:
        watcher.stop.set()
        if thread is not None:
            thread.join(5)
        faults.down(lab_dir)


@pytest.fixture(autouse=True)
def never_twice(lab: Lab) -> Iterator[None]:
    yield
    assert lab.watcher.twice == [], f"a guest ran on two hosts at once: {lab.watcher.twice[:3]}"


def carrier(lab: Lab) -> str:
    """The host that runs the most of the lab's VMs."""
    placed = [lab.vm(n)["host"] for n in lab.ids]
    return max(("host1", "host2", "host3"), key=placed.count)


def back_up(lab: Lab, host: str) -> None:
    """Heal and power the host on again; wait until the controllers have it up."""
    faults.heal(lab.dir, host)
    if lab_ops.status(lab.dir)["hosts"][host]["state"] == "powered-off":
        faults.power_on(lab.dir, host)
    try:
        wait_for(lambda: lab.get(f"/v1/hosts/{host}")["state"] == "up", 150, f"{host} up again")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{host_story(lab.get, lab.dir, host)}") from None


def restart(lab: Lab, name: str) -> None:
    """Start a stopped controller again (a follower now) and wait for its API."""
    faults.power_on(lab.dir, name)
    wait_for(lambda: lab_ops.status(lab.dir)["controllers"][name]["answers"], 120,
             f"{name} answering again")


def bmc_pids(lab: Lab, host: str) -> list[int]:
    bmc = state.load(lab.dir)["hosts"][host]["bmc"]
    return [int(bmc[kind]["pid"]) for kind in bmcs.KINDS]


def job_state(lab: Lab, host: str) -> str | None:
    jobs = lab.get("/v1/jobs", subject=host, sort="created_at", desc="true", limit=1)["items"]
    return jobs[0]["state"] if jobs else None


def recovered(lab: Lab, moved: list[str], victim: str, since_t: float) -> None:
    """Every moved VM answers on a survivor, and started exactly once since."""
    for name in moved:
        wait_for(lambda n=name: app_answers(lab.vm(n)["address"])
                 and lab.vm(n)["host"] not in (None, victim), 120, f"{name} on a survivor")
    for name in moved:
        starts = lab.watcher.starts_since(domain_uuid(lab.ids[name]), since_t)
        assert len(starts) == 1, f"{name} started {len(starts)} times: {starts}"
        assert lab.vm(name)["qemu_on"] == [starts[0][0]]


def test_status_shows_three_controllers_and_one_leader(lab: Lab) -> None:
    status = lab_ops.status(lab.dir)
    block = status["controllers"]
    assert sorted(block) == ["controller1", "controller2", "controller3"]
    leaders = [n for n, c in block.items() if c["leader"]]
    assert len(leaders) == 1, block
    # the hosts are shared out over the three on the hash ring, each once
    owned = [h for c in block.values() for h in c["owned_hosts"]]
    assert sorted(owned) == ["host1", "host2", "host3"]
    assert all(c["pid"] and c["state"] == "running" and c["answers"] for c in block.values())
    assert status["controller"]["url"] == block[leaders[0]]["url"]
    assert all(m["running"] for m in status["etcd"]["members"].values())
    # every controller sees the same group and leader
    for c in block.values():
        with httpx.Client(base_url=c["url"], timeout=5,
                          headers={"Authorization": f"Bearer {lab.token}"}) as client:
            group = client.get("/v1/controllers").json()
        assert group["leader"] == leaders[0]
        assert [m["name"] for m in group["members"]] == sorted(block)
        assert {m["name"]: m["owned_hosts"] for m in group["members"]} == {
            n: len(c["owned_hosts"]) for n, c in block.items()}


def test_leader_killed_while_fencing_new_leader_completes(lab: Lab) -> None:
    victim = carrier(lab)
    moved = [n for n in lab.ids if lab.vm(n)["host"] == victim]
    old = lab.leader()
    offs = lab.power_offs(victim)
    paused = bmc_pids(lab, victim)
    t0 = time.time()
    for pid in paused:  # the leader's power-off request stays in flight
        os.kill(pid, signal.SIGSTOP)
    try:
        try:
            faults.fail(lab.dir, victim, "network-down")
            wait_for(lambda: job_state(lab, victim) == "fencing", 60, f"{victim} being fenced",
                     every_s=0.1)
            pid = lab.controller(old)["pid"]
            os.kill(pid, signal.SIGKILL)
        finally:
            for pid in paused:
                os.kill(pid, signal.SIGCONT)
        new = wait_for(lambda: (n := lab.leader()) != old and n, 60, "a new leader")
        assert new != old
        recovered(lab, moved, victim, t0)
        assert lab.power_offs(victim) == offs + 1, "the BMCs powered the host off more than once"
        assert len(lab.events("host.fenced", victim)) >= 1
        assert job_state(lab, victim) == "done"
    finally:  # the next tests need both back, whatever happened here
        if lab_ops.status(lab.dir)["controllers"][old]["state"] == "powered-off":
            restart(lab, old)
        back_up(lab, victim)


def test_leader_paused_past_its_lease_is_replaced_and_steps_down_when_resumed(
        lab: Lab) -> None:
    victim = carrier(lab)
    moved = [n for n in lab.ids if lab.vm(n)["host"] == victim]
    old = lab.leader()
    ctl = lab.controller(old)
    log = Path(ctl["config"]).parent / "serve.log"
    seen = log.stat().st_size
    offs, since, t0 = lab.power_offs(victim), lab.cursor(), time.time()
    faults.fail(lab.dir, victim, "network-down")
    try:
        wait_for(lambda: lab.events("host.suspect", victim, since), 30, f"{victim} suspect",
                 every_s=0.1)
        os.kill(ctl["pid"], signal.SIGSTOP)  # mid-detection: its engine is about to act
        try:
            new = wait_for(lambda: (n := lab.leader()) != old and n, 60,
                           "a leader instead of the paused one")
            recovered(lab, moved, victim, t0)
        finally:
            os.kill(ctl["pid"], signal.SIGCONT)
        wait_for(lambda: (controllers.groups(state.load(lab.dir))[old] or {}).get("epoch") == 0,
                 60, f"{old} stepping down once resumed")
        time.sleep(2)  # whatever the resumed engine had pending has run by now
        # (In the runs so far its first tick saw the 10+ s gap, called itself
        # overloaded and judged no host, and its lease deadline deposed it.)
        text = log.read_bytes()[seen:].decode(errors="replace")
        assert "no longer leads" in text
        fenced = lab.events("host.fenced", victim, since)
        assert fenced, f"{victim}'s VMs moved without host.fenced"
        sent = lab.power_offs(victim) - offs
        print(f"{victim} fenced ({sent} power-off): {fenced[-1]['payload']['reason']}")
        assert sent <= 1, f"the BMCs powered {victim} off {sent} times: the old leader acted"
        if not sent:
            # The new leader came late enough (a slow machine: a pause, a lease,
            # an election, its own detection) that the cut-off host's watchdog
            # had reset it first (~23 s: isolation 3 + 10 s, watchdog 10 s), so
            # the fence was proven without a power-off: a status read of OFF or
            # the agent's self-fence deadline (vmha.domain.recovery).
            reason = fenced[-1]["payload"]["reason"]
            assert "no power-off sent" in reason or "self-fence deadline passed" in reason, reason
        assert lab.leader() == new
        recovered(lab, moved, victim, t0)  # still exactly one start each
        assert lab_ops.status(lab.dir)["controllers"][old]["answers"]
    finally:  # the next tests need it back, whatever happened here
        back_up(lab, victim)


def test_leader_cut_off_from_etcd_steps_down_without_false_failures(lab: Lab) -> None:
    old = lab.leader()
    since = lab.cursor()
    faults.fail(lab.dir, old, "etcd-link-down")
    try:
        new = wait_for(lambda: (n := lab.leader()) != old and n, 60,
                       "a leader instead of the cut one")
        wait_for(lambda: (controllers.groups(state.load(lab.dir))[old] or {}).get("epoch")
                 == 0, 30, f"{old} stepping down")
        time.sleep(5)  # the new leader's detectors run past the hand-over
    finally:
        faults.heal(lab.dir, old)
    assert lab.leader() == new
    for etype in ("host.suspect", "host.failed"):
        assert lab.events(etype, since=since) == [], f"{etype} during the hand-over"
    wait_for(lambda: (controllers.groups(state.load(lab.dir))[old] or {}).get("healthy"), 60,
             f"{old} back in touch with etcd")


def settled_leader(lab: Lab, for_s: float = 10.0, timeout_s: float = 120.0) -> str:
    """The leader once the same controller has led for `for_s` seconds: right
    after an election the followers have not yet published their reports as
    the new leader's witness, and until they do it judges its hosts alone
    (vmha.engine.shard: no usable report), which a cut right then shows."""
    deadline = time.monotonic() + timeout_s
    leader, since = lab.leader(), time.monotonic()
    while time.monotonic() - since < for_s:
        assert time.monotonic() < deadline, f"no controller kept the lead for {for_s:g} s"
        time.sleep(1.0)
        now = lab.leader()
        if now != leader:
            leader, since = now, time.monotonic()
    return leader


def test_leader_cut_off_from_the_hosts_hands_over_and_fences_nothing(lab: Lab) -> None:
    old = settled_leader(lab)  # the earlier tests moved the lead around
    log = Path(lab.controller(old)["config"]).parent / "serve.log"
    seen = log.stat().st_size
    since = lab.cursor()
    offs = {h: lab.power_offs(h) for h in ("host1", "host2", "host3")}
    faults.fail(lab.dir, old, "hosts-link-down")
    try:
        # every host goes silent for it at once; the other controllers (its
        # witness for its own share, the owners for theirs) still hear them,
        # so it suspects none (cross-controller confirmation), and after a
        # hold-down it hands leadership to one of them (vmha.domain.handover)
        new = wait_for(lambda: (n := lab.leader()) != old and n, 60,
                       f"{old} never handed leadership over")
        text = log.read_bytes()[seen:].decode(errors="replace")
        assert "hands leadership over: it hears 0 of 3 hosts while controller" in text
        new_log = Path(lab.controller(new)["config"]).parent / "serve.log"
        new_seen = new_log.stat().st_size
        time.sleep(5)  # the new leader's first ticks, its BMC fast path
        # the cut-off one does not stand again (the lead may still move among
        # the others: a busy machine's etcd can miss a lease renewal)
        assert lab.leader() != old
        for etype in ("host.suspect", "host.failed", "host.fenced", "controller.isolated"):
            assert lab.events(etype, since=since) == [], f"{etype} while only it was cut off"
        assert {h: lab.power_offs(h) for h in offs} == offs
    finally:
        faults.heal(lab.dir, old)
    for host in ("host1", "host2", "host3"):
        wait_for(lambda h=host: lab.get(f"/v1/hosts/{h}")["state"] == "up", 120,
                 f"{host} up again for the leader")
    time.sleep(3)
    # hearing the hosts again, it does not take the lead back from a leader
    # that keeps it (it may win a later election the new one caused itself)
    lost = "no longer leads" in new_log.read_bytes()[new_seen:].decode(errors="replace")
    assert lab.leader() == new or lost


def test_no_recovery_without_etcd_quorum_and_recovery_once_it_returns(lab: Lab) -> None:
    victim = carrier(lab)
    moved = [n for n in lab.ids if lab.vm(n)["host"] == victim]
    offs, since = lab.power_offs(victim), lab.cursor()
    for member in ("etcd2", "etcd3"):
        faults.fail(lab.dir, member, "power-off")
    try:
        try:
            wait_for(lambda: controllers.leader_of(controllers.groups(state.load(lab.dir)))
                     is None, 30, "every controller stepping down without quorum")
            t0 = time.time()
            faults.fail(lab.dir, victim, "power-off")
            # detection goes on: the controller whose share the victim is says
            # it hears it no longer, while nothing is fenced or restarted for
            # 12 s (what a leader needs to detect, fence and restart)
            owner = lab.controller(Ring(CONTROLLERS).owner(victim) or "")
            reported = wait_for(lambda: victim in silent_at(lab, owner["url"]), 30,
                                f"{victim} never reported silent without quorum", every_s=0.5)
            time.sleep(max(0.0, t0 + 12 - time.time()))
            assert reported
            assert lab.events("host.fenced", victim, since) == []
            assert lab.power_offs(victim) == offs
            for name in moved:
                assert lab.watcher.starts_since(domain_uuid(lab.ids[name]), t0) == []
        finally:
            for member in ("etcd2", "etcd3"):
                faults.power_on(lab.dir, member)
        lab.leader()
        recovered(lab, moved, victim, t0)
        assert lab.events("host.fenced", victim, since)
    finally:  # the next test needs it back, whatever happened here
        back_up(lab, victim)


def silent_at(lab: Lab, url: str) -> list[str]:
    """The hosts of its share a controller hears no longer (GET /v1/controllers)."""
    with contextlib.suppress(httpx.HTTPError), httpx.Client(
            base_url=url, timeout=2, headers={"Authorization": f"Bearer {lab.token}"}) as c:
        return list(c.get("/v1/controllers").json().get("silent", []))
    return []


def test_rolling_restart_of_every_controller_suspects_no_host(lab: Lab) -> None:
    since = lab.cursor()
    for name in ("controller1", "controller2", "controller3"):
        pid = lab.controller(name)["pid"]
        os.kill(pid, signal.SIGTERM)  # a clean stop: it resigns its lease
        wait_for(lambda p=pid: not net.alive(p), 60, f"{name} stopped")
        restart(lab, name)
        lab.leader()
    time.sleep(3)
    for etype in ("host.suspect", "host.failed"):
        assert lab.events(etype, since=since) == [], f"{etype} during the rolling restart"
