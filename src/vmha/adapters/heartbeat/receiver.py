"""The controller's UDP heartbeat receiver (an asyncio DatagramProtocol).

The controller starts it with `start_receiver(...)` and passes two
callables: `secret_for(host)` (the per-host secret, None for an unknown
host) and `on_heartbeat(host, seq, sent_at)` (the detector's input). Every
accepted heartbeat is answered with a signed ack datagram to the sender,
which is how an agent knows it still has contact with a controller.

Dropped, and counted in `metrics` by reason: `malformed` (cannot be parsed,
unsigned, wrong version), `unknown_host`, `bad_signature`, `replayed`.

Replay rule: within one boot id the sequence must grow. A datagram with a
boot id other than the last accepted one is a restarted agent; it is
accepted only if its send time is later than the last accepted heartbeat's
(so a recorded datagram of an earlier boot cannot be replayed later). This
assumes the host's clock does not step back across an agent restart.

It does no detection itself and never touches the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from vmha.adapters.heartbeat.wire import (
    DEFAULT_HEARTBEAT_PORT,
    Datagram,
    DatagramRejected,
    Kind,
    check_signature,
    encode,
    parse,
)

log = logging.getLogger(__name__)

SecretFor = Callable[[str], bytes | None]
OnHeartbeat = Callable[[str, int, float], None]
REASONS = ("accepted", "bad_signature", "replayed", "unknown_host", "malformed")


@dataclass(frozen=True)
class _Last:
    boot_id: bytes
    seq: int
    sent_at: float


class HeartbeatReceiver(asyncio.DatagramProtocol):
    def __init__(
        self, secret_for: SecretFor, on_heartbeat: OnHeartbeat, send_acks: bool = True
    ) -> None:
        self._secret_for = secret_for
        self._on_heartbeat = on_heartbeat
        self._send_acks = send_acks
        self._last: dict[str, _Last] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self.metrics: dict[str, int] = dict.fromkeys(REASONS, 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport is not a DatagramTransport
        # subclass on every Python version; it has the same methods.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            msg, key = self.verify(data)
        except DatagramRejected as rej:
            self.metrics[rej.reason] += 1
            log.debug("heartbeat from %s dropped: %s", addr, rej.detail)
            return
        self.metrics["accepted"] += 1
        if self._send_acks and self._transport is not None:
            ack = Datagram(Kind.ACK, msg.host, msg.boot_id, msg.seq, msg.sent_at)
            self._transport.sendto(encode(ack, key), addr)
        try:
            self._on_heartbeat(msg.host, msg.seq, msg.sent_at)
        except Exception:
            log.exception("heartbeat handler failed for host %s", msg.host)

    def verify(self, data: bytes) -> tuple[Datagram, bytes]:
        """Check one datagram and remember it; raise DatagramRejected to drop."""
        msg = parse(data)
        if msg.kind is not Kind.HEARTBEAT:
            raise DatagramRejected("malformed", f"kind {msg.kind.name} is not a heartbeat")
        key = self._secret_for(msg.host)
        if key is None:
            raise DatagramRejected("unknown_host", f"host {msg.host!r} is not registered")
        check_signature(data, key)
        last = self._last.get(msg.host)
        if last is not None:
            if msg.boot_id == last.boot_id and msg.seq <= last.seq:
                raise DatagramRejected("replayed", f"{msg.host} seq {msg.seq} <= {last.seq}")
            if msg.boot_id != last.boot_id and msg.sent_at <= last.sent_at:
                raise DatagramRejected("replayed", f"{msg.host}: old boot id")
        self._last[msg.host] = _Last(msg.boot_id, msg.seq, msg.sent_at)
        return msg, key

    def last_boot_id(self, host: str) -> bytes | None:
        last = self._last.get(host)
        return last.boot_id if last else None


async def start_receiver(
    secret_for: SecretFor,
    on_heartbeat: OnHeartbeat,
    host: str = "0.0.0.0",  # noqa: S104 - agents reach the controller on any address
    port: int = DEFAULT_HEARTBEAT_PORT,
) -> tuple[asyncio.DatagramTransport, HeartbeatReceiver]:
    """Bind the receiver on host:port/udp; close the transport to stop it."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: HeartbeatReceiver(secret_for, on_heartbeat), local_addr=(host, port)
    )
    return transport, protocol
