"""The controller's heartbeat intake on a real UDP socket, read by its real
worker process: what it hands over, the kernel's receive stamps, how far it
has read, the drops it counts by layer, a worker that dies, and the
receive buffer it asks for."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from vmha.adapters.heartbeat.intake import HeartbeatIntake, IntakeSettings, _receive_buffer
from vmha.adapters.heartbeat.wire import Datagram, Kind, decode, encode
from vmha.ports import Arrival

SECRETS = {"host1": b"s1" * 16, "host2": b"s2" * 16}
BOOT = b"A" * 8


def beat(host: str, seq: int, key: bytes | None = None) -> bytes:
    return encode(Datagram(Kind.HEARTBEAT, host, BOOT, seq, 1000.0 + seq), key or SECRETS[host])


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    yield sock
    sock.close()


def intake_on(buffer: int = 256 * 1024, acks: bool = True,
              on_unknown: threading.Event | None = None) -> HeartbeatIntake:
    intake = HeartbeatIntake(IntakeSettings("127.0.0.1", 0, buffer, acks),
                             on_unknown=on_unknown.set if on_unknown else None)
    intake.set_secrets(SECRETS)
    return intake


def take_all(intake: HeartbeatIntake, count: int, timeout: float = 10.0) -> list[Arrival]:
    got: list[Arrival] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got.extend(intake.take().arrivals)
        time.sleep(0.01)
    return got


def test_accepts_acks_and_stamps_with_the_kernel_receive_time(sender: socket.socket) -> None:
    unknown = threading.Event()
    intake = intake_on(on_unknown=unknown)
    intake.start()
    try:
        before = time.time()
        for seq in (1, 2):
            sender.sendto(beat("host1", seq), intake.address)
        sender.sendto(beat("host2", 1, key=b"wrong"), intake.address)
        sender.sendto(beat("host9", 1, key=b"x" * 32), intake.address)
        sender.sendto(beat("host1", 2), intake.address)  # replayed
        got = take_all(intake, 2)
        acks = [decode(sender.recv(256), SECRETS["host1"]) for _ in range(2)]
        after = time.time()
        time.sleep(0.2)
        last = intake.take()
        stats = intake.stats()
    finally:
        intake.close()
    assert [(h, s, t) for h, s, t, _ in got] == [("host1", 1, 1001.0), ("host1", 2, 1002.0)]
    assert all(before <= arrived <= after for *_, arrived in got)
    assert [a.seq for a in acks] == [1, 2] and all(a.kind is Kind.ACK for a in acks)
    assert last.arrivals == [] and last.read_until >= after and last.lost_until == 0.0
    assert unknown.is_set()  # the controller is told to look for new agents
    assert {k: stats[k] for k in ("accepted", "bad_signature", "unknown_host", "replayed",
                                  "acks_sent", "kernel_drops", "worker_restarts")} == {
        "accepted": 2, "bad_signature": 1, "unknown_host": 1, "replayed": 1, "acks_sent": 2,
        "kernel_drops": 0, "worker_restarts": 0}


def test_what_waits_in_the_socket_holds_back_how_far_it_has_read(
    sender: socket.socket
) -> None:
    intake = intake_on()
    try:
        opened = intake.take().read_until
        for seq in range(1, 51):
            sender.sendto(beat("host1", seq), intake.address)
        time.sleep(0.3)
        idle = intake.take()  # no worker reads yet
        assert idle.arrivals == [] and idle.read_until == opened
        intake.start()
        got = take_all(intake, 50)
        time.sleep(0.2)
        caught_up = intake.take().read_until
    finally:
        intake.close()
    assert [s for _, s, _, _ in got] == list(range(1, 51))
    assert caught_up > opened + 0.3


def test_kernel_drops_of_a_full_receive_buffer_are_counted(sender: socket.socket) -> None:
    intake = intake_on(buffer=64 * 1024, acks=False)
    try:
        for seq in range(1, 2001):  # far more than 64 KiB of kernel buffer holds
            sender.sendto(beat("host1", seq), intake.address)
        intake.start()
        before = time.time()
        got = take_all(intake, 2000, timeout=2.0)
        lost_until = intake.take().lost_until
        stats = intake.stats()
    finally:
        intake.close()
    assert 0 < len(got) < 2000
    assert stats["kernel_drops"] == 2000 - len(got)
    assert before <= lost_until <= time.time()  # seen at the first take after the drops
    assert stats["accepted"] == len(got) and stats["receive_buffer_bytes"] == 64 * 1024


def test_a_worker_that_dies_is_replaced_and_gets_the_secrets_again(
    sender: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    intake = intake_on()
    intake.learn({"host3": b"s3" * 16})
    intake.start()
    try:
        sender.sendto(beat("host1", 1), intake.address)
        assert len(take_all(intake, 1)) == 1
        assert intake._proc is not None
        os.kill(intake._proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while intake.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        sender.sendto(beat("host3", 1, key=b"s3" * 16), intake.address)
        got = take_all(intake, 1)
    finally:
        intake.close()
    assert [(h, s) for h, s, _, _ in got] == [("host3", 1)]
    assert intake.stats()["worker_restarts"] == 1
    assert "worker process ended (exit code -9); starting a new one" in caplog.text


class CappedSocket:
    """Answers like a kernel that caps the buffer at 208 KiB (and refuses FORCE)."""

    def __init__(self) -> None:
        self.value = 0

    def setsockopt(self, level: int, option: int, value: int) -> None:
        if option != socket.SO_RCVBUF:
            raise PermissionError("not CAP_NET_ADMIN")
        self.value = 2 * min(value, 208 * 1024)

    def getsockopt(self, level: int, option: int) -> int:
        return self.value


def test_a_capped_receive_buffer_is_warned_about_naming_the_sysctl(
    caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        got = _receive_buffer(CappedSocket(), 4 * 1024 * 1024)  # type: ignore[arg-type]
    assert got == 208 * 1024
    assert "net.core.rmem_max" in caplog.text and "4096 KiB" in caplog.text
