"""PID 1 of a lab host's PID namespace: reaps orphans, runs the agent, and
is the host's lab watchdog.

Started by the lab as
`ip netns exec vmha-hostN unshare --pid --fork --mount-proc --kill-child
python -m vmha.lab.reaper --host-dir DIR --watchdog-timeout T -- AGENT...`.

- Wipes the host's embedded libvirt run state (`DIR/libvirt/run`) when it
  starts, i.e. when the host boots: a new driver after a power loss may
  otherwise list dead domains as running (LAB-NOTES).
- Reaps every child and orphan (LAB-NOTES: a PID 1 that does not reap
  leaves killed QEMUs as zombies and later destroys hang).
- Starts the agent command once at start, and again on a b"start-agent"
  datagram on `DIR/reaper.sock` (the lab's `restart-agent`); it never
  restarts a dead agent by itself (an agent crash must stay visible).
- Watchdog: armed by the first b"feed" datagram; if no feed arrives within
  `--watchdog-timeout` seconds it exits, and the kernel kills every process
  of the namespace: the host "resets" (SIGKILL from inside a PID namespace
  cannot reach its PID 1, so PID 1 itself is the watchdog).

Standard library only and small: it runs once per lab host.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 0.05


def _log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} reaper: {msg}", file=sys.stderr, flush=True)


class Reaper:
    def __init__(self, host_dir: Path, timeout_s: float, agent_cmd: list[str]) -> None:
        self.host_dir = host_dir
        self.timeout_s = timeout_s
        self.agent_cmd = agent_cmd
        self.agent_pid: int | None = None
        self.last_feed: float | None = None  # None: not armed yet
        sock_path = host_dir / "reaper.sock"
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(sock_path))
        os.chmod(sock_path, 0o600)

    def start_agent(self) -> None:
        if self.agent_pid is not None or not self.agent_cmd:
            return
        log = open(self.host_dir / "agent.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                self.agent_cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()
        self.agent_pid = proc.pid
        (self.host_dir / "agent.pid").write_text(str(proc.pid))
        _log(f"agent started (pid {proc.pid} in the host)")

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.agent_pid:
                _log(f"agent exited (status {status})")
                self.agent_pid = None

    def handle(self, data: bytes) -> None:
        if data == b"feed":
            self.last_feed = time.monotonic()
        elif data == b"start-agent":
            self.reap()  # a just-killed agent may not have been reaped yet
            self.start_agent()

    def run(self) -> int:
        self.start_agent()
        while True:
            ready, _, _ = select.select([self.sock], [], [], POLL_S)
            if ready:
                self.handle(self.sock.recv(64))
            self.reap()
            if self.last_feed is not None and time.monotonic() - self.last_feed > self.timeout_s:
                _log(f"watchdog not fed for {self.timeout_s:.2f} s: resetting the host")
                return 0  # PID 1 exits: the kernel kills the whole namespace


def wipe_libvirt_run(host_dir: Path) -> None:
    """The host boots: no QEMU of its embedded libvirt survived the last power-off."""
    run = host_dir / "libvirt" / "run"
    if run.exists():
        shutil.rmtree(run, ignore_errors=True)
        _log(f"host boot: wiped the libvirt run state {run}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vmha-lab-reaper")
    parser.add_argument("--host-dir", required=True, type=Path)
    parser.add_argument("--watchdog-timeout", required=True, type=float)
    parser.add_argument("agent", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.agent[1:] if args.agent[:1] == ["--"] else args.agent
    wipe_libvirt_run(args.host_dir)
    return Reaper(args.host_dir, args.watchdog_timeout, cmd).run()


if __name__ == "__main__":
    sys.exit(main())
