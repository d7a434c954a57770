"""`vmha lab`: a real cluster of hosts on one machine, and real faults.

Each host `hostN` is a network namespace `vmha-hostN` (veth `vmha-hN` into
the root bridge `vmhabr0`, `br0` inside carrying 198.18.0.(10+N)) with a
PID namespace whose PID 1 is `vmha.lab.reaper` (reaper, lab watchdog,
parent of the host's agent). Everything created is first recorded in
DIR/lab.json (see `vmha.lab.state`), so `down` can undo it after a crash.

Called by `vmha.cli.lab` and by tests. Processes are signalled only by the
PIDs recorded here, after /proc confirms they are still the lab's.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vmha.config import default_data_dir
from vmha.errors import Conflict, NotFound, ValidationError
from vmha.lab import bmcs, net, state, vms
from vmha.lab.agentapi import AGENT_PORT, agent_request
from vmha.lab.controller import start_controller

SEGMENT = "lab"
FAULTS = ("power-off", "network-down", "controller-link-down", "loss", "agent-kill",
          "bmc-down")
REAPER_MARK = "vmha.lab.reaper"
AGENT_MARK = "vmha.agent"


@dataclass(frozen=True)
class LabSettings:
    hosts: int = 3
    heartbeat_interval_s: float = 1.0
    isolation_timeout_s: float = 10.0
    isolation_action: str = "reboot"
    watchdog_timeout_s: float = 10.0
    controller_port: int = 8790
    heartbeat_port: int = 8791
    start_controller: bool = True
    bmcs: bool = True  # an IPMI and a Redfish emulator per host (vmha.lab.bmcs)
    # Extra [controller] settings for the lab's controller (ControllerSettings
    # keys), e.g. {"host_return_healthy_s": 5} for tests and benchmarks.
    controller: Mapping[str, Any] = field(default_factory=dict)
    # Protected QEMU guests vm1..vmN (vmha.lab.vms), spread over the hosts.
    vms: int = 0
    # Guest images for the controller's libvirt cloud ("" = the shared
    # default, /var/lib/vmha/images); `guests=False` leaves the cloud off.
    guests: bool = True
    image_dir: str = ""

    def validate(self) -> None:
        if not 1 <= self.hosts <= net.MAX_HOSTS:
            raise ValidationError("hosts", f"{self.hosts} is not in 1..{net.MAX_HOSTS}")
        for name in ("controller_port", "heartbeat_port"):
            if not 0 < getattr(self, name) < 32768:
                raise ValidationError(name, "must be below 32768 (ephemeral range)")
        if not 0 <= self.vms <= 100:
            raise ValidationError("vms", f"{self.vms} is not in 0..100")
        if self.vms and not (self.guests and self.start_controller):
            raise ValidationError("vms", "VMs need the controller and guests")
        if self.isolation_action not in ("stop-vms", "reboot", "none"):
            raise ValidationError("isolation_action", "must be stop-vms, reboot or none")


def _host_dir(lab_dir: Path, name: str) -> Path:
    return lab_dir / "hosts" / name


def _agent_toml(st: dict[str, Any], name: str) -> str:
    s, h, ctl = st["settings"], st["hosts"][name], st["controller"]
    peers = {n: f"{p['address']}:{AGENT_PORT}" for n, p in st["hosts"].items() if n != name}
    q = json.dumps
    # With a running controller the agent registers and gets its secret
    # there; without one, the lab's pre-shared secret is all there is.
    registers = bool(ctl.get("healthy") and ctl.get("agent_token"))
    secret = [] if registers else [f"secret = {q(h['secret'])}"]
    token = [f"token = {q(ctl['agent_token'])}"] if registers else []
    lines = [
        f"host = {q(name)}", f"segment = {q(SEGMENT)}", f"address = {q(h['address'])}",
        f"state_dir = {q(str(Path(h['dir']) / 'state'))}",
        f"heartbeat_interval_s = {s['heartbeat_interval_s']}",
        *secret, f"segment_secret = {q(st['segment_secret'])}",
        "[controller]",
        f"heartbeat = [{q(net.BRIDGE_ADDR + ':' + str(s['heartbeat_port']))}]",
        f"url = {q(ctl.get('url') or '')}", *token,
        "[api]", f"listen = {q(h['address'] + ':' + str(AGENT_PORT))}",
        f"token = {q(st['agent_token'])}",
        "[peers]", *(f"{n} = {q(a)}" for n, a in peers.items()),
        "[isolation]", f"timeout_s = {s['isolation_timeout_s']}",
        f"action = {q(s['isolation_action'])}",
        "[watchdog]", 'backend = "lab"', f"socket = {q(str(Path(h['dir']) / 'reaper.sock'))}",
        f"timeout_s = {s['watchdog_timeout_s']}",
        "[capacity]", "vcpus = 4", "ram_mb = 8192", "disk_gb = 100",
        "[hypervisor]", f"uri = {q('qemu:///embed?root=' + h['libvirt_root'])}",
    ]
    return "\n".join(lines) + "\n"


def up(lab_dir: Path, settings: LabSettings) -> dict[str, Any]:
    """Create the bridge, the hosts and (when available) the controller."""
    net.check_prerequisites()
    settings.validate()
    lab_dir = lab_dir.resolve()
    try:
        if state.load(lab_dir).get("hosts"):
            raise Conflict(f"a lab is recorded in {lab_dir}; run `vmha lab down` first")
    except NotFound:
        pass
    busy = [ns for ns in net.list_netns() if ns.startswith(net.NETNS_PREFIX)]
    if busy:  # names are machine-wide: one lab at a time
        raise Conflict(f"another lab is running here ({busy[0]} exists); "
                       "run `vmha lab down --dir DIR` for it first")
    st: dict[str, Any] = {
        "version": 1, "dir": str(lab_dir), "segment": SEGMENT, "settings": asdict(settings),
        "segment_secret": secrets.token_hex(32), "agent_token": secrets.token_urlsafe(24),
        "bridge": {"name": net.BRIDGE, "address": f"{net.BRIDGE_ADDR}/{net.PREFIX_LEN}",
                   "created": not net.link_exists(net.BRIDGE)},
        "controller": {"url": None, "token": secrets.token_urlsafe(24), "pid": None,
                       "skipped": "not requested (--no-controller)"},
        "hosts": {},
    }
    if settings.guests:
        image_root = Path(settings.image_dir) if settings.image_dir else vms.default_image_root()
        vms.prepare_image(image_root)
        st["settings"]["image_dir"] = str(image_root)
    state.save(lab_dir, st)
    net.ensure_bridge()
    if settings.guests:
        vms.ensure_vm_network()
    for i in range(1, settings.hosts + 1):
        _add_host(lab_dir, st, i)
    if settings.bmcs:
        for name in st["hosts"]:
            bmcs.start(lab_dir, st, name)
    if settings.start_controller:
        st["controller"] = start_controller(
            lab_dir, settings.controller_port, st["controller"]["token"], st["settings"],
            SEGMENT, {n: h.get("bmc") for n, h in st["hosts"].items()},
        )
        state.save(lab_dir, st)
    for name in st["hosts"]:
        Path(st["hosts"][name]["config"]).write_text(_agent_toml(st, name))
        _start_host(lab_dir, st, name)
    for name in st["hosts"]:
        _wait_agent(st, name)
    if settings.vms:
        vms.create(lab_dir, settings.vms)
    return status(lab_dir)


def _add_host(lab_dir: Path, st: dict[str, Any], index: int) -> None:
    name = f"host{index}"
    hdir = _host_dir(lab_dir, name)
    hdir.mkdir(parents=True, exist_ok=True)
    hdir.chmod(0o700)
    st["hosts"][name] = {
        "index": index, "netns": net.netns_name(index), "veth": net.veth_name(index),
        "address": net.host_address(index), "dir": str(hdir), "secret": secrets.token_hex(32),
        "config": str(hdir / "agent.toml"), "unshare_pid": None, "pid1": None,
        "powered": False, "faults": [], "libvirt_root": str(_fresh_libvirt_root(hdir, name)),
    }
    state.save(lab_dir, st)  # recorded before it exists: `down` finds half-made hosts
    net.create_host_net(index)


def _fresh_libvirt_root(hdir: Path, name: str) -> Path:
    """The host's embedded libvirt root: a short fixed path (QEMU's unix
    socket paths under it must stay below 108 bytes), emptied of an earlier
    lab's domains but keeping QEMU's capability cache (~4 s per new root),
    and linked from the host's directory as `libvirt`."""
    root = default_data_dir() / "hv" / name
    if root.is_dir():
        for entry in root.iterdir():
            if entry.is_dir() and entry.name != "cache":
                shutil.rmtree(entry)
            elif not entry.is_dir():
                entry.unlink()
    root.mkdir(parents=True, exist_ok=True)
    link = hdir / "libvirt"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(root)
    return root


def _start_host(lab_dir: Path, st: dict[str, Any], name: str) -> None:
    h = st["hosts"][name]
    hdir = Path(h["dir"])
    for stale in ("reaper.sock", "agent.pid"):
        (hdir / stale).unlink(missing_ok=True)
    cmd = ["ip", "netns", "exec", h["netns"], "unshare", "--pid", "--fork", "--mount-proc",
           "--kill-child", sys.executable, "-m", REAPER_MARK, "--host-dir", str(hdir),
           "--watchdog-timeout", str(st["settings"]["watchdog_timeout_s"]), "--",
           sys.executable, "-m", AGENT_MARK, "--config", h["config"]]
    h["unshare_pid"] = net.spawn_detached(cmd, hdir / "host.log")
    h["powered"] = True
    state.save(lab_dir, st)
    deadline = time.monotonic() + 5
    while not net.children(h["unshare_pid"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    kids = net.children(h["unshare_pid"])
    if not kids:
        raise net.LabCommandFailed(f"{name}: PID namespace did not start; see {hdir}/host.log")
    h["pid1"] = kids[0]
    state.save(lab_dir, st)


def _wait_agent(st: dict[str, Any], name: str, timeout_s: float = 15.0) -> None:
    h = st["hosts"][name]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            agent_request(h["address"], st["agent_token"], "/v1/health", timeout_s=1.0)
            return
        except OSError:
            time.sleep(0.1)
    raise net.LabCommandFailed(f"{name}: agent did not answer; see {h['dir']}/agent.log")


def probe_via(lab_dir: Path, via: str, targets: list[str], timeout_s: float = 1.0) -> Any:
    """Ask `via`'s agent to probe `targets` (the controller's confirmation call)."""
    st = state.load(lab_dir)
    h = _host(st, via)
    return agent_request(h["address"], st["agent_token"], "/v1/probe",
                          {"targets": targets, "timeout_s": timeout_s}, timeout_s + 2)


def _host(st: dict[str, Any], name: str) -> dict[str, Any]:
    if name not in st["hosts"]:
        raise NotFound("lab host", name)
    host: dict[str, Any] = st["hosts"][name]
    return host


def _host_pids(h: dict[str, Any]) -> list[int]:
    pid1 = h.get("pid1")
    if not pid1 or not net.alive(pid1) or not net.owned_by_lab(pid1, REAPER_MARK, h["dir"]):
        return []
    return net.pids_in_pid_ns(net.pid_ns(pid1))


def agent_pid(h: dict[str, Any]) -> int | None:
    for pid in _host_pids(h):
        if net.owned_by_lab(pid, AGENT_MARK, h["config"]) and REAPER_MARK not in net.cmdline(pid):
            return pid
    return None


def status(lab_dir: Path) -> dict[str, Any]:
    st = state.load(lab_dir)
    hosts = {}
    for name, h in st["hosts"].items():
        pids = _host_pids(h)
        agent = agent_pid(h)
        run_state = "powered-off" if not pids else ("running" if agent else "agent-down")
        hosts[name] = {
            "address": h["address"], "state": run_state, "pids": pids,
            "pid1": h["pid1"] if pids else None, "agent_pid": agent,
            "netns": h["netns"], "veth": h["veth"], "secret": h["secret"],
            "agent_url": f"http://{h['address']}:{AGENT_PORT}",
            "faults": [f["kind"] for f in h["faults"]], "bmc": bmcs.public(h.get("bmc")),
        }
    ctl = st["controller"]
    return {"dir": st["dir"], "segment": st["segment"], "segment_secret": st["segment_secret"],
            "agent_token": st["agent_token"],
            "heartbeat": f"{net.BRIDGE_ADDR}:{st['settings']['heartbeat_port']}",
            "controller": {"url": ctl.get("url"), "token": ctl.get("token"),
                           **({"skipped": ctl["skipped"]} if ctl.get("skipped") else {})},
            "hosts": hosts, **(vms.status(lab_dir) if st.get("vms") else {})}

