"""Several real `vmha serve` processes on one etcd cluster and one PostgreSQL
database (tests/coord and bench/failover.py).

`ControllerGroup(dir, etcd_url, pg_url, n)` writes one config per
controller (its own API and heartbeat ports on 127.0.0.1, the same store,
secret key and etcd prefix), starts them one after the other (the first
applies the migrations) and finds the leader through `GET /v1/controllers`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scale"))
from live_server import free_low_port
from loadkit import free_udp_port

LEASE_S = 2.0  # the tests' groups (tests/coord/conftest.py `controllers`)
TAKEN: set[int] = set()  # ports handed out in this process (not bound yet)


def _udp_port() -> int:
    port = free_udp_port()
    while port in TAKEN:
        port = port + 1 if port < 32000 else 21000
    TAKEN.add(port)
    return port


ADMIN = "tok-admin-ckit"


class Controller:
    def __init__(self, directory: Path, name: str, etcd_url: str, pg_url: str, key: Path,
                 lease_s: float, step_s: float) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port, self.hb_port = free_low_port(), _udp_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "serve.log"
        self.config = directory / "vmha.toml"
        self.config.write_text(
            f'[api]\nlisten = "127.0.0.1:{self.port}"\n'
            f'[[api.tokens]]\ntoken = "{ADMIN}"\nrole = "admin"\nname = "ckit"\n'
            f'[store]\nurl = "{pg_url}"\n'
            f'[heartbeat]\nlisten = "127.0.0.1:{self.hb_port}"\n'
            f'[fencing]\nsecret_key_file = "{key}"\n'
            f'[coordination]\nurl = "{etcd_url}"\nname = "{name}"\nlease_s = {lease_s}\n'
            f'step_s = {step_s}\napi_url = "{self.url}"\n')
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from vmha.cli.main import main; main()",
                 "serve", "--config", str(self.config)], stdout=log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str, timeout: float = 2.0) -> httpx.Response:
        return httpx.get(self.url + path, timeout=timeout,
                         headers={"Authorization": f"Bearer {ADMIN}"})

    def post(self, path: str, body: dict[str, Any], timeout: float = 10.0) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=timeout,
                          headers={"Authorization": f"Bearer {ADMIN}"})

    def group(self) -> dict[str, Any] | None:
        """GET /v1/controllers, None when it does not answer."""
        with contextlib.suppress(httpx.HTTPError):
            resp = self.get("/v1/controllers", timeout=1.0)
            if resp.status_code == 200:
                return dict(resp.json())
        return None

    def ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200
        return False

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class ControllerGroup:
    def __init__(self, directory: Path, etcd_url: str, pg_url: str, size: int = 3,
                 lease_s: float = 2.0, step_s: float = 0.25) -> None:
        key = directory / "secret.key"
        key.write_bytes(Fernet.generate_key())
        key.chmod(0o600)
        self.controllers = [
            Controller(directory / f"controller{i}", f"controller{i}", etcd_url, pg_url, key,
                       lease_s, step_s)
            for i in range(1, size + 1)]

    def start(self, timeout_s: float = 60.0) -> None:
        for c in self.controllers:
            c.start()
            try:
                wait_for(lambda c=c: c.alive() and c.ready(), timeout_s, "not ready")
            except AssertionError:
                raise AssertionError(f"{c.name} not ready: {c.log.read_text()[-2000:]}") from None

    def stop(self) -> None:
        for c in self.controllers:
            c.stop()

    def by_name(self, name: str) -> Controller:
        return next(c for c in self.controllers if c.name == name)

    def with_agents(self, hosts: list[str]) -> tuple[Controller, dict[str, bytes]]:
        """Once one leads and every controller is a member: segment s1 made
        through the leader, an agent per host registered through a follower
        (forwarded); the leader and the agents' heartbeat secrets."""
        leader = wait_for(self.leader, 30, "no controller leads")
        names = [c.name for c in self.controllers]
        wait_for(lambda: all([m["name"] for m in (c.group() or {}).get("members", [])] == names
                             for c in self.controllers), 30, "not every controller joined")
        follower = next(c for c in self.controllers if c is not leader)
        assert leader.post("/v1/segments", {"name": "s1"}).status_code == 201
        agents = [{"host": h, "segment": "s1", "address": "127.0.0.1", "version": "test"}
                  for h in hosts]
        made = follower.post("/v1/agents/register-batch", {"agents": agents})
        assert made.status_code in (200, 201), made.text
        return leader, {a["host"]: a["secret"].encode() for a in made.json()["agents"]}

    def leader(self, among: list[Controller] | None = None) -> Controller | None:
        """The controller that says it leads (epoch > 0), asked directly."""
        for c in among or self.controllers:
            if not c.alive():
                continue
            group = c.group()
            if group is not None and group["epoch"] > 0:
                return c
        return None


def wait_for(check: Any, timeout_s: float, what: str, every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(every_s)
