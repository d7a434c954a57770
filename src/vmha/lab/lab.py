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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from vmha.config import default_data_dir
from vmha.errors import Conflict, NotFound, ValidationError
from vmha.lab import bmcs, controllers, net, state, vms
from vmha.lab.agentapi import AGENT_PORT, agent_request
from vmha.lab.controller import start_controller
from vmha.lab.openstack import confs as os_confs
from vmha.lab.openstack import servers as os_servers
from vmha.lab.openstack import services as os_services

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
    # "libvirt": QEMU guests under each host's embedded libvirt; "openstack":
    # a real Keystone/Nova/... (vmha.lab.openstack), one nova-compute per
    # host, and `vms` Nova servers instead of QEMU guests.
    cloud: str = "libvirt"
    # With cloud="openstack": also Ceilometer's notification agent and Aodh
    # (the alarm path for vmha's events; ~15 s more start-up).
    telemetry: bool = False
    # Several controllers (vmha.lab.controllers): each in a namespace of its
    # own, on a 3-member etcd and PostgreSQL; `lease_s` is the leader's lease.
    controllers: int = 1
    lease_s: float = 3.0

    def validate(self) -> None:
        if not 1 <= self.hosts <= net.MAX_HOSTS:
            raise ValidationError("hosts", f"{self.hosts} is not in 1..{net.MAX_HOSTS}")
        for name in ("controller_port", "heartbeat_port"):
            if not 0 < getattr(self, name) < 32768:
                raise ValidationError(name, "must be below 32768 (ephemeral range)")
        if not 0 <= self.vms <= 100:
            raise ValidationError("vms", f"{self.vms} is not in 0..100")
        if self.cloud not in ("libvirt", "openstack"):
            raise ValidationError("cloud", f"{self.cloud!r} is not libvirt or openstack")
        if self.vms and not (self.start_controller and (self.guests or self.openstack)):
            raise ValidationError("vms", "VMs need the controller and guests")
        if self.isolation_action not in ("stop-vms", "reboot", "none"):
            raise ValidationError("isolation_action", "must be stop-vms, reboot or none")
        if not 1 <= self.controllers <= controllers.MAX_CONTROLLERS:
            raise ValidationError("controllers", f"{self.controllers} is not in "
                                  f"1..{controllers.MAX_CONTROLLERS}")
        if self.controllers > 1 and (not self.start_controller or self.openstack):
            raise ValidationError("controllers", "several controllers need --controller "
                                  "and the libvirt cloud")
        if not 2 <= self.lease_s <= 60:
            raise ValidationError("lease_s", f"{self.lease_s} is not in 2..60")

    @property
    def openstack(self) -> bool:
        return self.cloud == "openstack"


def _host_dir(lab_dir: Path, name: str) -> Path:
    return lab_dir / "hosts" / name


def _agent_toml(st: dict[str, Any], name: str) -> str:
    s, h, ctl = st["settings"], st["hosts"][name], st["controller"]
    several = list(st.get("controllers", {}).values())
    hb_port = str(s["heartbeat_port"])
    heartbeats = [c["address"] + ":" + hb_port for c in several] or [net.BRIDGE_ADDR + ":"
                                                                      + hb_port]
    urls = [c["url"] for c in several] or [ctl.get("url") or ""]
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
        f"heartbeat = [{', '.join(q(a) for a in heartbeats)}]",
        f"url = {q(urls) if len(urls) > 1 else q(urls[0])}", *token,
        "[api]", f"listen = {q(h['address'] + ':' + str(AGENT_PORT))}",
        f"token = {q(st['agent_token'])}",
        "[peers]", *(f"{n} = {q(a)}" for n, a in peers.items()),
        "[isolation]", f"timeout_s = {s['isolation_timeout_s']}",
        f"action = {q(s['isolation_action'])}",
        "[watchdog]", 'backend = "lab"', f"socket = {q(str(Path(h['dir']) / 'reaper.sock'))}",
        f"timeout_s = {s['watchdog_timeout_s']}",
        "[capacity]", *_capacity(st),
        "[hypervisor]", f"uri = {q('qemu:///embed?root=' + h['libvirt_root'])}",
    ]
    return "\n".join(lines) + "\n"


def _capacity(st: dict[str, Any]) -> list[str]:
    """What the host offers: with the lab cloud, what its nova-compute offers
    Nova (vmha's planner and Nova's scheduler must agree on room)."""
    if "openstack" in st:
        return [f"vcpus = {os_confs.COMPUTE_VCPUS}", f"ram_mb = {os_confs.COMPUTE_RAM_MB}",
                "disk_gb = 100"]
    return ["vcpus = 4", "ram_mb = 8192", "disk_gb = 100"]


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
    busy = [ns for ns in net.list_netns()
            if ns.startswith((net.NETNS_PREFIX, controllers.NETNS_PREFIX))]
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
    if settings.openstack:
        settings = replace(settings, guests=False)
        st["settings"]["guests"] = False
        st["openstack"] = {}
    if settings.guests:
        image_root = Path(settings.image_dir) if settings.image_dir else vms.default_image_root()
        vms.prepare_image(image_root)
        st["settings"]["image_dir"] = str(image_root)
    if settings.controllers > 1:  # controllers in namespaces reach the BMCs on the bridge
        st["bmc_address"] = net.BRIDGE_ADDR
        for old in ("cert.pem", "key.pem"):  # an earlier lab's may not name that address
            (lab_dir / "bmc" / old).unlink(missing_ok=True)
    state.save(lab_dir, st)
    net.ensure_bridge()
    if settings.guests:
        vms.ensure_vm_network()
    for i in range(1, settings.hosts + 1):
        _add_host(lab_dir, st, i)
    if settings.bmcs:
        for name in st["hosts"]:
            bmcs.start(lab_dir, st, name)
    if settings.openstack:
        os_services.up(lab_dir, st["openstack"], lambda: state.save(lab_dir, st),
                       settings.telemetry)
    if settings.controllers > 1:
        controllers.up(lab_dir, st, settings.controllers, settings.lease_s,
                       {n: h.get("bmc") for n, h in st["hosts"].items()})
    elif settings.start_controller:
        st["controller"] = start_controller(
            lab_dir, settings.controller_port, st["controller"]["token"], st["settings"],
            SEGMENT, {n: h.get("bmc") for n, h in st["hosts"].items()},
            os_servers.controller_cloud(st.get("openstack"), SEGMENT, settings.telemetry),
        )
        state.save(lab_dir, st)
    for name in st["hosts"]:
        Path(st["hosts"][name]["config"]).write_text(_agent_toml(st, name))
        _start_host(lab_dir, st, name)
    for name in st["hosts"]:
        _wait_agent(st, name)
    if settings.openstack:
        os_servers.wait_computes(st, list(st["hosts"]))
        if settings.vms:
            os_servers.create(lab_dir, settings.vms)
    elif settings.vms:
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
    net.set_nic(h["index"], up=True)  # the host boots: its kernel answers again
    cmd = ["ip", "netns", "exec", h["netns"], "unshare", "--pid", "--fork", "--mount-proc",
           "--kill-child", sys.executable, "-m", REAPER_MARK, "--host-dir", str(hdir),
           "--watchdog-timeout", str(st["settings"]["watchdog_timeout_s"]),
           "--nic", net.NIC, *_host_services(st, name), "--",
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


def _host_services(st: dict[str, Any], name: str) -> list[str]:
    """Reaper options for what runs beside the agent: an OpenStack lab
    host's nova-compute (it dies with the host's power like the agent)."""
    if not (st.get("openstack") or {}).get("dir"):
        return []
    h = st["hosts"][name]
    cmd = os_services.compute_command(st["openstack"], name, h["address"], Path(h["dir"]))
    return ["--service", "nova-compute=" + json.dumps(cmd)]


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


def in_host(h: dict[str, Any], argv: Sequence[str]) -> list[str]:
    """`argv` run as part of the (running) host: in its network, PID and
    mount namespaces (`nsenter` into PID 1's), so it dies with the host at
    power-off like the agent; `ip netns exec` alone would only share the
    network, and the process would outlive a power-off (cut off)."""
    if not _host_pids(h):
        raise Conflict("the host is powered off: nothing can run in it")
    return ["nsenter", "--target", str(h["pid1"]), "--net", "--pid", "--mount", "--",
            *argv]


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
            "link": net.link_state(h["index"]),
        }
    ctl = st["controller"]
    several = controllers.status(st) if st.get("controllers") else {}
    url = ctl.get("url")
    if several:  # the leader's URL, else one that should answer (followers forward)
        lead = next((n for n, c in several["controllers"].items() if c["leader"]), None)
        url = several["controllers"][lead]["url"] if lead else _any_url(st, url)
    return {"dir": st["dir"], "segment": st["segment"], "segment_secret": st["segment_secret"],
            "agent_token": st["agent_token"],
            "heartbeat": f"{_hb_addr(st)}:{st['settings']['heartbeat_port']}",
            "controller": {"url": url, "token": ctl.get("token"),
                           **({"skipped": ctl["skipped"]} if ctl.get("skipped") else {})},
            **several,
            "hosts": hosts, **(vms.status(lab_dir) if st.get("vms") else {}),
            **os_servers.status(st)}


def _hb_addr(st: dict[str, Any]) -> str:
    """Where heartbeats go (with several controllers: the first; agents send to all)."""
    first = next(iter(st.get("controllers", {}).values()), None)
    return str(first["address"]) if first else net.BRIDGE_ADDR


def _any_url(st: dict[str, Any], default: str | None) -> str | None:
    try:
        return controllers.api_url(st)
    except Conflict:
        return default

