"""A local etcd cluster (Debian's `etcd-server`) for the lab, tests and benchmarks.

`EtcdCluster(base_dir, size=3)` starts `size` members of one cluster on
this machine, each with its own data directory under `base_dir` and its own
client and peer ports (`client_port + i`, `peer_port + i`), all on
`address` (127.0.0.1 for tests; the lab bridge's address for
`vmha lab up --controllers N`, so that controllers in their own network
namespaces reach it and a fault can cut one of them off). Members can be
stopped, paused (SIGSTOP), resumed and restarted one by one to take quorum
away and give it back. `url` is the `[coordination] url` that reaches them.

Who uses it: `vmha.lab` (the several-controller lab), tests/coord and
bench/failover.py. What it is not: a production deployment (no TLS, no
authentication, everything on one machine); vmha never runs etcd in
production, operators do.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from vmha.errors import ConfigError

ETCD = "etcd"
READY_TIMEOUT_S = 20.0
CLIENT_PORT = 23791  # member i listens on CLIENT_PORT + i (below 32768)
PEER_PORT = 23891


@dataclass(frozen=True)
class EtcdMember:
    name: str
    client_url: str
    peer_url: str
    data_dir: Path
    log_path: Path


def etcd_binary() -> str:
    """The etcd server's path, or ConfigError naming the package."""
    found = shutil.which(ETCD)
    if found is None:
        raise ConfigError("etcd is not installed: `apt-get install etcd-server` "
                          "(scripts/ensure-etcd.sh does it)")
    return found


class EtcdCluster:
    """Members of one local etcd cluster; see the module docstring."""

    def __init__(self, base_dir: Path, size: int = 3, address: str = "127.0.0.1",
                 client_port: int = CLIENT_PORT, peer_port: int = PEER_PORT,
                 cluster_token: str = "vmha-lab") -> None:  # noqa: S107 - a name, no secret
        self.base_dir = base_dir
        self.address = address
        self.cluster_token = cluster_token
        self.members = [
            EtcdMember(
                name=f"etcd{i + 1}",
                client_url=f"http://{address}:{client_port + i}",
                peer_url=f"http://{address}:{peer_port + i}",
                data_dir=base_dir / f"etcd{i + 1}",
                log_path=base_dir / f"etcd{i + 1}.log",
            )
            for i in range(size)
        ]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """`etcd://host:port,host:port,...` for `[coordination] url`."""
        return "etcd://" + ",".join(m.client_url.removeprefix("http://") for m in self.members)

    def member(self, name: str) -> EtcdMember:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    # -- life cycle ------------------------------------------------------------

    def start(self, wipe: bool = True) -> None:
        """Start every member (a new cluster when `wipe`) and wait for quorum."""
        if wipe and self.base_dir.exists():
            for m in self.members:
                shutil.rmtree(m.data_dir, ignore_errors=True)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for m in self.members:
            self.start_member(m.name)
        self.wait_healthy()

    def command(self, name: str) -> list[str]:
        """The command line of member `name` (the lab starts it detached)."""
        return self._command(self.member(name))

    def _command(self, m: EtcdMember) -> list[str]:
        initial = ",".join(f"{o.name}={o.peer_url}" for o in self.members)
        state = "existing" if (m.data_dir / "member").exists() else "new"
        return [
            etcd_binary(), "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", state,
            "--initial-cluster-token", self.cluster_token,
            # small lab: quick elections, small snapshots
            "--heartbeat-interval", "100", "--election-timeout", "1000",
            "--snapshot-count", "10000", "--quota-backend-bytes", str(256 * 1024 * 1024),
        ]

    def start_member(self, name: str) -> None:
        m = self.member(name)
        old = self.procs.get(name)
        if old is not None and old.poll() is None:
            return
        m.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(m.log_path, "ab") as log:
            self.procs[name] = subprocess.Popen(
                self._command(m), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)

    def stop_member(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop one member (SIGKILL: a crash); a paused one is resumed first."""
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def pause_member(self, name: str) -> None:
        self._signal(name, signal.SIGSTOP)

    def resume_member(self, name: str) -> None:
        self._signal(name, signal.SIGCONT)

    def _signal(self, name: str, sig: int) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            raise ConfigError(f"etcd member {name} is not running")
        os.kill(proc.pid, sig)

    def stop(self) -> None:
        for name in list(self.procs):
            self.stop_member(name)

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.procs.items() if p.poll() is None}

    # -- health --------------------------------------------------------------

    def healthy(self, name: str, timeout_s: float = 1.0) -> bool:
        """Whether member `name` answers and sees a quorum (etcd's /health)."""
        url = self.member(name).client_url + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310
                return bool(json.loads(resp.read()).get("health") == "true")
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def wait_healthy(self, names: list[str] | None = None,
                     timeout_s: float = READY_TIMEOUT_S) -> None:
        wanted = names or [m.name for m in self.members]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.healthy(n) for n in wanted):
                return
            for n in wanted:
                proc = self.procs.get(n)
                if proc is not None and proc.poll() is not None:
                    raise ConfigError(f"etcd member {n} exited with {proc.returncode}; "
                                      f"see {self.member(n).log_path}")
            time.sleep(0.2)
        raise ConfigError(f"etcd members {', '.join(wanted)} not healthy after {timeout_s:g} s "
                          f"(logs under {self.base_dir})")

