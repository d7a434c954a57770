"""The lab's pluggable "start a controller" step.

If `vmha serve` exists (the `vmha` script beside this Python answers
`serve --help`),
`start_controller` writes DIR/controller/vmha.toml (SQLite under
DIR/controller, a generated admin token, the API on BRIDGE_ADDR:port) and
starts it detached; else it returns a record saying why it skipped. The
heartbeat receiver is the controller's: agents send to 198.18.0.1:8791.

Called by `vmha.lab.lab.up`; returns plain data for lab.json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
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


def write_config(ctl_dir: Path, address: str, port: int, token: str) -> Path:
    ctl_dir.mkdir(parents=True, exist_ok=True)
    path = ctl_dir / "vmha.toml"
    path.write_text(
        "[api]\n"
        f'listen = "{address}:{port}"\n'
        f'tokens = [{{ token = {json.dumps(token)}, role = "admin", name = "lab" }}]\n'
        "[store]\n"
        f"data_dir = {json.dumps(str(ctl_dir))}\n"
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


def start_controller(lab_dir: Path, port: int, token: str) -> dict[str, Any]:
    url = f"http://{net.BRIDGE_ADDR}:{port}"
    script = vmha_script()
    if script is None or not serve_available():
        return {"url": None, "token": token, "pid": None,
                "skipped": "vmha serve is not available in this build"}
    ctl_dir = lab_dir / "controller"
    cfg = write_config(ctl_dir, net.BRIDGE_ADDR, port, token)
    pid = net.spawn_detached(
        [script, "serve", "--config", str(cfg)], ctl_dir / "serve.log"
    )
    healthy = wait_healthy(url)
    return {"url": url, "token": token, "pid": pid, "config": str(cfg), "healthy": healthy}
