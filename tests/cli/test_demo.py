"""`vmha demo` end to end: a real controller, the example cluster, the simulator."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_demo_runs_shows_the_cluster_and_stops_its_controller(tmp_path: Path) -> None:
    vmha = Path(sys.executable).with_name("vmha")
    done = subprocess.run(
        [str(vmha), "demo", "--simulated", "--no-hold", "--dir", str(tmp_path),
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False,
        env={"PATH": f"{vmha.parent}:/usr/bin:/bin", "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for expected in ("host1", "host3", "vm4", "host.maintenance_on", "host.failed",
                     "instance.evacuated", "instance.watchdog", "safety invariants held",
                     "demo controller stopped"):
        assert expected in out, f"{expected!r} missing from the demo's output:\n{out}"
    assert (tmp_path / "vmha.db").exists()
