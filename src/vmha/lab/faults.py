"""Fault injection and teardown for the lab: fail, heal, power-off,
power-on, restart-agent, down. `bmc-down` stops a host's BMC emulators
(fencing then has to fall back to the next level); `heal` starts them again.

Power-off makes the host silent before it kills it: its NIC (the veth end
inside its namespace) goes down first, so from that instant nothing of it
(agent, kernel, VMs) answers or sends, and the kernel never gets to answer
for the dead processes with RSTs or ICMP errors; then PID 1 is killed.
Power-on brings the NIC up and boots the host. The switch port (root-side
veth) is `network-down`'s alone, so the two never undo each other.

Faults are recorded in lab.json *before* they are applied, so `heal` and
`down` undo them even after a crash. iptables rules live inside the host's
network namespace only (they vanish with it); the root namespace's rules
are never touched. Called by `vmha.cli.lab` and tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vmha.errors import Conflict, NotFound, ValidationError, VmhaError
from vmha.lab import bmcs, controllers, net, state, vms
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
from vmha.lab.openstack import services as os_services

# What a powered-off host looks like from the network; benchmarks record it.
# "silent": NIC down, then killed (nothing answers). Before issue 17 it was
# "kernel-answers": the kernel refused connections for the dead host at once.
POWER_OFF_MODEL = "silent"


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
    if host.startswith(("controller", "etcd")):
        with state.changing(lab_dir):
            st = state.load(lab_dir)
            if controllers.is_member(st, host):
                return controllers.fail(lab_dir, st, host, fault)
    if fault not in FAULTS:
        raise ValidationError("fault", f"{fault!r} is not one of {', '.join(FAULTS)}")
    if only is not None and (fault != "bmc-down" or only not in bmcs.KINDS):
        raise ValidationError("only", f"{only!r}: --only takes ipmi or redfish, with bmc-down")
    with state.changing(lab_dir):
        return _fail_host(lab_dir, host, fault, percent, only)


def _fail_host(lab_dir: Path, host: str, fault: str, percent: float | None,
               only: str | None) -> dict[str, Any]:
    st = state.load(lab_dir)
    h = _host(st, host)
    at = time.time()
    if fault == "power-off":
        if not _host_pids(h):
            raise Conflict(f"{host} is already powered off; use `vmha lab power-on {host}`")
        return {"host": host, "fault": fault, "at": at, "killed": _power_off(lab_dir, st, h)}
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


def power_off(lab_dir: Path, host: str) -> list[int]:
    """Cut the host's power: silent first, then every process killed
    (returns when all are gone). Idempotent, like a BMC's power-off: on a
    host already off it only makes sure the NIC is down. The PIDs killed."""
    with state.changing(lab_dir):
        st = state.load(lab_dir)
        return _power_off(lab_dir, st, _host(st, host))


def _power_off(lab_dir: Path, st: dict[str, Any], h: dict[str, Any]) -> list[int]:
    pids = _host_pids(h)
    h["powered"] = False
    state.save(lab_dir, st)
    # Silence before the kill: in between, the host's processes still run
    # but nothing they send leaves and nothing reaches them; killed first,
    # the kernel would answer for them (RST, port unreachable) meanwhile.
    net.set_nic(h["index"], up=False)
    if pids:
        net.kill(h["pid1"], REAPER_MARK, h["dir"])  # the kernel kills the rest of the namespace
        net.wait_gone(pids)
    return pids


def heal(lab_dir: Path, host: str) -> dict[str, Any]:
    """Undo every network and BMC fault of `host` (not power-off, not agent-kill),
    or a lab controller's network faults."""
    with state.changing(lab_dir):
        st = state.load(lab_dir)
        if controllers.is_member(st, host):
            return controllers.heal(lab_dir, st, host)
        return _heal(lab_dir, host)


def _heal(lab_dir: Path, host: str) -> dict[str, Any]:
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
    """Boot a powered-off host fresh: its NIC comes up, then its PID 1 starts
    (the switch port stays as `network-down` / `heal` left it)."""
    with state.changing(lab_dir):  # not while waiting for the agent: a BMC may act meanwhile
        st = state.load(lab_dir)
        if controllers.is_member(st, host):  # a lab controller or etcd member
            return controllers.power_on(lab_dir, st, host)
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
    """Remove everything the lab made. Idempotent; works without lab.json
    and with a stale one (hosts, namespaces and emulators are also found on
    the machine). Every step runs even when an earlier one failed; at the
    end the lab's namespaces and links must be gone, else LabCommandFailed
    names what is left and why (lab.json is then kept for another try)."""
    net.check_prerequisites()
    try:
        st = state.load(lab_dir)
    except NotFound:
        st = {}
    st.setdefault("hosts", {})
    st.setdefault("bridge", {"created": True})
    errors: list[str] = []
    killed: list[int] = []

    def step(what: str, fn: Callable[..., list[int]], *args: Any) -> None:
        try:
            killed.extend(fn(*args))
        except (VmhaError, OSError) as exc:
            errors.append(f"{what}: {exc}")

    removed_several: list[str] = []
    try:  # several controllers: their namespaces, etcd and the database
        got, removed_several = controllers.down(lab_dir, st)
        killed.extend(got)
    except (VmhaError, OSError) as exc:
        errors.append(f"controllers: {exc}")
    step("controller", _kill_controller, st.get("controller") or {})
    for name, h in st["hosts"].items():
        step(name, _kill_host, h)
    if "openstack" in st:  # the lab cloud (its processes carry the lab's mark)
        step("lab cloud", os_services.down, lab_dir, st["openstack"])
    step("BMC emulators", bmcs.stop_all, lab_dir)  # also those of a lab whose lab.json is gone
    for ns in _lab_netns(errors):  # also namespaces of a lab whose lab.json is gone
        step(ns, _kill_in_netns, ns)
    step("processes logging into the lab", _kill_logging_into, lab_dir)  # lab.json stale
    if not net.wait_gone(killed, DOWN_WAIT_S):
        errors.append("still running after SIGKILL: "
                      + " ".join(str(p) for p in killed if net.alive(p)))
    removed, left, failed = _remove_all(st)
    removed = removed_several + removed
    errors += failed
    if left:
        errors.append(f"left behind: {', '.join(left)}")
    if errors:
        raise net.LabCommandFailed(f"lab down in {lab_dir}: " + "; ".join(errors)
                                   + "; run `vmha lab down` again")
    (lab_dir / state.STATE_FILE).unlink(missing_ok=True)
    return {"killed": sorted(set(killed)), "removed": removed}


DOWN_WAIT_S = 10.0  # for killed processes to be gone (a busy machine is slow to reap)
REMOVE_WAIT_S = 15.0  # for the kernel to destroy namespaces and veths (done in the background)


def _remove_all(st: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """Remove the links and namespaces until none is left (or the wait
    ran out): what was removed, what is left, the last round's failures."""
    removed: list[str] = []
    deadline = time.monotonic() + REMOVE_WAIT_S
    while True:
        errors: list[str] = []
        removed += _remove_links(st, errors)
        left = _left_over(st, errors)
        if not left or time.monotonic() > deadline:
            return removed, left, errors
        time.sleep(0.5)


def _kill_controller(ctl: dict[str, Any]) -> list[int]:
    if ctl.get("pid") and net.kill(ctl["pid"], SERVE_MARKER, ctl.get("config", "")):
        return [ctl["pid"]]
    return []


def _kill_host(h: dict[str, Any]) -> list[int]:
    """PID 1 of the host (the kernel kills the rest of its PID namespace),
    its `unshare`, and whatever of the namespace is still alive."""
    killed = []
    inside = _host_pids(h)
    if h.get("pid1") and net.kill(h["pid1"], REAPER_MARK, h["dir"]):
        killed.append(h["pid1"])
    if h.get("unshare_pid") and net.kill(h["unshare_pid"], "unshare", h["dir"]):
        killed.append(h["unshare_pid"])
    return killed + [p for p in inside if p not in killed and net.alive(p)]


def _kill_logging_into(lab_dir: Path) -> list[int]:
    """Every process whose output goes to a file under `lab_dir` (the lab
    starts each of its daemons that way: controller, BMC emulators, the lab
    cloud's services, hosts): found even when lab.json no longer names them."""
    root = str(lab_dir.resolve()) + "/"
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        outputs = []
        for fd in ("1", "2"):
            with contextlib.suppress(OSError):
                outputs.append(os.readlink(entry / "fd" / fd))
        if any(o.startswith(root) for o in outputs) and net.alive(int(entry.name)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


def _lab_netns(errors: list[str]) -> list[str]:
    try:
        return [ns for ns in net.list_netns() if ns.startswith(net.NETNS_PREFIX)]
    except net.LabCommandFailed as exc:
        errors.append(str(exc))
        return []


def _kill_in_netns(ns: str) -> list[int]:
    """Processes left in one of the lab's namespaces that run lab programs."""
    out = net.run(["ip", "netns", "pids", ns], check=False)
    pids = [int(p) for p in out.split() if p.isdigit()]
    return [p for p in pids if net.kill(p, "vmha")]


def _left_over(st: dict[str, Any], errors: list[str]) -> list[str]:
    """The lab's namespaces and links that still exist on the machine."""
    left = _lab_netns(errors)
    try:
        links = json.loads(net.run(["ip", "-j", "link", "show"]) or "[]")
    except (net.LabCommandFailed, ValueError) as exc:
        errors.append(f"ip link show: {exc}")
        return left
    names = [str(link.get("ifname", "")) for link in links]
    mine = [n for n in names if n.startswith(net.VETH_PREFIX)]
    if st["bridge"].get("created") and net.BRIDGE in names:
        mine.append(net.BRIDGE)
    return left + mine


def _remove_links(st: dict[str, Any], errors: list[str]) -> list[str]:
    """Every lab host's veth and namespace (recorded or found by name), and
    the bridge if the lab created it; a failure is recorded, the rest goes on."""
    removed = []
    indexes = {h["index"] for h in st["hosts"].values()}
    for ns in _lab_netns(errors):
        suffix = ns.removeprefix(net.NETNS_PREFIX)
        if suffix.isdigit():
            indexes.add(int(suffix))
    for i in sorted(indexes):
        try:
            if net.link_exists(net.veth_name(i)) or net.netns_name(i) in net.list_netns():
                net.delete_host_net(i)
                removed += [net.netns_name(i), net.veth_name(i)]
        except net.LabCommandFailed as exc:
            errors.append(str(exc))
    if st["bridge"].get("created") and net.link_exists(net.BRIDGE):
        net.run(["ip", "link", "del", net.BRIDGE], check=False)
        removed.append(net.BRIDGE)
    return removed
