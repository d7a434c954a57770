"""Fault injection and teardown for the lab: fail, heal, power-on,
restart-agent, down. `bmc-down` stops a host's BMC emulators (fencing then
has to fall back to the next level); `heal` starts them again.

Faults are recorded in lab.json *before* they are applied, so `heal` and
`down` undo them even after a crash. iptables rules live inside the host's
network namespace only (they vanish with it); the root namespace's rules
are never touched. Called by `vmha.cli.lab` and tests.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from typing import Any

from vmha.errors import Conflict, NotFound, ValidationError
from vmha.lab import bmcs, net, state, vms
from vmha.lab.controller import SERVE_MARKER
from vmha.lab.lab import (
    AGENT_MARK,
    FAULTS,
    REAPER_MARK,
    _host,
    _host_pids,
    _start_host,
    _wait_agent,
    agent_pid,
)


def _rules(st: dict[str, Any], fault: str, percent: float | None) -> list[list[str]]:
    if fault == "controller-link-down":
        ctl = net.BRIDGE_ADDR
        return [["OUTPUT", "-d", ctl, "-j", "DROP"], ["INPUT", "-s", ctl, "-j", "DROP"]]
    if percent is None or not 0 < percent <= 100:
        raise ValidationError("percent", f"{percent!r}: loss needs a PERCENT in (0, 100]")
    p = f"{percent / 100:.4f}"
    stat = ["-m", "statistic", "--mode", "random", "--probability", p, "-j", "DROP"]
    return [["OUTPUT", *stat], ["INPUT", *stat]]


def fail(lab_dir: Path, host: str, fault: str, percent: float | None = None,
         only: str | None = None) -> dict[str, Any]:
    """Inject `fault` into `host` (or into VM `host` for the guest faults of
    `vmha.lab.vms`); returns what was done (with a timestamp)."""
    if fault in vms.GUEST_FAULTS:
        return vms.guest_fault(lab_dir, host, fault)
    if fault not in FAULTS:
        raise ValidationError("fault", f"{fault!r} is not one of {', '.join(FAULTS)}")
    if only is not None and (fault != "bmc-down" or only not in bmcs.KINDS):
        raise ValidationError("only", f"{only!r}: --only takes ipmi or redfish, with bmc-down")
    st = state.load(lab_dir)
    h = _host(st, host)
    at = time.time()
    if fault == "power-off":
        return {"host": host, "fault": fault, "at": at, "killed": _power_off(lab_dir, st, host)}
    if fault == "agent-kill":
        pid = agent_pid(h)
        if pid is None or not net.kill(pid, AGENT_MARK, h["config"]):
            raise Conflict(f"{host}: no running agent to kill")
        net.wait_gone([pid])
        return {"host": host, "fault": fault, "at": at, "killed": [pid]}
    if fault == "bmc-down":  # `only`: just that BMC stops (ipmi or redfish)
        h["faults"].append({"kind": fault, "only": only})
        state.save(lab_dir, st)
        return {"host": host, "fault": fault, "at": at, "only": only,
                "killed": bmcs.stop(st, host, only)}
    if fault == "network-down":
        h["faults"].append({"kind": fault})
        state.save(lab_dir, st)
        net.set_link(h["index"], up=False)
        return {"host": host, "fault": fault, "at": at}
    rules = _rules(st, fault, percent)
    h["faults"].append({"kind": fault, "rules": rules, "percent": percent})
    state.save(lab_dir, st)
    for rule in rules:
        net.iptables(h["netns"], "-I", rule)
    return {"host": host, "fault": fault, "at": at, "rules": rules}


def _power_off(lab_dir: Path, st: dict[str, Any], host: str) -> list[int]:
    h = st["hosts"][host]
    pids = _host_pids(h)
    if not pids:
        raise Conflict(f"{host} is already powered off; use `vmha lab power-on {host}`")
    net.kill(h["pid1"], REAPER_MARK, h["dir"])  # the kernel kills the rest of the namespace
    net.wait_gone(pids)
    h["powered"] = False
    state.save(lab_dir, st)
    return pids


def heal(lab_dir: Path, host: str) -> dict[str, Any]:
    """Undo every network and BMC fault of `host` (not power-off, not agent-kill)."""
    st = state.load(lab_dir)
    h = _host(st, host)
    healed = []
    for fault in h["faults"]:
        if fault["kind"] == "network-down":
            net.set_link(h["index"], up=True)
        if fault["kind"] == "bmc-down":
            bmcs.start(lab_dir, st, host, fault.get("only"))
        for rule in fault.get("rules", []):
            with contextlib.suppress(net.LabCommandFailed):  # already gone
                net.iptables(h["netns"], "-D", rule)
        healed.append(fault["kind"])
    h["faults"] = []
    state.save(lab_dir, st)
    return {"host": host, "healed": healed}


def power_on(lab_dir: Path, host: str) -> dict[str, Any]:
    st = state.load(lab_dir)
    h = _host(st, host)
    if _host_pids(h):
        raise Conflict(f"{host} is already running")
    _start_host(lab_dir, st, host)
    cut = {"network-down", "controller-link-down"}  # the root namespace cannot ask it
    if not any(f["kind"] in cut for f in h["faults"]):
        _wait_agent(st, host)
    return {"host": host, "pid1": h["pid1"]}


RESTART_TIMEOUT_S = 5.0


def restart_agent(lab_dir: Path, host: str) -> dict[str, Any]:
    """Ask the host's PID 1 to start the agent again (after agent-kill)."""
    st = state.load(lab_dir)
    h = _host(st, host)
    if not _host_pids(h):
        raise Conflict(f"{host} is powered off; use `vmha lab power-on {host}`")
    if agent_pid(h) is not None:
        raise Conflict(f"{host}: the agent is already running")
    # PID 1 may not have reaped the old agent when the first request
    # arrives (it then ignores it): ask again until a new agent runs.
    deadline = time.monotonic() + RESTART_TIMEOUT_S
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        while time.monotonic() < deadline:
            sock.sendto(b"start-agent", str(Path(h["dir"]) / "reaper.sock"))
            for _ in range(10):
                time.sleep(0.02)
                if agent_pid(h) is not None:
                    return {"host": host, "agent_pid": agent_pid(h)}
    raise net.LabCommandFailed(f"{host}: the agent did not start again within "
                               f"{RESTART_TIMEOUT_S:.0f} s; see {h['dir']}/host.log")


def down(lab_dir: Path) -> dict[str, Any]:
    """Remove everything the lab made. Idempotent; works without lab.json."""
    net.check_prerequisites()
    try:
        st = state.load(lab_dir)
    except NotFound:
        st = {"hosts": {}, "controller": {}, "bridge": {"created": True}}
    killed: list[int] = []
    ctl = st.get("controller") or {}
    if ctl.get("pid") and net.kill(ctl["pid"], SERVE_MARKER, ctl.get("config", "")):
        killed.append(ctl["pid"])
    for h in st["hosts"].values():
        killed += _kill_host(h)
    killed += bmcs.stop_all(lab_dir)  # also those of a lab whose lab.json is gone
    for ns in net.list_netns():  # also namespaces of a lab whose lab.json is gone
        if ns.startswith(net.NETNS_PREFIX):
            killed += _kill_in_netns(ns)
    net.wait_gone(killed)
    removed = _remove_links(st)
    (lab_dir / state.STATE_FILE).unlink(missing_ok=True)
    return {"killed": sorted(set(killed)), "removed": removed}


def _kill_host(h: dict[str, Any]) -> list[int]:
    killed = []
    if h.get("pid1") and net.kill(h["pid1"], REAPER_MARK, h["dir"]):
        killed.append(h["pid1"])
    if h.get("unshare_pid") and net.kill(h["unshare_pid"], "unshare", h["dir"]):
        killed.append(h["unshare_pid"])
    return killed


def _kill_in_netns(ns: str) -> list[int]:
    """Processes left in one of the lab's namespaces that run lab programs."""
    out = net.run(["ip", "netns", "pids", ns], check=False)
    pids = [int(p) for p in out.split() if p.isdigit()]
    return [p for p in pids if net.kill(p, "vmha")]


def _remove_links(st: dict[str, Any]) -> list[str]:
    removed = []
    indexes = {h["index"] for h in st["hosts"].values()}
    for ns in net.list_netns():
        suffix = ns.removeprefix(net.NETNS_PREFIX)
        if ns.startswith(net.NETNS_PREFIX) and suffix.isdigit():
            indexes.add(int(suffix))
    for i in sorted(indexes):
        if net.link_exists(net.veth_name(i)) or net.netns_name(i) in net.list_netns():
            net.delete_host_net(i)
            removed += [net.netns_name(i), net.veth_name(i)]
    if st["bridge"].get("created") and net.link_exists(net.BRIDGE):
        net.run(["ip", "link", "del", net.BRIDGE], check=False)
        removed.append(net.BRIDGE)
    return removed
