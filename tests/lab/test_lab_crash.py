"""`lab down` after the lab lost its state: namespaces and their processes
are still found (by name and `ip netns pids`) and removed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from labkit import wait_for

from vmha.lab import faults, net, state
from vmha.lab import lab as lab_ops

pytestmark = pytest.mark.slow


def test_down_without_lab_json_still_cleans_up(lab_factory: Any) -> None:
    lab_dir: Path = lab_factory(hosts=2)
    pids = [p for h in lab_ops.status(lab_dir)["hosts"].values() for p in h["pids"]]
    assert len(pids) == 4
    st = state.load(lab_dir)
    bmc_pids = [h["bmc"][kind]["pid"] for h in st["hosts"].values() for kind in ("ipmi", "redfish")]
    assert all(net.alive(p) for p in bmc_pids)  # the BMC emulators run in the root namespace
    pids += bmc_pids
    (lab_dir / state.STATE_FILE).unlink()  # the lab's memory is gone
    faults.down(lab_dir)
    assert not [n for n in net.list_netns() if n.startswith("vmha-")]
    links = net.run(["ip", "-o", "link", "show"])
    assert "vmha-h" not in links and net.BRIDGE not in links
    assert wait_for(lambda: not any(net.alive(p) for p in pids), 10)


def test_down_goes_on_past_a_failing_step_and_a_stale_lab_json(lab_factory: Any,
                                                               monkeypatch: Any) -> None:
    """lab.json has lost host2 and one step of the teardown fails: every
    namespace, link and process is still removed, and the failure is told."""
    lab_dir: Path = lab_factory(hosts=2)
    st = lab_ops.status(lab_dir)
    pids = [p for h in st["hosts"].values() for p in h["pids"]]
    # a daemon of the lab that lab.json does not name (it logs into the lab)
    pids.append(net.spawn_detached(["sleep", "300"], lab_dir / "forgotten.log"))
    with state.changing(lab_dir):
        recorded = state.load(lab_dir)
        del recorded["hosts"]["host2"]  # stale: host2 was made after the last save
        recorded["openstack"] = {"dir": str(lab_dir / "openstack")}
        state.save(lab_dir, recorded)

    def broken(*args: Any) -> list[int]:
        raise net.LabCommandFailed("mysql: the database server went away")

    monkeypatch.setattr(faults.os_services, "down", broken)
    with pytest.raises(net.LabCommandFailed, match="lab cloud: mysql: the database"):
        faults.down(lab_dir)
    assert not [n for n in net.list_netns() if n.startswith(net.NETNS_PREFIX)]
    links = net.run(["ip", "-o", "link", "show"])
    assert "vmha-h" not in links and net.BRIDGE not in links
    assert wait_for(lambda: not any(net.alive(p) for p in pids), 10)
    assert (lab_dir / state.STATE_FILE).exists()  # kept: `down` again can retry the cloud
    with state.changing(lab_dir):
        recorded = state.load(lab_dir)
        del recorded["openstack"]
        state.save(lab_dir, recorded)
