"""A paused segment still recovers the hosts proven dead (issue 11 item 13), for real.

A five-host lab with real QEMU guests: vm1, vm2, vm3 on host1, host2,
host3 and vm4 on host4. host3's BMC emulators are stopped, then host1,
host2 and host3 are cut off the network at once (their switch ports
down): three of five hosts look down, more than the segment's threshold
(set to 10 % here, so that one host still down keeps it paused), and the
mass-failure guard pauses automatic fencing in the segment: no power-off
is sent. The cut hosts have lost the controller and every peer: their
agents self-fence (the lab watchdog powers each host off). host1's and
host2's BMC emulators stay reachable (management network) and read power
off, which proves them dead: each is fenced without a power-off, and
their guests start on host4 or host5 while host3 still keeps the segment
paused. host3 has no BMC to ask: it is proven dead by its self-fence
deadline, once every peer sample for a whole window showed it cut off
from the controller and from a majority of its peers (host4 and host5
cannot reach it, host1's and host2's BMCs read off); then the guard
resumes by itself, nothing being down any more. A watcher reads /proc
every 0.2 s: no guest ever runs on two hosts, and each moved guest's QEMU
on its old host is gone before it starts again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from test_lab_vms import Watcher, app_answers, wait_for

from vmha.adapters.cloud.libvirt import domain_uuid
from vmha.lab import faults, state, vms
from vmha.lab import lab as lab_ops

pytestmark = pytest.mark.slow

CUT = ("host1", "host2", "host3")
SURVIVORS = ("host4", "host5")
PLACES = {"vm1": "host1", "vm2": "host2", "vm3": "host3", "vm4": "host4"}
SETTINGS = lab_ops.LabSettings(
    hosts=5, heartbeat_interval_s=0.5, isolation_timeout_s=2.0, watchdog_timeout_s=2.0,
    controller_port=8799, heartbeat_port=8800,
    # look for proof of death every 2 s while paused (default 10 s)
    # (a BMC that does not answer must not stretch the self-fence samples)
    controller={"proof_retry_s": 2.0, "bmc_status_timeout_s": 1.0,
                "fence_rate_interval_s": 2.0, "verify_poll_s": 0.5, "job_poll_s": 0.5,
                "fence_poll_s": 0.5, "host_return_healthy_s": 3.0},
)


@dataclass
class Outcome:
    events: list[dict[str, Any]]  # since the cut, oldest first
    jobs: dict[str, dict[str, Any]]  # cut host -> its recovery job
    lab: dict[str, dict[str, Any]]  # the lab's view of the hosts at the end
    placed: dict[str, dict[str, Any]]  # vm -> vms.status() entry at the end
    watcher: Watcher
    ids: dict[str, str]  # vm -> instance id

    def first(self, etype: str, subject: str | None = None) -> dict[str, Any] | None:
        return next((e for e in self.events if e["type"] == etype
                     and (subject is None or e["subject"] == subject)), None)


def _events(client: httpx.Client, since: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = client.get("/v1/events", params={"since": since, "limit": 500}).json()
        if not page["items"]:
            return out
        out += page["items"]
        since = page["next_since"]


def _cursor(client: httpx.Client) -> int:
    """The `since` that lists only events still to come."""
    since = 0
    while True:
        page = client.get("/v1/events", params={"since": since, "limit": 500}).json()
        if not page["items"]:
            return since
        since = page["next_since"]


def _job_of(client: httpx.Client, host: str) -> dict[str, Any]:
    jobs = client.get("/v1/jobs", params={"kind": "host_recovery", "subject": host,
                                          "limit": 10}).json()["items"]
    assert jobs, f"no recovery job for {host}"
    job: dict[str, Any] = jobs[-1]
    return job


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory, lab_ready: None) -> Iterator[Outcome]:
    lab_dir = tmp_path_factory.mktemp("pausedlab")
    watcher = Watcher(lab_dir)
    thread = None
    try:
        st = lab_ops.up(lab_dir, SETTINGS)
        ctl = st["controller"]
        client = httpx.Client(base_url=ctl["url"], timeout=10,
                              headers={"Authorization": f"Bearer {ctl['token']}"})
        client.patch(f"/v1/segments/{lab_ops.SEGMENT}",
                     json={"mass_failure_threshold": 0.1}).raise_for_status()
        for host in PLACES.values():  # vm1.. in this order
            vms.create(lab_dir, 1, [{"host": "auto", "priority": 100}], hosts=[host],
                       wait=False)
        vms.wait_running(lab_dir, list(PLACES))
        ids = {n: v["id"] for n, v in state.load(lab_dir)["vms"].items()}
        assert {n: vms.status(lab_dir)["instances"][n]["host"] for n in PLACES} == PLACES
        thread = threading.Thread(target=watcher.run, daemon=True)
        thread.start()
        since = _cursor(client)
        faults.fail(lab_dir, "host3", "bmc-down")
        for host in CUT:
            faults.fail(lab_dir, host, "network-down")
        for name in ("vm1", "vm2", "vm3"):
            wait_for(lambda n=name: app_answers(vms.status(lab_dir)["instances"][n]["address"])
                     and vms.status(lab_dir)["instances"][n]["host"] in SURVIVORS, 300,
                     f"{name} running again on a survivor")
        yield Outcome(_events(client, since), {h: _job_of(client, h) for h in CUT},
                      lab_ops.status(lab_dir)["hosts"], vms.status(lab_dir)["instances"],
                      watcher, ids)
    finally:
        watcher.stop.set()
        if thread is not None:
            thread.join(5)
        faults.down(lab_dir)


def test_the_guard_pauses_and_the_proven_dead_hosts_are_recovered_while_paused(
        outcome: Outcome) -> None:
    paused = outcome.first("segment.recovery_paused", lab_ops.SEGMENT)
    assert paused is not None, "two of five hosts cut off at once: the guard should pause"
    resumed = outcome.first("segment.recovery_resumed", lab_ops.SEGMENT)
    until = resumed["time"] if resumed is not None else float("inf")
    for host in CUT:
        fenced = outcome.first("host.fenced", host)
        assert fenced is not None, f"{host} never proven dead"
        assert paused["time"] < fenced["time"] < until, f"{host} fenced after the resume"
        reason = fenced["payload"]["reason"]
        if host == "host3":  # no BMC: only the peer samples can prove it
            assert reason.startswith("agent self-fence deadline passed"), reason
        else:
            assert "reads power off (no power-off sent" in reason, reason
    for name in ("vm1", "vm2"):  # host3, still down, keeps the segment paused meanwhile
        moved = outcome.first("instance.evacuating", outcome.ids[name])
        assert moved is not None and paused["time"] < moved["time"] < until, name
    if resumed is not None:
        assert "by operator" not in resumed["payload"]["reason"]


def test_no_power_off_is_sent_while_the_segment_is_paused(outcome: Outcome) -> None:
    resumed = outcome.first("segment.recovery_resumed", lab_ops.SEGMENT)
    until = resumed["time"] if resumed is not None else float("inf")
    for host, job in outcome.jobs.items():
        offs = [s for s in job["steps"] if s["name"].endswith(":off") and s["started_at"] < until]
        assert offs == [], f"{host}: power-off requested while paused: {offs}"


def test_the_cut_hosts_fenced_themselves(outcome: Outcome) -> None:
    for host in CUT:
        assert outcome.lab[host]["state"] == "powered-off", outcome.lab[host]
        assert outcome.lab[host]["link"]["port"] == "down"
        assert outcome.first("host.fenced", host) is not None, f"{host} never fenced"
    for host in SURVIVORS:
        assert outcome.first("host.failed", host) is None


def test_no_guest_ran_twice_and_each_left_its_host_before_starting_again(
        outcome: Outcome) -> None:
    assert outcome.watcher.twice == [], f"a guest ran on two hosts: {outcome.watcher.twice[:3]}"
    for name, old in PLACES.items():
        placed = outcome.placed[name]
        if old in SURVIVORS:
            assert placed["host"] == old and placed["qemu_on"] == [old]
            continue
        new = placed["host"]
        assert new in SURVIVORS and placed["qemu_on"] == [new], placed
        uuid = domain_uuid(outcome.ids[name])
        gone, started = outcome.watcher.ended(uuid, old), outcome.watcher.started(uuid, new)
        assert gone is not None and started is not None
        assert gone < started, f"{name}: QEMU on {old} until {gone}, on {new} from {started}"
