"""The controller's heartbeat receiver: what it accepts, drops and counts."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from vmha.adapters.heartbeat import HeartbeatReceiver, start_receiver
from vmha.adapters.heartbeat.wire import Datagram, Kind, decode, encode

SECRETS = {"host1": b"s1" * 16, "host2": b"s2" * 16}
BOOT_A, BOOT_B = b"A" * 8, b"B" * 8


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


def beat(host: str, seq: int, sent_at: float, boot: bytes = BOOT_A, key: bytes | None = None
         ) -> bytes:
    return encode(Datagram(Kind.HEARTBEAT, host, boot, seq, sent_at), key or SECRETS[host])


@pytest.fixture
def rx() -> tuple[HeartbeatReceiver, list[tuple[str, int, float]], FakeTransport]:
    got: list[tuple[str, int, float]] = []
    receiver = HeartbeatReceiver(SECRETS.get, lambda h, s, t: got.append((h, s, t)))
    transport = FakeTransport()
    receiver.connection_made(transport)  # type: ignore[arg-type]
    return receiver, got, transport


def test_accepts_and_acks_with_the_host_secret(rx: Any) -> None:
    receiver, got, transport = rx
    receiver.datagram_received(beat("host1", 1, 10.0), ("198.18.0.11", 8792))
    assert got == [("host1", 1, 10.0)]
    assert receiver.metrics["accepted"] == 1
    (ack, addr), = transport.sent
    assert addr == ("198.18.0.11", 8792)
    msg = decode(ack, SECRETS["host1"])
    assert (msg.kind, msg.host, msg.seq, msg.boot_id) == (Kind.ACK, "host1", 1, BOOT_A)


def test_replays_and_old_sequences_are_dropped(rx: Any) -> None:
    receiver, got, _ = rx
    for seq in (5, 5, 3, 6):
        receiver.datagram_received(beat("host1", seq, 10.0 + seq), None)
    assert [s for _, s, _ in got] == [5, 6]
    assert receiver.metrics["replayed"] == 2


def test_a_restarted_agent_with_a_new_boot_id_is_accepted(rx: Any) -> None:
    receiver, got, _ = rx
    receiver.datagram_received(beat("host1", 900, 100.0, BOOT_A), None)
    receiver.datagram_received(beat("host1", 1, 105.0, BOOT_B), None)
    receiver.datagram_received(beat("host1", 2, 106.0, BOOT_B), None)
    assert [s for _, s, _ in got] == [900, 1, 2]
    assert receiver.last_boot_id("host1") == BOOT_B


def test_an_old_boot_cannot_be_replayed_after_a_restart(rx: Any) -> None:
    receiver, got, _ = rx
    old = beat("host1", 901, 100.5, BOOT_A)
    receiver.datagram_received(beat("host1", 900, 100.0, BOOT_A), None)
    receiver.datagram_received(beat("host1", 1, 105.0, BOOT_B), None)
    receiver.datagram_received(old, None)  # recorded before the restart, replayed after
    assert [s for _, s, _ in got] == [900, 1]
    assert receiver.metrics["replayed"] == 1


def test_hosts_are_tracked_independently(rx: Any) -> None:
    receiver, got, _ = rx
    receiver.datagram_received(beat("host1", 7, 1.0), None)
    receiver.datagram_received(beat("host2", 1, 1.0), None)
    assert len(got) == 2


def test_unknown_forged_and_garbage_are_counted(rx: Any) -> None:
    receiver, got, transport = rx
    receiver.datagram_received(beat("host9", 1, 1.0, key=b"x"), None)
    receiver.datagram_received(beat("host1", 1, 1.0, key=SECRETS["host2"]), None)
    receiver.datagram_received(b"\x00" * 80, None)
    probe = encode(Datagram(Kind.PROBE, "host1", BOOT_A, 1, 1.0), SECRETS["host1"])
    receiver.datagram_received(probe, None)
    assert got == [] and transport.sent == []
    assert receiver.metrics == {"accepted": 0, "bad_signature": 1, "replayed": 0,
                                "unknown_host": 1, "malformed": 2}


def test_a_failing_handler_does_not_stop_the_receiver(rx: Any) -> None:
    receiver = HeartbeatReceiver(SECRETS.get, lambda *a: 1 / 0)
    receiver.datagram_received(beat("host1", 1, 1.0), None)
    receiver.datagram_received(beat("host1", 2, 2.0), None)
    assert receiver.metrics["accepted"] == 2


def test_real_udp_socket_on_loopback() -> None:
    asyncio.run(_loopback())


async def _loopback() -> None:
    got: list[tuple[str, int, float]] = []
    transport, receiver = await start_receiver(
        SECRETS.get, lambda h, s, t: got.append((h, s, t)), "127.0.0.1", 0)
    port = transport.get_extra_info("sockname")[1]
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setblocking(False)
    client.bind(("127.0.0.1", 0))
    loop = asyncio.get_running_loop()
    try:
        for seq in (1, 2, 2):
            await loop.sock_sendto(client, beat("host1", seq, float(seq)), ("127.0.0.1", port))
        await loop.sock_sendto(client, beat("host1", 3, 3.0, key=b"bad"), ("127.0.0.1", port))
        acks = [await asyncio.wait_for(loop.sock_recv(client, 200), 2) for _ in range(2)]
        await asyncio.sleep(0.05)
    finally:
        client.close()
        transport.close()
    assert got == [("host1", 1, 1.0), ("host1", 2, 2.0)]
    assert [decode(a, SECRETS["host1"]).seq for a in acks] == [1, 2]
    assert receiver.metrics["replayed"] == 1 and receiver.metrics["bad_signature"] == 1
