"""A private RabbitMQ node for tests that must stop and start a broker.

The machine's shared broker (5672) is used by others and must never be
restarted; this starts `rabbitmq-server` in the foreground as our child
with its own node name, ports below 32768 (AMQP and Erlang distribution,
both on 127.0.0.1), data and log directories, pid file, Erlang cookie
(HOME) and no plugins or config files from /etc. It registers its name
with the machine's epmd (port 4369) like any node. `stop()` sends SIGTERM
to the Erlang VM (a clean broker shutdown), then SIGKILL if it is still
there after a while; `start()` again reuses the same data directory, as
a restarted broker does. `close()` stops it; the caller removes the
directory (pytest's tmp_path)."""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def free_low_port(avoid: int = 0) -> int:
    for _ in range(200):
        port = random.randint(20000, 32000)
        if port == avoid:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port in 20000-32000")


def available() -> str:
    """Why a private node cannot run here ('' when it can)."""
    if not SERVER.is_file():
        return f"{SERVER} is not installed (Debian package rabbitmq-server)"
    return ""


class RabbitNode:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_low_port()
        self.dist_port = free_low_port(avoid=self.port)
        self.name = f"vmha-t{os.getpid()}-{secrets.token_hex(3)}@localhost"
        self.url = f"rabbit://guest:guest@127.0.0.1:{self.port}/"
        self.log = base / "node.log"
        self.pid_file = base / "node.pid"
        (base / "enabled_plugins").write_text("[].\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def _env(self) -> dict[str, str]:
        b = self.base
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(b),
            "LANG": "C.UTF-8", "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_MNESIA_BASE": str(b / "mnesia"), "RABBITMQ_LOG_BASE": str(b / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(b / "enabled_plugins"),
            # Files that do not exist: nothing is read from /etc/rabbitmq.
            "RABBITMQ_CONFIG_FILE": str(b / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(b / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(b / "rabbitmq-env.conf"),
        }

    def start(self, timeout: float = 60) -> float:
        """Start the node; returns the seconds until it accepted AMQP."""
        began = time.monotonic()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([str(SERVER)], env=self._env(), stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.base)
        while not self._listening():
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited {self.proc.returncode}: "
                                   f"{self.log.read_text()[-3000:]}")
            if time.monotonic() - began > timeout:
                self.stop()
                raise RuntimeError(f"rabbitmq-server not listening within {timeout} s")
            time.sleep(0.1)
        return time.monotonic() - began

    def _listening(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.5):
            return True
        return False

    def _vm_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(self.pid_file.read_text().strip())
        return None

    def stop(self, timeout: float = 30) -> float:
        """SIGTERM to the Erlang VM, SIGKILL after `timeout`; returns seconds."""
        began = time.monotonic()
        proc, vm = self.proc, self._vm_pid()
        if proc is None or proc.poll() is not None:
            return 0.0
        self._signal(vm or proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if vm is not None:
                self._signal(vm, signal.SIGKILL)
            proc.kill()
            proc.wait(10)
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
        return time.monotonic() - began

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def close(self) -> None:
        self.stop()
