"""A real `vmha serve` process for CLI tests: config file, SQLite store,
a free port below 32768, started and stopped by its PID (SIGKILL for a
crash, SIGTERM for a clean stop), restartable on the same store."""

from __future__ import annotations

import contextlib
import random
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ADMIN = "live-admin-token-1"
VIEWER = "live-viewer-token-1"
AGENT = "live-agent-token-1"


def free_low_port() -> int:
    """A TCP port free on 127.0.0.1, below the ephemeral range (32768)."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port in 20000-32000")


def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


class LiveServer:
    """`vmha serve --config <dir>/vmha.toml`; `extra` is appended TOML;
    `heartbeat_listen` turns the UDP heartbeat receiver on at that address."""

    def __init__(self, directory: Path, extra: str = "", heartbeat_listen: str = "") -> None:
        self.port = free_low_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = directory / "vmha.db"
        self.log = directory / "serve.log"
        self.config = directory / "vmha.toml"
        self.config.write_text(
            f'[api]\nlisten = "127.0.0.1:{self.port}"\n'
            f'[[api.tokens]]\ntoken = "{ADMIN}"\nrole = "admin"\nname = "ops"\n'
            f'[[api.tokens]]\ntoken = "{VIEWER}"\nrole = "viewer"\n'
            f'[[api.tokens]]\ntoken = "{AGENT}"\nrole = "agent"\n'
            f'[store]\nurl = "sqlite:///{self.db}"\n'
            + (f'[heartbeat]\nlisten = "{heartbeat_listen}"\n' if heartbeat_listen
               else "[heartbeat]\nenabled = false\n")
            + "[events]\npoll_interval_s = 0.01\nsse_heartbeat_s = 1.0\n" + extra
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from vmha.cli.main import main; main()",
                 "serve", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        until(self._ready, 60, f"vmha serve not ready: {self.log.read_text()[-2000:]}")

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        return False

    def kill(self) -> None:
        """A crash: SIGKILL, nothing flushed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def api(self, method: str, path: str, token: str = ADMIN, **kwargs: object) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", timeout=10,  # type: ignore[arg-type]
                             headers={"Authorization": f"Bearer {token}"}, **kwargs)


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (`VmRSS`) or its peak (`VmHWM`), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(f"{field} not in /proc/{pid}/status")


def upload(port: int, path: str, size: int, *, token: str | None,
           chunked: bool = False, timeout: float = 30.0) -> tuple[int, int]:
    """POST a body of `size` bytes (a declared Content-Length, or chunked),
    sending 1 MiB at a time until the server answers; returns the status
    (0 when the connection broke without one) and how many body bytes the
    kernel took before the answer."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + (f"Authorization: Bearer {token}\r\n" if token else "")
            + ("Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {size}\r\n")
            + "Connection: close\r\n\r\n")
    block = b'{"name":"' + b"a" * (1024 * 1024 - 9)
    frame = b"%x\r\n%s\r\n" % (len(block), block) if chunked else block
    sent = 0
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        sock.settimeout(0.2)
        while sent < size and time.monotonic() < deadline:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered (or closed) before taking everything
            try:
                sock.sendall(frame)
            except TimeoutError:
                continue  # the server stopped reading: wait for its answer
            except OSError:
                break
            sent += len(block)
        if chunked and sent >= size:
            sock.sendall(b"0\r\n\r\n")
        sock.settimeout(timeout)
        try:
            answer = sock.recv(4096)
        except OSError:
            answer = b""
    status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/1.1 ") else b"0"
    return int(status), sent
