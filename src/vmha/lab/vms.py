"""The lab's protected VMs: real QEMU guests defined through the controller.

`create` builds (or reuses) the guest image, gives the root bridge an
address on the VM network (198.18.1.1/24, so the controller and tests reach
the guests' applications), and creates `vm1` ... `vmM` through the
controller's API (`POST /v1/instances` with a spec): the controller picks
up each definition and has the host's agent start it. Instances are spread
over the hosts round robin, `vmI` at 198.18.1.(10+I) with its application
on port 8080 (`/health`); the default policy is `auto` at every layer with
an http probe of `/health` (run by the host's agent) and the application
escalation `exec:/etc/init.d/app restart` (inside the guest), then `reset`.

`status` merges what the controller records (host, state) with what the
hypervisors really run (each agent's `GET /v1/domains`), so tests can assert
that no instance ever runs on two hosts. `guest_fault` makes a guest fail
for real through its failure control (`/cgi-bin/fail`, see docs/lab.md).

Called by `vmha.lab.lab`, `vmha.lab.faults` and tests; all state it needs
is in lab.json.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vmha.adapters.cloud.libvirt import domain_uuid
from vmha.config import default_data_dir
from vmha.errors import Conflict, NotFound, ValidationError
from vmha.lab import controllers, net, state
from vmha.lab.agentapi import agent_request
from vmha.lab.controller import api_request
from vmha.lab.image import APP_COMMAND, ensure_image

VM_NET = "198.18.1"
BRIDGE_VM_ADDR = f"{VM_NET}.1/24"
APP_PORT = 8080
IMAGE = "lab"
GUEST_FAULTS = {"guest-panic": "panic", "guest-hang": "hang", "app-kill": "app-kill",
                "app-hang": "app-hang", "guest-watchdog": "stop-watchdog"}
DEFAULT_POLICY: Mapping[str, Any] = {
    "host": "auto", "guest": "auto", "app": "auto",
    # Restart the application inside the guest first, then reset the guest.
    "app_actions": [f"exec:{APP_COMMAND} restart", "reset"], "app_grace_s": 20,
}


def app_probe(address: str) -> dict[str, Any]:
    """The lab VMs' http probe of their application (/health on :8080); no
    failure counts for the first 30 s after a (re)boot (TCG boots slowly)."""
    return {"kind": "http", "target": f"http://{address}:{APP_PORT}/health", "interval_s": 1,
            "timeout_s": 0.9, "failure_threshold": 2, "initial_delay_s": 30}
BOOT_TIMEOUT_S = 120.0


def default_image_root() -> Path:
    """Where the lab keeps guest images (`<root>/lab/...`), shared by labs."""
    return default_data_dir() / "images"


def vm_address(index: int) -> str:
    return f"{VM_NET}.{10 + index}"


def ensure_vm_network() -> None:
    """198.18.1.1/24 on the root bridge (idempotent)."""
    shown = net.run(["ip", "-o", "addr", "show", "dev", net.BRIDGE])
    if f" {BRIDGE_VM_ADDR} " not in shown:
        net.run(["ip", "addr", "add", BRIDGE_VM_ADDR, "dev", net.BRIDGE])


def prepare_image(image_root: Path) -> Path:
    """Build or reuse the guest image under `image_root/lab`; its folder."""
    image_root.mkdir(parents=True, exist_ok=True)
    for folder in (image_root, *image_root.parents):
        if folder == folder.parent:
            break
        folder.chmod(folder.stat().st_mode | 0o001)  # QEMU (libvirt-qemu) walks down to it
    ensure_image(image_root / IMAGE)
    return image_root / IMAGE


def _controller(st: Mapping[str, Any]) -> tuple[str, str]:
    ctl = st["controller"]
    if st.get("controllers"):  # several: one that runs uncut (followers forward)
        return controllers.api_url(dict(st)), ctl["token"]
    if not ctl.get("url") or not ctl.get("healthy"):
        raise Conflict("the lab's VMs need its controller; run `vmha lab up` with a controller")
    return ctl["url"], ctl["token"]


def instance_body(index: int, host: str, policy: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The instance of `vmI`; without a policy the lab's default with its probe."""
    addr = vm_address(index)
    if policy is None:
        policy = {**DEFAULT_POLICY, "probes": [app_probe(addr)]}
    return {
        "id": str(uuid.uuid4()), "name": f"vm{index}", "host": host,
        "resources": {"vcpus": 1, "ram_mb": 128, "disk_gb": 0}, "policy": dict(policy),
        "spec": {"image": IMAGE, "address": f"{addr}/24",
                 "health_url": f"http://{addr}:{APP_PORT}/health"},
    }


def create(lab_dir: Path, count: int, policies: Sequence[Mapping[str, Any]] = (),
           hosts: Sequence[str] | None = None, wait: bool = True) -> dict[str, Any]:
    """Create `count` VMs (policy i from `policies`, else auto) spread over
    `hosts` (default: every lab host); wait until their apps answer."""
    if not 0 <= count <= 100:
        raise ValidationError("vms", f"{count} is not in 0..100")
    st = state.load(lab_dir)
    url, token = _controller(st)
    ensure_vm_network()
    names = list(hosts or st["hosts"])
    first = len(st.setdefault("vms", {})) + 1
    for offset in range(count):
        index = first + offset
        policy = policies[offset] if offset < len(policies) else None
        body = instance_body(index, names[offset % len(names)], policy)
        st["vms"][body["name"]] = {"id": body["id"], "index": index,
                                   "address": vm_address(index)}
        state.save(lab_dir, st)  # recorded first: `down` finds them
        api_request(url, token, "POST", "/v1/instances", body)
    if wait:
        wait_running(lab_dir, [f"vm{first + i}" for i in range(count)])
    return status(lab_dir)


def wait_running(lab_dir: Path, names: Sequence[str], timeout_s: float = BOOT_TIMEOUT_S) -> None:
    """Until every named VM is recorded running (its app answered)."""
    deadline = time.monotonic() + timeout_s
    pending = set(names)
    while pending and time.monotonic() < deadline:
        now = status(lab_dir)["instances"]
        broken = sorted(n for n in pending if now.get(n, {}).get("state") == "error")
        if broken:
            raise net.LabCommandFailed(f"VMs {broken} failed to start; see "
                                       f"{lab_dir}/controller/serve.log")
        pending = {n for n in pending if now.get(n, {}).get("state") != "running"}
        if pending:
            time.sleep(0.5)
    if pending:
        raise net.LabCommandFailed(f"VMs {sorted(pending)} are not running after "
                                   f"{timeout_s:g} s; see the hosts' agent.log")


def qemu_processes(st: Mapping[str, Any]) -> dict[str, list[str]]:
    """Domain UUID -> lab hosts with a live QEMU process for it, read from
    /proc (the hypervisors' ground truth, even for hosts cut off the network)."""
    netns = {}
    for name, h in st["hosts"].items():
        try:
            netns[os.stat(f"/run/netns/{h['netns']}").st_ino] = name
        except OSError:
            continue
    found: dict[str, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        args = net.cmdline(int(entry)).split()
        if not args or "qemu-system" not in args[0] or "-uuid" not in args:
            continue
        try:
            host = netns.get(os.stat(f"/proc/{entry}/ns/net").st_ino)
        except OSError:
            continue
        if host is not None and net.alive(int(entry)):
            found.setdefault(args[args.index("-uuid") + 1], []).append(host)
    return found


def _agent_domains(address: str, token: str) -> list[dict[str, Any]]:
    """One host agent's `GET /v1/domains`; [] when it cannot be asked."""
    try:
        found: list[dict[str, Any]] = agent_request(address, token, "/v1/domains",
                                                    timeout_s=1.0).get("domains", [])
    except (OSError, ValueError):
        return []  # powered off or cut: it runs nothing we can see
    return found


def _domains(st: Mapping[str, Any]) -> dict[str, list[str]]:
    """Domain UUID -> hosts whose hypervisor runs it (agents asked in parallel)."""
    hosts = list(st["hosts"].items())
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        answers = pool.map(lambda item: _agent_domains(item[1]["address"], st["agent_token"]),
                           hosts)
        running: dict[str, list[str]] = {}
        for (name, _h), found in zip(hosts, answers, strict=True):
            for dom in found:
                if dom.get("state") in ("running", "paused", "crashed"):
                    running.setdefault(dom["uuid"], []).append(name)
    return running


def status(lab_dir: Path) -> dict[str, Any]:
    """`{"instances": {"vm1": {"id", "host", "address", "state", "running_on",
    "qemu_on"}}}`: the controller's record, the hosts whose hypervisor says the
    domain runs, and the hosts with a live QEMU process for it."""
    st = state.load(lab_dir)
    vms = st.get("vms", {})
    if not vms:
        return {"instances": {}}
    url, token = _controller(st)
    recorded = {i["id"]: i for i in api_request(
        url, token, "GET", "/v1/instances?limit=1000")["items"]}
    running = _domains(st)
    processes = qemu_processes(st)
    out = {}
    for name, vm in vms.items():
        rec = recorded.get(vm["id"], {})
        uuid_ = domain_uuid(vm["id"])
        out[name] = {"id": vm["id"], "address": vm["address"], "host": rec.get("host"),
                     "state": rec.get("state", "unknown"),
                     "running_on": sorted(running.get(uuid_, [])),
                     "qemu_on": sorted(processes.get(uuid_, []))}
    return {"instances": out}


def guest_fault(lab_dir: Path, vm: str, fault: str) -> dict[str, Any]:
    """Make guest `vm` fail: guest-panic, guest-hang, guest-watchdog, app-kill or
    app-hang (the application accepts connections and never answers)."""
    if fault not in GUEST_FAULTS:
        raise ValidationError("fault", f"{fault!r} is not one of {', '.join(GUEST_FAULTS)}")
    vms = state.load(lab_dir).get("vms", {})
    if vm not in vms:
        raise NotFound("lab VM", vm)
    at = time.time()
    url = f"http://{vms[vm]['address']}:{APP_PORT}/cgi-bin/fail?mode={GUEST_FAULTS[fault]}"
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            answer = resp.read().decode(errors="replace").strip()
    except (urllib.error.URLError, OSError) as exc:
        raise Conflict(f"{vm} did not take the fault {fault}: {exc}; is it running?") from exc
    return {"vm": vm, "fault": fault, "at": at, "answer": answer}
