"""Helpers of the lab tests: a recording heartbeat receiver, polling.
Imported by conftest.py and the lab test modules."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from vmha.adapters.heartbeat import Datagram, HeartbeatReceiver


@dataclass
class Beat:
    host: str
    seq: int
    sent_at: float
    received: float
    boot_id: bytes


@dataclass
class Recorder:
    """Every accepted heartbeat, with the receiver's metrics and raw bytes."""

    beats: list[Beat] = field(default_factory=list)
    raw: dict[str, bytes] = field(default_factory=dict)
    protocol: HeartbeatReceiver | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, host: str, since: float = 0.0) -> list[Beat]:
        with self.lock:
            return [b for b in self.beats if b.host == host and b.received >= since]

    def last(self, host: str) -> Beat | None:
        got = self.of(host)
        return got[-1] if got else None

    @property
    def metrics(self) -> dict[str, int]:
        assert self.protocol is not None
        return dict(self.protocol.metrics)


class Recording(HeartbeatReceiver):
    def __init__(self, rec: Recorder, secrets: dict[str, bytes]) -> None:
        super().__init__(secrets.get, self._on)
        self._rec = rec
        self._boot = b""

    def verify(self, data: bytes) -> tuple[Datagram, bytes]:
        msg, key = super().verify(data)
        self._boot = msg.boot_id
        with self._rec.lock:
            self._rec.raw[msg.host] = data
        return msg, key

    def _on(self, host: str, seq: int, sent_at: float) -> None:
        with self._rec.lock:
            self._rec.beats.append(Beat(host, seq, sent_at, time.time(), self._boot))


def wait_for(pred: Any, timeout_s: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())
