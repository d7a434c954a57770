"""End to end: real agents in namespaces, the real controller, real faults.

One six-host lab with its controller (`vmha serve`: engine + UDP heartbeat
receiver + agent registration) runs a single timeline of faults, one kind
per host, and the tests below read what the controller recorded:

  t=0   host4: 30 % random loss for 65 s     -> never failed
        host3: controller link cut for 15 s   -> partitioned, never failed
        host5: agent killed, restarted at once -> no state change
        host5: its BMCs stopped
  t=20  host5: agent killed for good          -> failed; no BMC, so fenced only
                                                 once its self-fence deadline passed
  t=30  host1: power off                      -> failed at once by a BMC read
                                                 (off), fenced (status read: off)
  t=40  host2: network down                   -> failed, fenced through Redfish:
                                                 its processes are gone
  t=65  host4 healed; host6 untouched throughout

Three of six hosts fail (50 %), which stays under the mass-failure guard's
"more than half" so fencing is never paused. The controller link of host3
is back before the others die: a host cut off from the controller keeps
feeding its watchdog only while it reaches a majority of its segment, and
with three of six hosts dead it would rightly fence itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from vmha.lab import faults, state
from vmha.lab import lab as lab_ops

pytestmark = pytest.mark.slow

INTERVAL_S = 0.5
SETTINGS = lab_ops.LabSettings(
    hosts=6, heartbeat_interval_s=INTERVAL_S, isolation_timeout_s=10.0,
    watchdog_timeout_s=3.0, controller_port=8795, heartbeat_port=8796,
    # three hosts of one segment fail within 20 s: let the fencing rate
    # limit (default one per 30 s) pass them all inside the timeline
    controller={"fence_rate_interval_s": 5.0},
)


@dataclass
class Timeline:
    events: list[dict[str, Any]]
    faults_at: dict[str, float]  # "host1" -> wall time the fault was injected
    hosts: dict[str, dict[str, Any]]  # the controller's view at the end
    lab: dict[str, dict[str, Any]]  # the lab's view at the end (power, processes)
    watchdog_fired: set[str]  # hosts whose own watchdog reset them (their host.log)


def api(st: dict[str, Any]) -> httpx.Client:
    ctl = st["controller"]
    return httpx.Client(base_url=ctl["url"], timeout=10,
                        headers={"Authorization": f"Bearer {ctl['token']}"})


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def all_up(client: httpx.Client) -> bool:
    hosts = client.get("/v1/hosts").json()["items"]
    return len(hosts) == SETTINGS.hosts and all(
        h["state"] == "up" and h["heartbeat_age_s"] is not None for h in hosts
    )


def all_events(client: httpx.Client) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        page = client.get("/v1/events", params={"limit": 1000, "since": len(events) and
                                                 events[-1]["id"]})
        page.raise_for_status()
        items = page.json()["items"]
        if not items:
            return events
        events.extend(items)


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


def heard_at(client: httpx.Client, host: str) -> float | None:
    """When the controller last heard `host` (its clock is ours)."""
    age = client.get(f"/v1/hosts/{host}").json()["heartbeat_age_s"]
    return None if age is None else time.time() - age


def restart_gap(client: httpx.Client, host: str, killed: float, last_old: float) -> float:
    """How long the controller heard nothing of `host` across an agent
    restart whose old agent was gone at `killed`: from the old agent's last
    heartbeat (`last_old`) to the new one's first (a busy machine starts
    agents slowly)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        at = heard_at(client, host)
        if at is not None and at > killed + 0.05:
            return at - last_old
        time.sleep(0.05)
    raise AssertionError(f"{host}'s restarted agent not heard within 15 s")


def run_timeline(lab_dir: Path, client: httpx.Client) -> dict[str, float]:
    at: dict[str, float] = {}
    t0 = time.time()
    faults.fail(lab_dir, "host4", "loss", 30)
    faults.fail(lab_dir, "host3", "controller-link-down")
    # Restarted within the grace period: before its silence reaches the
    # detector's threshold (~3 intervals), so nothing may change.
    faults.fail(lab_dir, "host5", "agent-kill")
    killed = time.time()  # its old agent is gone: nothing of it arrives later
    last_old = heard_at(client, "host5") or killed
    faults.restart_agent(lab_dir, "host5")
    faults.fail(lab_dir, "host5", "bmc-down")
    at["host5-restart-gap"] = restart_gap(client, "host5", killed, last_old)
    sleep_until(t0 + 15)
    faults.heal(lab_dir, "host3")
    wait_for(lambda: client.get("/v1/hosts/host3").json()["state"] == "up", 30,
             "host3 up again once its controller link is back")
    # host3 is up before the others die (see above); when a busy machine took
    # longer than 4 s for it, the rest of the timeline moves on with it
    t0 = max(t0, time.time() - 16)
    sleep_until(t0 + 20)
    at["host5"] = time.time()
    faults.fail(lab_dir, "host5", "agent-kill")
    sleep_until(t0 + 30)
    at["host1"] = time.time()
    faults.fail(lab_dir, "host1", "power-off")
    sleep_until(t0 + 40)
    at["host2"] = time.time()
    faults.fail(lab_dir, "host2", "network-down")
    sleep_until(t0 + 65)
    faults.heal(lab_dir, "host4")
    return at


@pytest.fixture(scope="module")
def timeline(tmp_path_factory: pytest.TempPathFactory, lab_ready: None) -> Iterator[Timeline]:
    lab_dir = tmp_path_factory.mktemp("e2e-lab")
    try:
        st = lab_ops.up(lab_dir, SETTINGS)
        assert st["controller"]["url"], f"the lab started no controller: {st['controller']}"
        with api(st) as client:
            wait_for(lambda: all_up(client), 60, "six registered hosts heartbeating")
            time.sleep(20)  # let the detectors learn the hosts' rhythm
            at = run_timeline(lab_dir, client)
            events = all_events(client)
            hosts = {h["name"]: h for h in client.get("/v1/hosts").json()["items"]}
        fired = {name for name, h in state.load(lab_dir)["hosts"].items()
                 if "watchdog not fed" in (Path(h["dir"]) / "host.log").read_text()}
        yield Timeline(events, at, hosts, lab_ops.status(lab_dir)["hosts"], fired)
    finally:
        faults.down(lab_dir)


def of(timeline: Timeline, host: str, etype: str | None = None) -> list[dict[str, Any]]:
    return [e for e in timeline.events
            if e["subject"] == host and (etype is None or e["type"] == etype)]


def first_time(timeline: Timeline, host: str, etype: str) -> float:
    found = of(timeline, host, etype)
    assert found, f"no {etype} for {host}; its events: {[e['type'] for e in of(timeline, host)]}"
    return float(found[0]["time"])


def test_powered_off_host_fails_fast(timeline: Timeline) -> None:
    detect = first_time(timeline, "host1", "host.failed") - timeline.faults_at["host1"]
    # the BMC read on an overdue heartbeat, or ~5 intervals of silence and a
    # peer round: ~1 s at 0.5 s heartbeats (bench/detect_lab.py measures it);
    # the test asks for what matters, a verdict before a host cut off would
    # even start to fence itself (its isolation timeout)
    print(f"host1 declared failed {detect:.1f} s after its power-off")
    assert detect < SETTINGS.isolation_timeout_s, f"host1 took {detect:.1f} s to be declared failed"
    assert of(timeline, "host1", "host.fencing"), "fencing was never requested for host1"
    # its BMC is read (issue 11 item 12: at once when the heartbeat is
    # overdue, or by the confirmation round if the detector is quicker at
    # 0.5 s heartbeats): power off is the proof, not the peers' votes
    (failed, *_) = of(timeline, "host1", "host.failed")
    assert failed["payload"]["reason"] == "BMC reports power off", failed


def test_network_cut_host_fails_and_is_fenced_through_its_bmc(timeline: Timeline) -> None:
    failed = first_time(timeline, "host2", "host.failed")
    assert failed - timeline.faults_at["host2"] < SETTINGS.isolation_timeout_s  # as above
    (fenced,) = of(timeline, "host2", "host.fenced")
    assert "redfish reports power off" in fenced["payload"]["reason"]
    print(f"host2 fenced {fenced['time'] - failed:.1f} s after it was declared failed")
    # powered off by its BMC before its own watchdog would act (~13 s after the cut)
    assert "host2" not in timeline.watchdog_fired
    assert timeline.lab["host2"]["state"] == "powered-off"
    assert timeline.lab["host2"]["pids"] == []


def test_powered_off_host_is_confirmed_off_by_a_status_read(timeline: Timeline) -> None:
    (fenced,) = of(timeline, "host1", "host.fenced")
    assert "reports power off" in fenced["payload"]["reason"]


def test_controller_link_cut_is_partitioned_never_failed_nor_fenced(timeline: Timeline) -> None:
    types = [e["type"] for e in of(timeline, "host3")]
    assert "host.partitioned" in types
    assert "host.failed" not in types and "host.fencing" not in types
    assert timeline.hosts["host3"]["state"] == "up"


def test_lossy_host_is_never_failed(timeline: Timeline) -> None:
    types = [e["type"] for e in of(timeline, "host4")]
    assert "host.failed" not in types and "host.fencing" not in types
    suspects = types.count("host.suspect")
    print(f"host4 under 30 % loss for 65 s: {suspects} transient suspect(s)")


def test_agent_restarted_within_grace_changes_nothing_but_a_dead_agent_fails(
    timeline: Timeline,
) -> None:
    host5 = of(timeline, "host5")
    before = [e for e in host5 if e["time"] < timeline.faults_at["host5"]]
    gap = timeline.faults_at["host5-restart-gap"]
    print(f"host5 silent {gap:.2f} s across its agent's restart; events then: "
          f"{[e['type'] for e in before]}")
    if gap < 2.5 * INTERVAL_S:  # within the grace (~3 intervals): nothing may change
        assert before == [], f"a quick agent restart changed host5: {before}"
    else:  # a busy machine restarted it slowly: a passing suspicion at most
        assert {e["type"] for e in before} <= {"host.suspect", "host.up"}, before
    assert first_time(timeline, "host5", "host.failed") > timeline.faults_at["host5"]
    assert of(timeline, "host5", "host.fencing")
    # both BMCs down: the self-fence deadline is the level that confirms
    (fenced,) = of(timeline, "host5", "host.fenced")
    assert "self-fence deadline passed" in fenced["payload"]["reason"]
    assert timeline.lab["host5"]["state"] == "powered-off"  # its watchdog did reset it


def test_untouched_host_stays_up(timeline: Timeline) -> None:
    assert of(timeline, "host6") == []
    assert timeline.hosts["host6"]["state"] == "up"
