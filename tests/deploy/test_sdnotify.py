"""sd_notify: the protocol on a real unix datagram socket, and a real
`vmha agent` and `vmha serve` process reporting READY=1, WATCHDOG=1 and
STOPPING=1 the way systemd's Type=notify + WatchdogSec= expects."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploykit import free_port

from vmha.adapters.sdnotify import SdNotifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    yield sock, path
    sock.close()


def _messages(sock: socket.socket, until: str, timeout: float) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        if until in got[-1]:
            break
    return got


def test_notifier_sends_fields_and_reads_the_watchdog(notify_socket: tuple) -> None:
    sock, path = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    n = SdNotifier(env)
    assert n.enabled and n.watchdog_s == 3.0 and n.ping_interval_s == 1.5
    assert n.ready("up") and n.watchdog() and n.stopping()
    assert [sock.recv(100) for _ in range(3)] == [b"READY=1\nSTATUS=up", b"WATCHDOG=1",
                                                  b"STOPPING=1"]


def test_notifier_without_systemd_or_for_another_pid_does_nothing() -> None:
    assert not SdNotifier({}).ready()
    other = SdNotifier({"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000",
                        "WATCHDOG_PID": "1"})
    assert other.watchdog_s is None
    assert not other.ready()  # a missing socket is logged, not raised


def test_abstract_socket_names(tmp_path: Path) -> None:
    name = f"vmha-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert SdNotifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(100) == b"READY=1"


def _free_udp() -> int:
    return free_port(socket.SOCK_DGRAM)


def test_real_agent_is_ready_pings_the_watchdog_and_logs_json(
    notify_socket: tuple, tmp_path: Path
) -> None:
    sock, path = notify_socket
    port = _free_udp()
    config = tmp_path / "agent.toml"
    config.write_text(
        f'host = "h1"\nsegment = "s1"\nstate_dir = "{tmp_path / "state"}"\n'
        f'secret = "{"s" * 32}"\nheartbeat_interval_s = 0.2\n'
        f'[controller]\nheartbeat = ["127.0.0.1:{_free_udp()}"]\n'
        f'[api]\nlisten = "127.0.0.1:{port}"\ntoken = "agent-token-123"\n')
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "600000"}
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vmha.agent", "--config", str(config),
                                 "--log-format", "json"], env=env, stdout=out, stderr=out)
    try:
        got = _messages(sock, "READY=1", 20)
        assert any(m.startswith("READY=1") for m in got), log.read_text()
        later = _messages(sock, "never", 1.5)
        assert later.count("WATCHDOG=1") >= 3, later  # every 0.3 s
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()
    assert "STOPPING=1" in _messages(sock, "STOPPING=1", 2)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    up = next(x for x in lines if x["message"].startswith("agent h1 up"))
    assert up["level"] == "info" and up["logger"] == "vmha.agent" and up["time"].endswith("Z")


def test_real_controller_is_ready_and_pings_while_its_engine_runs(
    notify_socket: tuple, tmp_path: Path
) -> None:
    sock, path = notify_socket
    config = tmp_path / "vmha.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "vmha.db"}"\n'
                      f'[api]\nlisten = "127.0.0.1:{free_port()}"\n'
                      '[heartbeat]\nenabled = false\n[log]\nformat = "json"\n')
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "600000"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", "from vmha.cli.main import main; main()",
                                 "serve", "--config", str(config)], env=env, stdout=out,
                                stderr=out)
    try:
        got = _messages(sock, "READY=1", 30)
        assert "READY=1\nSTATUS=controller running" in got, log.read_text()
        assert _messages(sock, "never", 1.5).count("WATCHDOG=1") >= 3
    finally:
        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down cleanly;
        # systemd counts an exit by SIGTERM as a clean stop
        assert proc.wait(20) in (0, -signal.SIGTERM), log.read_text()
    assert "STOPPING=1" in _messages(sock, "STOPPING=1", 2)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(r["logger"] == "vmha.serve" for r in records)
    assert any(r["logger"].startswith("uvicorn") for r in records)  # uvicorn's too
