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


def write_config(ctl_dir: Path, address: str, port: int, tokens: Mapping[str, str],
                 settings: Mapping[str, Any]) -> Path:
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
        f"data_dir = {q(str(ctl_dir))}\n"
        "[heartbeat]\n"
        f'listen = "{address}:{settings["heartbeat_port"]}"\n'
        "[controller]\n"
        f"heartbeat_interval_s = {float(settings['heartbeat_interval_s'])}\n"
        f"self_fence_deadline_s = {self_fence_deadline(settings)}\n"
        'default_fence_levels = [["agent_watchdog"], ["manual"]]\n'
        + "".join(f"{k} = {q(v)}\n" for k, v in sorted(settings.get("controller", {}).items()))
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


def create_segment(url: str, token: str, name: str) -> None:
    """The lab's segment, so that registering agents have a home."""
    req = urllib.request.Request(  # noqa: S310 - our own controller on the lab bridge
        f"{url}/v1/segments", data=json.dumps({"name": name}).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10):  # noqa: S310
            return
    except urllib.error.HTTPError as exc:
        if exc.code != 409:  # already there (a restarted controller): fine
            raise net.LabCommandFailed(
                f"the controller refused segment {name!r}: HTTP {exc.code}") from exc


def start_controller(lab_dir: Path, port: int, token: str,
                     settings: Mapping[str, Any], segment: str) -> dict[str, Any]:
    url = f"http://{net.BRIDGE_ADDR}:{port}"
    agent_token = secrets.token_urlsafe(24)
    script = vmha_script()
    if script is None or not serve_available():
        return {"url": None, "token": token, "pid": None,
                "skipped": "vmha serve is not available in this build"}
    ctl_dir = lab_dir / "controller"
    cfg = write_config(ctl_dir, net.BRIDGE_ADDR, port,
                       {"admin": token, "agent": agent_token}, settings)
    pid = net.spawn_detached(
        [script, "serve", "--config", str(cfg)], ctl_dir / "serve.log"
    )
    healthy = wait_healthy(url)
    if healthy:
        create_segment(url, token, segment)
    return {"url": url, "token": token, "agent_token": agent_token, "pid": pid,
            "config": str(cfg), "healthy": healthy}
