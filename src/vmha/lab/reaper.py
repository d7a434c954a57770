"""PID 1 of a lab host's PID namespace: reaps orphans, runs the agent, and
is the host's lab watchdog.

Started by the lab as
`ip netns exec vmha-hostN unshare --pid --fork --mount-proc --kill-child
python -m vmha.lab.reaper --host-dir DIR --watchdog-timeout T --nic eth0 -- AGENT...`.

- Wipes the host's embedded libvirt run state (`DIR/libvirt/run`) when it
  starts, i.e. when the host boots: a new driver after a power loss may
  otherwise list dead domains as running (LAB-NOTES).
- Reaps every child and orphan (LAB-NOTES: a PID 1 that does not reap
  leaves killed QEMUs as zombies and later destroys hang).
- Starts the agent command once at start, and again on a b"start-agent"
  datagram on `DIR/reaper.sock` (the lab's `restart-agent`); it never
  restarts a dead agent by itself (an agent crash must stay visible).
- Starts each `--service NAME=JSON_ARGV` once at start, beside the agent
  (an OpenStack lab host's `nova-compute`), its output in `DIR/NAME.log`;
  never restarted: it comes back when the host boots again.
- Watchdog: armed by the first b"feed" datagram; if no feed arrives within
  `--watchdog-timeout` seconds it exits, and the kernel kills every process
  of the namespace: the host "resets" (SIGKILL from inside a PID namespace
  cannot reach its PID 1, so PID 1 itself is the watchdog).
- Whenever it exits (watchdog reset, or a crash: a host's kernel panic),
  it first sets `--nic` down: the lab boots a host again only on
  power-on, and until then a host that is down must answer nothing (its
  namespace's kernel would otherwise send RSTs and ICMP errors for it).

Standard library only and small: it runs once per lab host.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
    def __init__(self, host_dir: Path, timeout_s: float, agent_cmd: list[str],
                 services: dict[str, list[str]] | None = None) -> None:
        self.host_dir = host_dir
        self.services = services or {}
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

    def _spawn(self, cmd: list[str], name: str) -> int:
        log = open(self.host_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        return proc.pid

    def start_agent(self) -> None:
        if self.agent_pid is not None or not self.agent_cmd:
            return
        self.agent_pid = self._spawn(self.agent_cmd, "agent")
        (self.host_dir / "agent.pid").write_text(str(self.agent_pid))
        _log(f"agent started (pid {self.agent_pid} in the host)")

    def start_services(self) -> None:
        for name, cmd in self.services.items():
            _log(f"{name} started (pid {self._spawn(cmd, name)} in the host)")

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
        self.start_services()
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


def silence(nic: str) -> None:
    """The host goes down: its NIC first, so nothing answers for it."""
    try:
        done = subprocess.run(["ip", "link", "set", nic, "down"], capture_output=True,
                              text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _log(f"could not set {nic} down: {exc}")
        return
    if done.returncode != 0:
        _log(f"could not set {nic} down: {done.stderr.strip()}")
    else:
        _log(f"host down: {nic} set down")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vmha-lab-reaper")
    parser.add_argument("--host-dir", required=True, type=Path)
    parser.add_argument("--watchdog-timeout", required=True, type=float)
    parser.add_argument("--nic", default="", help="set down when the host goes down")
    parser.add_argument("--service", action="append", default=[],
                        help="NAME=JSON_ARGV: also run this at boot (e.g. nova-compute)")
    parser.add_argument("agent", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.agent[1:] if args.agent[:1] == ["--"] else args.agent
    services = {}
    for spec in args.service:
        name, _, argv_json = spec.partition("=")
        services[name] = [str(a) for a in json.loads(argv_json)]
    wipe_libvirt_run(args.host_dir)
    try:
        return Reaper(args.host_dir, args.watchdog_timeout, cmd, services).run()
    finally:
        if args.nic:
            silence(args.nic)


if __name__ == "__main__":
    sys.exit(main())
