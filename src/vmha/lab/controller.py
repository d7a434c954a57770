"""The lab's pluggable "start a controller" step.

If `vmha serve` exists (the `vmha` script beside this Python answers
`serve --help`),
`start_controller` writes DIR/controller/vmha.toml (SQLite under
DIR/controller, a generated admin token and an agent token, the API on
BRIDGE_ADDR:port, the heartbeat receiver on BRIDGE_ADDR:heartbeat_port,
the detector's interval and the self-fence deadline matching the lab's
agents), starts it detached and creates the lab's segment; else it returns
a record saying why it skipped. With a controller, the agents register
themselves (`POST /v1/agents/register`) and get their heartbeat secrets
from it; without one they use the lab's pre-shared secrets.

Called by `vmha.lab.lab.up`; returns plain data for lab.json.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vmha.lab import net

SERVE_MARKER = "serve"
LEVELS_WITH_BMC = [["redfish"], ["ipmi"], ["agent_watchdog"]]
LEVELS_WITHOUT_BMC = [["agent_watchdog"], ["manual"]]


def vmha_script() -> str | None:
    beside = Path(sys.executable).with_name("vmha")
    return str(beside) if beside.exists() else shutil.which("vmha")


def serve_available() -> bool:
    script = vmha_script()
    if script is None:
        return False
    try:
        done = subprocess.run([script, "serve", "--help"], capture_output=True, timeout=30,
                              check=False)
    except OSError:
        return False
    return done.returncode == 0


def self_fence_deadline(settings: Mapping[str, Any]) -> float:
    """What the controller may assume about a cut-off lab host (docs/agent.md):
    contact window (3 intervals) + isolation timeout + one interval + the
    watchdog timeout, plus a margin of 10 % or 2 s, whichever is larger."""
    interval = float(settings["heartbeat_interval_s"])
    base = (3 * interval + float(settings["isolation_timeout_s"]) + interval
            + float(settings["watchdog_timeout_s"]))
    return round(base + max(2.0, 0.1 * base), 1)


def bmc_sections(bmcs: Mapping[str, Any], fencing: Mapping[str, Any] | None = None) -> str:
    """`[bmcs.<host>]` entries for the hosts whose BMC emulators run, and the
    `[fencing]` section: the lab's certificate authority for Redfish and the
    other `fencing` keys (several controllers: the shared secret key file)."""
    q = json.dumps
    out, ca = [], None
    for name, bmc in sorted(bmcs.items()):
        if not bmc:
            continue
        ipmi, redfish = bmc["ipmi"], bmc["redfish"]
        ca = redfish["ca_bundle"]
        out += [f"[bmcs.{name}]", f"username = {q(ipmi['username'])}",
                f"password_file = {q(bmc['password_file'])}",
                f"ipmi_address = {q(ipmi['address'])}", f"ipmi_port = {ipmi['port']}",
                f"redfish_url = {q(redfish['url'])}", f"redfish_system = {q(redfish['system'])}"]
    keys = {**(fencing or {}), **({"redfish_ca_bundle": ca} if ca else {})}
    if keys:
        out += ["[fencing]", *(f"{k} = {q(v)}" for k, v in keys.items())]
    return "".join(line + "\n" for line in out)


def cloud_section(settings: Mapping[str, Any], cloud: str = "") -> str:
    """The lab's agents run libvirt: the controller drives them (libvirt
    cloud); `cloud`, when given, is the whole section for another (OpenStack)."""
    if cloud:
        return cloud
    if not settings.get("image_dir"):
        return ""
    return ('[cloud]\nadapter = "libvirt"\n'
            f"image_dir = {json.dumps(str(settings['image_dir']))}\n")


# The lab's own [controller] defaults (a lab's `controller` settings win):
# its guests boot under TCG on a machine that may be busy with other work,
# so a start is verified for up to 90 s instead of 30 s (only a failure
# waits longer; a guest that answers is verified at once).
LAB_CONTROLLER: Mapping[str, Any] = {"verify_timeout_s": 90.0}


def write_config(ctl_dir: Path, address: str, port: int, tokens: Mapping[str, str],
                 settings: Mapping[str, Any], bmcs: Mapping[str, Any] | None = None,
                 cloud: str = "", *, store_url: str = "",
                 fencing: Mapping[str, Any] | None = None, extra: str = "") -> Path:
    """DIR/vmha.toml of a lab controller. Several controllers (vmha.lab.controllers)
    add their shared store's `store_url`, `fencing` keys and `extra` sections."""
    ctl_dir.mkdir(parents=True, exist_ok=True)
    path = ctl_dir / "vmha.toml"
    q = json.dumps
    path.write_text(
        "[api]\n"
        f'listen = "{address}:{port}"\n'
        "tokens = [\n"
        f'  {{ token = {q(tokens["admin"])}, role = "admin", name = "lab" }},\n'
        f'  {{ token = {q(tokens["agent"])}, role = "agent", name = "lab-agents" }},\n'
        "]\n"
        "[store]\n"
        + (f"url = {q(store_url)}\n" if store_url else "")
        + f"data_dir = {q(str(ctl_dir))}\n"
        "[heartbeat]\n"
        f'listen = "{address}:{settings["heartbeat_port"]}"\n'
        "[controller]\n"
        f"heartbeat_interval_s = {float(settings['heartbeat_interval_s'])}\n"
        f"self_fence_deadline_s = {self_fence_deadline(settings)}\n"
        f"default_fence_levels = {q(LEVELS_WITH_BMC if bmcs else LEVELS_WITHOUT_BMC)}\n"
        + "".join(f"{k} = {q(v)}\n" for k, v in
                  sorted({**LAB_CONTROLLER, **settings.get("controller", {})}.items()))
        + cloud_section(settings, cloud)
        + bmc_sections(bmcs or {}, fencing)
        + extra
    )
    path.chmod(0o600)
    return path


def wait_healthy(url: str, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except OSError:
            time.sleep(0.2)
    return False


def api_request(url: str, token: str, method: str, path: str, body: Any = None,
                timeout_s: float = 10.0) -> Any:
    """One call to the lab's controller API; its JSON answer (None if empty).
    HTTP errors raise urllib.error.HTTPError (its `code` says which)."""
    req = urllib.request.Request(  # noqa: S310 - our own controller on the lab bridge
        f"{url}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310
        raw = resp.read()
    return json.loads(raw) if raw else None


def create_segment(url: str, token: str, name: str) -> None:
    """The lab's segment, so that registering agents have a home."""
    try:
        api_request(url, token, "POST", "/v1/segments", {"name": name})
    except urllib.error.HTTPError as exc:
        if exc.code != 409:  # already there (a restarted controller): fine
            raise net.LabCommandFailed(
                f"the controller refused segment {name!r}: HTTP {exc.code}") from exc


def start_controller(lab_dir: Path, port: int, token: str, settings: Mapping[str, Any],
                     segment: str, bmcs: Mapping[str, Any] | None = None,
                     cloud: str = "") -> dict[str, Any]:
    url = f"http://{net.BRIDGE_ADDR}:{port}"
    agent_token = secrets.token_urlsafe(24)
    script = vmha_script()
    if script is None or not serve_available():
        return {"url": None, "token": token, "pid": None,
                "skipped": "vmha serve is not available in this build"}
    ctl_dir = lab_dir / "controller"
    cfg = write_config(ctl_dir, net.BRIDGE_ADDR, port,
                       {"admin": token, "agent": agent_token}, settings, bmcs, cloud)
    pid = net.spawn_detached(
        [script, "serve", "--config", str(cfg)], ctl_dir / "serve.log"
    )
    healthy = wait_healthy(url)
    if healthy:
        create_segment(url, token, segment)
    return {"url": url, "token": token, "agent_token": agent_token, "pid": pid,
            "config": str(cfg), "healthy": healthy}


def kill_controller(ctl: dict[str, Any]) -> int | None:
    """SIGKILL the lab's controller (a crash, for tests); its PID, or None if
    it was not running. `ctl` is lab.json's controller record."""
    pid = ctl.get("pid")
    if not pid or not net.kill(pid, SERVE_MARKER, ctl.get("config", "")):
        return None
    net.wait_gone([pid])
    return int(pid)


def restart_controller(ctl: dict[str, Any], timeout_s: float = 20.0) -> int:
    """Start the lab's controller again on its existing config and store
    (after `kill_controller`); updates `ctl` with the new PID."""
    script = vmha_script()
    if script is None or not ctl.get("config"):
        raise net.LabCommandFailed("the lab has no controller to restart")
    cfg = Path(ctl["config"])
    ctl["pid"] = net.spawn_detached([script, "serve", "--config", str(cfg)],
                                    cfg.parent / "serve.log")
    ctl["healthy"] = wait_healthy(ctl["url"], timeout_s)
    if not ctl["healthy"]:
        raise net.LabCommandFailed(f"the controller did not come back; see {cfg.parent}/serve.log")
    return int(ctl["pid"])
