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
    assert wait_for(lambda: not any(net.alive(p) for p in pids), 3)
