"""End to end: an isolated host fences itself through the lab watchdog.

Short timeouts: heartbeats every 0.2 s (contact window 0.6 s), isolation
timeout 1.0 s, watchdog 1.0 s, so the host must be dead about 2.6 s after
its link goes down (printed; a busy machine's agent and PID 1 act later),
and not before contact_window + isolation_timeout. Hosts that keep contact
(through the receiver's acks) must survive.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from labkit import wait_for

import netcheck
from vmha.lab import faults, net
from vmha.lab import lab as lab_ops
from vmha.lab.agentapi import AGENT_PORT

pytestmark = pytest.mark.slow
INTERVAL, ISOLATION, WATCHDOG = 0.2, 1.0, 1.0
WINDOW = 3 * INTERVAL


def test_isolated_host_is_killed_by_its_watchdog(lab_factory: Any, receiver_factory: Any) -> None:
    lab_dir: Path = lab_factory(hosts=3, heartbeat_interval_s=INTERVAL,
                                isolation_timeout_s=ISOLATION, watchdog_timeout_s=WATCHDOG)
    rec = receiver_factory(lab_dir)
    assert wait_for(lambda: rec.last("host3") is not None, 30)
    time.sleep(2 * (WINDOW + ISOLATION + WATCHDOG))  # all keep contact: nobody fences
    status = lab_ops.status(lab_dir)
    assert all(h["state"] == "running" for h in status["hosts"].values())
    pid1 = status["hosts"]["host1"]["pid1"]
    pids = status["hosts"]["host1"]["pids"]
    t0 = time.monotonic()
    faults.fail(lab_dir, "host1", "network-down")
    assert wait_for(lambda: not net.alive(pid1), 30, 0.01)
    elapsed = time.monotonic() - t0
    print(f"self-fence: host1 dead {elapsed:.2f} s after network-down "
          f"(window {WINDOW} + isolation {ISOLATION} + watchdog {WATCHDOG})")
    # never early; late on a busy machine, but far from the lab's defaults
    # (isolation 10 s, watchdog 10 s): the short timeouts set here are used
    assert elapsed >= WINDOW + ISOLATION + WATCHDOG - 2 * INTERVAL
    assert elapsed < 10.0
    assert wait_for(lambda: not any(net.alive(p) for p in pids), 10)
    others = lab_ops.status(lab_dir)["hosts"]
    assert others["host2"]["state"] == others["host3"]["state"] == "running"
    log = (Path(lab_dir) / "hosts" / "host1" / "host.log").read_text()
    assert "watchdog not fed" in log
    # A reset host stays down until power-on, and a host that is down is
    # silent: PID 1 set its NIC down as it went, so even with the cable
    # back (heal) nothing answers for it.
    host1 = lab_ops.status(lab_dir)["hosts"]["host1"]
    assert host1["state"] == "powered-off"
    assert host1["link"] == {"port": "down", "nic": "down"}
    faults.heal(lab_dir, "host1")
    assert netcheck.tcp(host1["address"], AGENT_PORT).what == netcheck.SILENT
    faults.power_on(lab_dir, "host1")
    assert lab_ops.status(lab_dir)["hosts"]["host1"]["link"] == {"port": "up", "nic": "up"}
