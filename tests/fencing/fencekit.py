"""Helpers for the fencing tests: free ports, emulator processes.

Each emulator is a subprocess started by the fixture on a free port below
32768 (outside Linux's ephemeral range, so no client socket takes it) and
stopped by its PID in the finalizer.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from vmha.adapters.fencing.config import BmcEndpoint

USER = "fenceadmin"
PASSWORD = "Sup3r-Secret-Pw"  # grepped for in logs and error messages


def free_port() -> int:
    """A port in 20000-32767 free for both UDP and TCP on 127.0.0.1."""
    for _ in range(200):
        port = random.randrange(20000, 32768)
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port in 20000-32767")


@dataclass(frozen=True)
class RunningBmc:
    endpoint: BmcEndpoint
    state_file: Path
    log_file: Path
    pid: int

    def power_file(self) -> str:
        return self.state_file.read_text().strip()


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def wait_for_line(proc: subprocess.Popen[bytes], log_file: Path, text: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if text in log_file.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise RuntimeError(f"emulator did not start: {log_file.read_text(errors='replace')}")
