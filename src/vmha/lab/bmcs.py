"""Each lab host's BMCs: an IPMI and a Redfish emulator in the root namespace.

A real data centre's management network is separate from the hosts'
network, so a host cut off from the cluster can still be fenced: here the
emulators listen on 127.0.0.1 in the root namespace, one IPMI port
(`IPMI_BASE + N`) and one HTTPS Redfish port (`REDFISH_BASE + N`) per host
N, with a random password kept in a 0600 file in the host's directory.
Their power backend is `vmha.lab.powerctl.LabHostPower`, in the emulator's
process (off kills the host's PID namespace, on starts it fresh, status
says whether it runs).

`start(lab_dir, st, name)` records the endpoints and PIDs in lab.json before
it waits for them; `stop(st, name)` kills them (only processes whose command
line still marks them as this host's emulator). Called by `vmha.lab.lab`
(up), `vmha.lab.faults` (bmc-down, heal, down).
"""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path
from typing import Any

from vmha.lab import net, state

IPMI_BASE = 6230
REDFISH_BASE = 8440
BMC_ADDR = "127.0.0.1"
USER = "admin"
IPMI_MARK = "vmha.lab.bmc_ipmi"
REDFISH_MARK = "vmha.lab.bmc_redfish"
READY_TIMEOUT_S = 20.0
KINDS = ("ipmi", "redfish")


def endpoints(lab_dir: Path, h: dict[str, Any], name: str) -> dict[str, Any]:
    """The BMC record of one host (before anything is started)."""
    hdir = Path(h["dir"])
    pw_file = hdir / "bmc.password"
    if not pw_file.exists():
        pw_file.write_text(secrets.token_urlsafe(16) + "\n")
        pw_file.chmod(0o600)
    password = pw_file.read_text().strip()
    index = int(h["index"])
    return {
        "ipmi": {"address": BMC_ADDR, "port": IPMI_BASE + index, "username": USER,
                 "password": password, "pid": None},
        "redfish": {"url": f"https://{BMC_ADDR}:{REDFISH_BASE + index}", "system": name,
                    "username": USER, "password": password, "pid": None,
                    "ca_bundle": str(lab_dir / "bmc" / "cert.pem")},
        "password_file": str(pw_file),
    }


def start(lab_dir: Path, st: dict[str, Any], name: str, only: str | None = None
          ) -> dict[str, Any]:
    """Start the host's emulators (`only`: just `ipmi` or `redfish`)."""
    h = st["hosts"][name]
    bmc = h.get("bmc") or endpoints(lab_dir, h, name)
    h["bmc"] = bmc
    (lab_dir / "bmc").mkdir(exist_ok=True)
    power = ["--lab-dir", str(lab_dir), "--lab-host", name]
    common = ["--address", BMC_ADDR, "--user", USER, "--password-file", bmc["password_file"]]
    ipmi_cmd = [sys.executable, "-m", IPMI_MARK, "--port", str(bmc["ipmi"]["port"]),
                *common, *power]
    redfish_cmd = [sys.executable, "-m", REDFISH_MARK, "--port",
                   str(int(bmc["redfish"]["url"].rsplit(":", 1)[1])), "--system", name,
                   "--cert", str(lab_dir / "bmc" / "cert.pem"),
                   "--key", str(lab_dir / "bmc" / "key.pem"), *common, *power]
    log = Path(h["dir"]) / "bmc.log"
    seen = log.stat().st_size if log.exists() else 0  # wait for new lines only
    commands = {"ipmi": ipmi_cmd, "redfish": redfish_cmd}
    kinds = KINDS if only is None else (only,)
    for kind in kinds:
        bmc[kind]["pid"] = net.spawn_detached(commands[kind], log)
    state.save(lab_dir, st)  # recorded before we wait: `down` finds them
    _wait_listening(bmc, log, kinds, seen)
    return bmc


def _wait_listening(bmc: dict[str, Any], log: Path, kinds: tuple[str, ...], seen: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    all_ports = {"ipmi": bmc["ipmi"]["port"],
                 "redfish": int(bmc["redfish"]["url"].rsplit(":", 1)[1])}
    ports = {all_ports[kind] for kind in kinds}
    while time.monotonic() < deadline:
        text = log.read_bytes()[seen:].decode(errors="replace") if log.exists() else ""
        if all(f":{port}" in text for port in ports):
            return
        time.sleep(0.1)
    raise net.LabCommandFailed(f"BMC emulators did not start within {READY_TIMEOUT_S} s; "
                               f"see {log}")


def stop(st: dict[str, Any], name: str, only: str | None = None) -> list[int]:
    """Kill the host's emulators (`only`: just that one), if they still
    run; the PIDs signalled."""
    bmc = st["hosts"][name].get("bmc") or {}
    killed = []
    for kind, mark in (("ipmi", IPMI_MARK), ("redfish", REDFISH_MARK)):
        if only is not None and kind != only:
            continue
        pid = (bmc.get(kind) or {}).get("pid")
        if pid and net.kill(pid, mark, bmc.get("password_file", "")):
            killed.append(pid)
    return killed


def public(bmc: dict[str, Any] | None) -> dict[str, Any]:
    """What `vmha lab status --json` shows of a host's BMCs."""
    if not bmc:
        return {}
    ipmi, redfish = bmc["ipmi"], bmc["redfish"]
    return {
        "ipmi": {k: ipmi[k] for k in ("address", "port", "username", "password")},
        "redfish": {k: redfish[k] for k in ("url", "system", "username", "password",
                                            "ca_bundle")},
    }


def stop_all(lab_dir: Path) -> list[int]:
    """Kill every BMC emulator of the lab in `lab_dir`, found by command line
    (their power options name the lab's directory): works without lab.json."""
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        for mark in (IPMI_MARK, REDFISH_MARK):
            if net.kill(pid, mark, f"--lab-dir {lab_dir.resolve()} "):
                killed.append(pid)
    return killed
