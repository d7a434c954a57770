"""Helpers of the agent tests: config files, a manual clock, a fake watchdog."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from vmha.agent.config import AgentConfig

TOKEN = "agent-token-1"


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (racy, fine for tests)."""
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def config(tmp_path: Path, **over: Any) -> AgentConfig:
    data: dict[str, Any] = {
        "host": "host1", "segment": "lab", "state_dir": str(tmp_path / "state"),
        "secret": "s" * 32, "segment_secret": "g" * 32,
        "controller": {"heartbeat": ["127.0.0.1:8791"]},
        "api": {"listen": "127.0.0.1:8792", "token": TOKEN},
        "peers": {"host2": "127.0.0.1:9", "host3": "127.0.0.1:10"},
        "isolation": {"timeout_s": 5.0, "action": "reboot"},
    }
    data.update(over)
    return AgentConfig(**data)


class ManualClock:
    """A Clock whose time moves only when told (sleep advances it)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


class FakeWatchdog:
    def __init__(self) -> None:
        self.feeds = 0
        self.closed = False

    def feed(self) -> None:
        self.feeds += 1

    def close(self) -> None:
        self.closed = True
