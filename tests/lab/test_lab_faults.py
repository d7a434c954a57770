"""End to end: three lab hosts, a real receiver, real faults.

One lab for the module (heartbeats every 0.2 s, isolation and watchdog
timeouts long enough never to fire here); every test heals what it broke.
The last test tears the lab down and checks nothing is left.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from labkit import Recorder, wait_for

import netcheck
from vmha.adapters.fencing.config import BmcEndpoint, static_lookup
from vmha.adapters.fencing.ipmi import IpmiFencer
from vmha.adapters.fencing.redfish import RedfishFencer
from vmha.adapters.heartbeat import Datagram, Kind, encode
from vmha.domain.errors import TemporaryError
from vmha.domain.model import Host
from vmha.lab import faults, net, state
from vmha.lab import lab as lab_ops
from vmha.lab.agentapi import AGENT_PORT
from vmha.ports import PowerState

pytestmark = pytest.mark.slow
INTERVAL = 0.2
RESULTS: dict[str, Any] = {}
T = TypeVar("T")


@pytest.fixture(scope="module")
def cluster(lab_factory: Any, receiver_factory: Any) -> tuple[Path, Recorder]:
    lab_dir = lab_factory(hosts=3, heartbeat_interval_s=INTERVAL, isolation_timeout_s=60.0,
                          watchdog_timeout_s=30.0)
    return lab_dir, receiver_factory(lab_dir)


def beating(rec: Recorder, host: str, within: float = 1.0) -> bool:
    last = rec.last(host)
    return last is not None and time.time() - last.received < within


def silent_since(rec: Recorder, host: str, t: float) -> bool:
    """No heartbeat of `host` sent after `t` arrived. Judged by send time:
    on a busy machine the receiving thread may read one sent just before
    the fault late, and the fault may take a while to put in place."""
    return not [b for b in rec.of(host) if b.sent_at > t]


def send(data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, ("198.18.0.1", 8791))


def test_every_host_sends_signed_heartbeats(cluster: tuple[Path, Recorder]) -> None:
    lab_dir, rec = cluster
    assert wait_for(lambda: all(beating(rec, h) for h in ("host1", "host2", "host3")), 30)
    status = lab_ops.status(lab_dir)
    assert {f"vmha-host{i}" for i in (1, 2, 3)} <= set(net.list_netns())
    for h in status["hosts"].values():
        assert h["state"] == "running"
        assert h["pid1"] in h["pids"] and h["agent_pid"] in h["pids"]
        assert net.owned_by_lab(h["agent_pid"], "vmha.agent")
    assert rec.metrics["bad_signature"] == 0 and rec.metrics["replayed"] == 0


def test_forged_replayed_unknown_and_garbage_are_counted(cluster: tuple[Path, Recorder]) -> None:
    _, rec = cluster
    assert wait_for(lambda: "host1" in rec.raw, 10)
    before = rec.metrics
    send(rec.raw["host1"])  # a replay of a genuine datagram
    forged = Datagram(Kind.HEARTBEAT, "host1", b"\x01" * 8, 10**9, time.time())
    send(encode(forged, b"not the secret"))
    send(encode(Datagram(Kind.HEARTBEAT, "intruder", b"\x01" * 8, 1, time.time()), b"k"))
    send(b"hello")
    expected = {"replayed": 1, "bad_signature": 1, "unknown_host": 1, "malformed": 1}
    assert wait_for(lambda: all(rec.metrics[k] - before[k] >= n for k, n in expected.items()),
                    10)
    assert rec.metrics["replayed"] - before["replayed"] == 1


def test_controller_link_down_cuts_heartbeats_but_not_peers(
    cluster: tuple[Path, Recorder],
) -> None:
    lab_dir, rec = cluster
    faults.fail(lab_dir, "host1", "controller-link-down")
    cut = time.time()  # in place once fail() returns
    try:
        time.sleep(1.0)
        assert silent_since(rec, "host1", cut)
        assert wait_for(lambda: beating(rec, "host2") and beating(rec, "host3"), 10)
        assert lab_ops.probe_via(lab_dir, "host2", ["host1"]) == {"host1": True}
        assert probe_from_netns(lab_dir, "host2", via="host1") == {"host2": True, "host3": True}
    finally:
        faults.heal(lab_dir, "host1")
    assert wait_for(lambda: beating(rec, "host1", 0.5), 30)


def probe_from_netns(lab_dir: Path, netns_host: str, via: str) -> Any:
    """Call `via`'s agent API from inside `netns_host` (not from the controller)."""
    st = state.load(lab_dir)
    url = f"http://{st['hosts'][via]['address']}:8792/v1/probe"
    code = (
        "import json, sys, urllib.request as u\n"
        f"r = u.Request({url!r}, method='POST', data=b'{{\"targets\": [\"host2\", \"host3\"]}}',"
        f" headers={{'Authorization': 'Bearer {st['agent_token']}'}})\n"
        "print(u.urlopen(r, timeout=5).read().decode())\n"
    )
    out = subprocess.run(["ip", "netns", "exec", st["hosts"][netns_host]["netns"],
                          sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_network_down_cuts_everything(cluster: tuple[Path, Recorder]) -> None:
    lab_dir, rec = cluster
    faults.fail(lab_dir, "host2", "network-down")
    cut = time.time()  # in place once fail() returns
    try:
        time.sleep(1.0)
        assert silent_since(rec, "host2", cut)
        # (a probe timeout a busy peer meets: host2 is cut, however long one waits)
        assert lab_ops.probe_via(lab_dir, "host1", ["host2", "host3"], 3.0) == {
            "host2": False, "host3": True}
    finally:
        faults.heal(lab_dir, "host2")
    assert wait_for(lambda: beating(rec, "host2", 0.5), 30)


def test_random_loss_drops_about_that_share(cluster: tuple[Path, Recorder]) -> None:
    lab_dir, rec = cluster
    faults.fail(lab_dir, "host3", "loss", 30)
    try:
        t0 = time.time()

        def sent() -> int:
            got = rec.of("host3", since=t0 + 0.05)
            return got[-1].seq - got[0].seq + 1 if got else 0

        # ~50 sent (10 s on a quiet machine), however slowly a busy one sends
        assert wait_for(lambda: sent() >= 50, 60, 0.1)
        got = rec.of("host3", since=t0 + 0.05)
    finally:
        faults.heal(lab_dir, "host3")
    sent_n = got[-1].seq - got[0].seq + 1
    missing = 1 - len(got) / sent_n
    RESULTS["loss_30_missing_fraction"] = round(missing, 3)
    # ~50 samples: sigma ~0.065, so allow about 3 sigma either side
    assert 0.10 <= missing <= 0.50, f"{missing:.2f} of {sent_n} heartbeats missing"


def test_agent_kill_keeps_the_host_and_restart_resumes(cluster: tuple[Path, Recorder]) -> None:
    lab_dir, rec = cluster
    old_boot = rec.last("host1").boot_id  # type: ignore[union-attr]
    pid1_before = lab_ops.status(lab_dir)["hosts"]["host1"]["pid1"]
    faults.fail(lab_dir, "host1", "agent-kill")
    killed = time.time()  # the agent is gone once fail() returns
    time.sleep(0.8)
    assert silent_since(rec, "host1", killed)
    host = lab_ops.status(lab_dir)["hosts"]["host1"]
    assert host["state"] == "agent-down" and host["pid1"] == pid1_before
    assert net.alive(pid1_before)
    # A running host whose agent is gone: its kernel answers for the agent's
    # ports at once (what a powered-off host must never do, below).
    got = netcheck.at_once(tcp=lambda: netcheck.tcp(host["address"], AGENT_PORT),
                           udp=lambda: netcheck.udp(host["address"], AGENT_PORT))
    assert got["tcp"].what == got["udp"].what == "refused", got
    accepted = rec.metrics["accepted"]
    faults.restart_agent(lab_dir, "host1")
    assert wait_for(lambda: beating(rec, "host1", 0.5), 30)
    new = rec.last("host1")
    assert new is not None and new.boot_id != old_boot and new.seq < 50
    assert rec.metrics["accepted"] > accepted


def test_power_off_stops_the_host_at_once(cluster: tuple[Path, Recorder]) -> None:
    lab_dir, rec = cluster
    # a program run as part of the host (lab_ops.in_host) dies with it
    inside = subprocess.Popen(lab_ops.in_host(state.load(lab_dir)["hosts"]["host2"],
                                              ["sleep", "600"]))
    assert wait_for(lambda: net.children(inside.pid), 10)
    sleeper = net.children(inside.pid)[0]
    pids = lab_ops.status(lab_dir)["hosts"]["host2"]["pids"]
    assert len(pids) >= 3 and sleeper in pids
    t0 = time.time()
    faults.fail(lab_dir, "host2", "power-off")  # returns once every process is gone
    gone = time.time()
    RESULTS["power_off_all_processes_gone_s"] = round(gone - t0, 3)
    time.sleep(1.0)
    last = rec.last("host2")
    assert last is not None
    RESULTS["power_off_last_heartbeat_after_s"] = round(max(0.0, last.received - t0), 3)
    # nothing sent once it is off (its send time: the receiving thread may
    # read a datagram of the last instant late on a busy machine)
    assert last.sent_at <= gone
    assert all(not os.path.exists(f"/proc/{p}") or not net.alive(p) for p in pids)
    assert inside.wait(timeout=30) != 0
    host = lab_ops.status(lab_dir)["hosts"]["host2"]
    assert host["state"] == "powered-off"
    assert host["link"] == {"port": "up", "nic": "down"}
    assert wait_for(lambda: beating(rec, "host1", 0.5) and beating(rec, "host3", 0.5), 10)
    assert_silent(lab_dir, "host2", via="host1")
    faults.power_on(lab_dir, "host2")
    assert lab_ops.status(lab_dir)["hosts"]["host2"]["link"] == {"port": "up", "nic": "up"}
    assert wait_for(lambda: beating(rec, "host2", 0.5), 30)
    assert netcheck.tcp(host["address"], AGENT_PORT).what == "connected"


PROBE_TIMEOUT_S = 1.0


def assert_silent(lab_dir: Path, host: str, via: str) -> None:
    """Nothing answers for `host`: a TCP connect and a UDP datagram to its
    agent port time out (no RST, no ICMP port unreachable), and a peer probe
    from `via` says unreachable only once its timeout has passed."""
    address = state.load(lab_dir)["hosts"][host]["address"]

    def probe() -> netcheck.Outcome:
        t0 = time.monotonic()
        reached = lab_ops.probe_via(lab_dir, via, [host], PROBE_TIMEOUT_S)[host]
        return netcheck.Outcome("answered" if reached else "no answer", time.monotonic() - t0)

    got = netcheck.at_once(tcp=lambda: netcheck.tcp(address, AGENT_PORT),
                           udp=lambda: netcheck.udp(address, AGENT_PORT), probe=probe)
    RESULTS.setdefault("silent_checks", []).append(
        {k: [v.what, round(v.took_s, 2)] for k, v in got.items()})
    assert got["tcp"].what == got["udp"].what == netcheck.SILENT, got
    assert got["probe"].what == "no answer" and got["probe"].took_s >= PROBE_TIMEOUT_S, got


def fencers(lab_dir: Path, host: str) -> tuple[IpmiFencer, RedfishFencer, Host]:
    """vmha's own IPMI and Redfish fencers, aimed at `host`'s lab BMCs."""
    bmc = lab_ops.status(lab_dir)["hosts"][host]["bmc"]
    ipmi, redfish = bmc["ipmi"], bmc["redfish"]
    ipmi_at = BmcEndpoint(ipmi["address"], ipmi["username"], ipmi["password"],
                          port=ipmi["port"])
    redfish_at = BmcEndpoint(redfish["url"], redfish["username"], redfish["password"],
                             system=f"/redfish/v1/Systems/{redfish['system']}")
    return (IpmiFencer(static_lookup({host: ipmi_at})),
            RedfishFencer(static_lookup({host: redfish_at}), ca_bundle=redfish["ca_bundle"]),
            Host(name=host, segment="lab"))


def bmc(call: Callable[[], Awaitable[T]], within_s: float = 30.0) -> T:
    """One BMC call, asked again while the BMC does not answer in time, as
    the engine asks again (vmha.engine.jobs: a status read that times out is
    repeated until the fence deadline). On a busy machine a lab BMC has
    missed pyghmi's whole retry budget (5 s) once; it answered the next ask."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return asyncio.run(call())
        except TemporaryError as exc:
            RESULTS.setdefault("bmc_calls_asked_again", []).append(str(exc))
            if time.monotonic() >= deadline:
                raise


def test_bmc_power_off_is_silent_and_power_on_keeps_network_down(
    cluster: tuple[Path, Recorder],
) -> None:
    lab_dir, rec = cluster
    ipmi, redfish, host3 = fencers(lab_dir, "host3")
    off = threading.Thread(target=lambda: asyncio.run(redfish.power_off(host3)))
    with state.changing(lab_dir):  # someone else changing the lab: the BMC waits its turn
        off.start()
        time.sleep(0.5)
        assert lab_ops.status(lab_dir)["hosts"]["host3"]["state"] == "running"
    off.join(60)
    assert lab_ops.status(lab_dir)["hosts"]["host3"]["state"] == "powered-off"
    assert bmc(lambda: ipmi.power_status(host3)) is PowerState.OFF
    assert lab_ops.status(lab_dir)["hosts"]["host3"]["link"] == {"port": "up", "nic": "down"}
    assert_silent(lab_dir, "host3", via="host2")
    bmc(lambda: ipmi.power_off(host3))  # already off: accepted, nothing changes
    # cut off while off: power-on boots it but leaves it cut off until heal
    faults.fail(lab_dir, "host3", "network-down")
    bmc(lambda: redfish.power_on(host3))
    assert bmc(lambda: ipmi.power_status(host3)) is PowerState.ON
    host = lab_ops.status(lab_dir)["hosts"]["host3"]
    assert host["link"] == {"port": "down", "nic": "up"} and host["faults"] == ["network-down"]
    assert host["state"] in ("running", "agent-down")  # the agent may still be starting
    t0 = time.time()
    time.sleep(1.0)
    assert silent_since(rec, "host3", t0)
    faults.heal(lab_dir, "host3")
    assert lab_ops.status(lab_dir)["hosts"]["host3"]["link"] == {"port": "up", "nic": "up"}
    assert wait_for(lambda: beating(rec, "host3", 0.5), 30)


def test_down_leaves_nothing_behind(cluster: tuple[Path, Recorder]) -> None:
    lab_dir, _ = cluster
    st = state.load(lab_dir)
    faults.fail(lab_dir, "host3", "loss", 10)  # a rule to clean up as well
    pids = [p for h in lab_ops.status(lab_dir)["hosts"].values() for p in h["pids"]]
    pids += [h["unshare_pid"] for h in st["hosts"].values()]
    faults.down(lab_dir)
    faults.down(lab_dir)  # idempotent
    assert not [n for n in net.list_netns() if n.startswith("vmha-")]
    links = net.run(["ip", "-o", "link", "show"])
    assert "vmha-h" not in links and "vmhabr0" not in links
    assert "statistic" not in net.run(["iptables-save"])
    assert wait_for(lambda: not any(net.alive(p) for p in pids), 10)
    print("lab figures:", json.dumps(RESULTS))
