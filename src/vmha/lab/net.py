"""Commands the lab runs: iproute2, iptables, and process checks via /proc.

Called by `vmha.lab.lab` only. Every command runs with a timeout; a failing
command raises LabCommandFailed carrying the command and its stderr.
Processes are only ever signalled after `owned_by_lab` confirmed, from
/proc, that the PID still runs one of the lab's programs.

Naming (LAB-NOTES): root-namespace bridge `vmhabr0` 198.18.0.1/24; host N
is netns `vmha-hostN` with root-side veth `vmha-hN` (in-namespace `eth0`
enslaved to `br0`, which carries 198.18.0.(10+N) and, on the VM network,
198.18.1.(255-N)). Names stay <= 15 chars.
The two ends of that cable are two switches: the root-side `vmha-hN` is
the switch port (`network-down` sets it down), the in-namespace `eth0` is
the host's NIC (down while the host is powered off: nothing answers).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from vmha.errors import ConfigError, VmhaError

BRIDGE = "vmhabr0"
BRIDGE_ADDR = "198.18.0.1"
PREFIX_LEN = 24
NETNS_PREFIX = "vmha-host"
VETH_PREFIX = "vmha-h"
MAX_HOSTS = 200  # 198.18.0.11 .. 198.18.0.210
NIC = "eth0"  # the host's end of its veth, inside its namespace
REQUIRED_TOOLS = ("ip", "iptables", "iptables-save", "unshare", "setsid")


class LabCommandFailed(VmhaError):
    """A lab command failed; the message holds the command and its stderr."""


def check_prerequisites() -> None:
    """Raise ConfigError (one line) when the lab cannot run here."""
    if os.geteuid() != 0:
        raise ConfigError("vmha lab needs root (network namespaces, iptables); run it with sudo")
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        raise ConfigError(
            f"vmha lab needs {', '.join(missing)}; install them with scripts/ensure-lab-deps.sh"
        )


def run(cmd: Sequence[str], check: bool = True, timeout: float = 10.0) -> str:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabCommandFailed(f"{' '.join(cmd)}: {exc}") from exc
    if check and done.returncode != 0:
        raise LabCommandFailed(f"{' '.join(cmd)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def netns_name(index: int) -> str:
    return f"{NETNS_PREFIX}{index}"


def veth_name(index: int) -> str:
    return f"{VETH_PREFIX}{index}"


def host_address(index: int) -> str:
    return f"198.18.0.{10 + index}"


def host_vm_net_address(index: int) -> str | None:
    """Host N's address on the VM network, 198.18.1.(255-N) for N <= 140 (the
    VMs use .11-.110): its agent probes the guests on its bridge from it."""
    return f"198.18.1.{255 - index}" if index <= 140 else None


def link_exists(name: str, netns: str | None = None) -> bool:
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    return run([*prefix, "link", "show", name], check=False).strip() != ""


def list_netns() -> list[str]:
    return [line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line.strip()]


def ensure_bridge() -> bool:
    """Create vmhabr0 with 198.18.0.1/24 unless present; True if created."""
    if link_exists(BRIDGE):
        return False
    run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    run(["ip", "addr", "add", f"{BRIDGE_ADDR}/{PREFIX_LEN}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    return True


def create_host_net(index: int) -> None:
    """Netns + veth into the bridge + br0 carrying the host address."""
    ns, veth = netns_name(index), veth_name(index)
    if ns not in list_netns():
        run(["ip", "netns", "add", ns])
    if not link_exists(veth):
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p"])
        run(["ip", "link", "set", f"{veth}p", "netns", ns])
        run(["ip", "-n", ns, "link", "set", f"{veth}p", "name", NIC])
    run(["ip", "link", "set", veth, "master", BRIDGE])
    run(["ip", "link", "set", veth, "up"])
    inside = ["ip", "-n", ns]
    if not link_exists("br0", ns):
        run([*inside, "link", "add", "br0", "type", "bridge"])
        run([*inside, "addr", "add", f"{host_address(index)}/{PREFIX_LEN}", "dev", "br0"])
        vm_net = host_vm_net_address(index)
        if vm_net is not None:
            run([*inside, "addr", "add", f"{vm_net}/24", "dev", "br0"])
    run([*inside, "link", "set", NIC, "master", "br0"])
    for dev in ("lo", NIC, "br0"):
        run([*inside, "link", "set", dev, "up"])


def delete_host_net(index: int) -> None:
    ns, veth = netns_name(index), veth_name(index)
    if link_exists(veth):
        run(["ip", "link", "del", veth], check=False)
    if ns in list_netns():
        run(["ip", "netns", "del", ns], check=False)


def set_link(index: int, up: bool) -> None:
    """The switch port (root-side veth): down cuts a running host off."""
    run(["ip", "link", "set", veth_name(index), "up" if up else "down"])


def set_nic(index: int, up: bool) -> None:
    """The host's NIC (its veth end inside the namespace): down while the
    host is powered off, so the kernel answers nothing for it (no ARP, no
    RST, no ICMP) and its VMs, bridged behind it, are cut off too."""
    run(["ip", "-n", netns_name(index), "link", "set", NIC, "up" if up else "down"])


def link_state(index: int) -> dict[str, str]:
    """Administrative state of both ends, read from the kernel: `port` (the
    root-side veth) and `nic` (eth0 in the namespace), each "up", "down" or
    "missing"."""
    return {"port": _admin_state(["ip", "-j", "link", "show", "dev", veth_name(index)]),
            "nic": _admin_state(["ip", "-j", "-n", netns_name(index), "link", "show", "dev",
                                 NIC])}


def _admin_state(cmd: list[str]) -> str:
    try:
        flags = json.loads(run(cmd, check=False))[0]["flags"]
    except (ValueError, LookupError, TypeError):  # no such link or namespace: empty output
        return "missing"
    return "up" if "UP" in flags else "down"


def iptables(netns: str, op: str, rule: Sequence[str]) -> None:
    """Insert (-I) or delete (-D) one rule in the host's netns."""
    run(["ip", "netns", "exec", netns, "iptables", "-w", op, *rule])


def spawn_detached(cmd: Sequence[str], log_path: Path,
                   env: Mapping[str, str] | None = None) -> int:
    """Start `cmd` in its own session, orphaned (init reaps it); its PID.
    `env`: its whole environment (default: ours)."""
    script = 'setsid "$@" >>"$LOG" 2>&1 </dev/null & echo $!'
    env = {**(os.environ if env is None else env), "LOG": str(log_path)}
    out = subprocess.run(["sh", "-c", script, "sh", *cmd], capture_output=True, text=True,
                         env=env, timeout=10, check=True).stdout
    return int(out.strip())


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] not in ("Z", "X")


def owned_by_lab(pid: int, *markers: str) -> bool:
    """The PID still runs a lab program: its command line holds every marker."""
    line = cmdline(pid)
    return bool(line) and all(m in line for m in markers)


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def pid_ns(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return ""


def pids_in_pid_ns(ns_link: str) -> list[int]:
    """Every live PID (root-namespace numbers) in the given PID namespace."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and pid_ns(int(entry)) == ns_link and alive(int(entry)):
            found.append(int(entry))
    return sorted(found)


def kill(pid: int, *markers: str) -> bool:
    """SIGKILL `pid` if it still belongs to the lab; True if signalled."""
    if not alive(pid) or not owned_by_lab(pid, *markers):
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pids: Sequence[int], timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.02)
    return not any(alive(p) for p in pids)
