"""Each lab host's BMCs: an IPMI and a Redfish emulator in the root namespace.

A real data centre's management network is separate from the hosts'
network, so a host cut off from the cluster can still be fenced: here the
emulators listen on 127.0.0.1 in the root namespace (on the bridge's
198.18.0.1 in a lab with several controllers, each in a network namespace
of its own: lab.json's `bmc_address`), one IPMI port
(`IPMI_BASE + N`) and one HTTPS Redfish port (`REDFISH_BASE + N`) per host
N, with a random 20-character password (IPMI's limit) kept in a 0600 file
in the host's directory.
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

from vmha.domain.bmc import IPMI_PASSWORD_MAX
from vmha.lab import net, state

IPMI_BASE = 6230
REDFISH_BASE = 8440
BMC_ADDR = "127.0.0.1"
USER = "admin"
IPMI_MARK = "vmha.lab.bmc_ipmi"
REDFISH_MARK = "vmha.lab.bmc_redfish"
READY_TIMEOUT_S = 20.0
KINDS = ("ipmi", "redfish")


def endpoints(lab_dir: Path, h: dict[str, Any], name: str, address: str = BMC_ADDR
              ) -> dict[str, Any]:
    """The BMC record of one host (before anything is started), listening on `address`."""
    hdir = Path(h["dir"])
    pw_file = hdir / "bmc.password"
    # IPMI 2.0 passwords are at most 20 bytes (ipmitool refuses longer ones):
    # 15 random bytes are 20 url-safe characters. A longer one left by an
    # older lab is replaced.
    if not pw_file.exists() or len(pw_file.read_bytes().strip()) > IPMI_PASSWORD_MAX:
        pw_file.write_text(secrets.token_urlsafe(15) + "\n")
        pw_file.chmod(0o600)
    password = pw_file.read_text().strip()
    index = int(h["index"])
    return {
        "ipmi": {"address": address, "port": IPMI_BASE + index, "username": USER,
                 "password": password, "pid": None},
        "redfish": {"url": f"https://{address}:{REDFISH_BASE + index}", "system": name,
                    "username": USER, "password": password, "pid": None,
                    "ca_bundle": str(lab_dir / "bmc" / "cert.pem")},
        "password_file": str(pw_file),
    }


def start(lab_dir: Path, st: dict[str, Any], name: str, only: str | None = None
          ) -> dict[str, Any]:
    """Start the host's emulators (`only`: just `ipmi` or `redfish`)."""
    h = st["hosts"][name]
    bmc = h.get("bmc") or endpoints(lab_dir, h, name, st.get("bmc_address", BMC_ADDR))
    h["bmc"] = bmc
    (lab_dir / "bmc").mkdir(exist_ok=True)
    power = ["--lab-dir", str(lab_dir), "--lab-host", name]
    common = ["--address", bmc["ipmi"]["address"], "--user", USER,
              "--password-file", bmc["password_file"]]
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
