"""Checking agents' heartbeats: the `Verifier`, and an asyncio receiver.

`Verifier` is the one place that decides whether a heartbeat datagram is
accepted; the controller's threaded intake (`vmha.adapters.heartbeat.intake`)
and the asyncio `HeartbeatReceiver` below (tests and the lab's recording
receiver) both use it. Its inputs: `secret_for(host)` (the per-host secret,
None for an unknown host; called from the thread that verifies, so it must
be thread-safe — a dict lookup is). Work per datagram is O(1): one parse,
one dict lookup for the key, one HMAC, one dict lookup for the replay rule.

Dropped, and counted in `metrics` by reason: `malformed` (cannot be parsed,
unsigned, wrong version), `unknown_host`, `bad_signature`, `replayed`.

Replay rule: within one boot id the sequence must grow. A datagram with a
boot id other than the last accepted one is a restarted agent; it is
accepted only if its send time is later than the last accepted heartbeat's
(so a recorded datagram of an earlier boot cannot be replayed later). This
assumes the host's clock does not step back across an agent restart.

Every accepted heartbeat is answered with a signed ack datagram (`ack_for`)
to the sender, which is how an agent knows it still has contact with a
controller. Nothing here does detection or touches the store.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, cast

from vmha.adapters.heartbeat.wire import (
    DEFAULT_HEARTBEAT_PORT,
    Datagram,
    DatagramRejected,
    Fields,
    Kind,
    check_signature,
    encode,
    parse_fields,
)

log = logging.getLogger(__name__)

SecretFor = Callable[[str], bytes | None]
OnHeartbeat = Callable[[str, int, float], None]
Verify = Callable[[bytes], tuple[Datagram, bytes]]
REASONS = ("accepted", "bad_signature", "replayed", "unknown_host", "malformed")


class Verifier:
    """Accepts or drops heartbeat datagrams and counts both (see module doc).

    Not thread-safe: one thread verifies (the intake's, or the event loop)."""

    def __init__(self, secret_for: SecretFor) -> None:
        self._secret_for = secret_for
        self._last: dict[str, tuple[bytes, int, float]] = {}  # boot id, seq, sent_at
        self.metrics: dict[str, int] = dict.fromkeys(REASONS, 0)

    def check(self, data: bytes, verify: Verify | None = None) -> tuple[Datagram, bytes] | None:
        """The accepted heartbeat and its host's key; None (counted) if
        dropped. `verify` replaces `self.verify` (a recording subclass)."""
        try:
            accepted = (verify or self.verify)(data)
        except DatagramRejected as rej:
            self._dropped(rej)
            return None
        self.metrics["accepted"] += 1
        return accepted

    def verify(self, data: bytes) -> tuple[Datagram, bytes]:
        """Check one datagram and remember it; raise DatagramRejected to drop."""
        (kind, host, boot_id, seq, sent_at), key = self.verify_fields(data)
        return Datagram(Kind(kind), host, boot_id, seq, sent_at), key

    def verify_fields(self, data: bytes) -> tuple[Fields, bytes]:
        """`verify` without building a Datagram (the intake's hot path)."""
        fields = parse_fields(data)
        kind, host, boot_id, seq, sent_at = fields
        if kind != Kind.HEARTBEAT:
            raise DatagramRejected("malformed", f"kind {Kind(kind).name} is not a heartbeat")
        key = self._secret_for(host)
        if key is None:
            raise DatagramRejected("unknown_host", f"host {host!r} is not registered")
        check_signature(data, key)
        last = self._last.get(host)
        if last is not None:
            if boot_id == last[0] and seq <= last[1]:
                raise DatagramRejected("replayed", f"{host} seq {seq} <= {last[1]}")
            if boot_id != last[0] and sent_at <= last[2]:
                raise DatagramRejected("replayed", f"{host}: old boot id")
        self._last[host] = (boot_id, seq, sent_at)
        return fields, key

    def accept(self, data: bytes) -> tuple[Fields, bytes] | None:
        """`verify_fields`, counted: None when dropped."""
        try:
            accepted = self.verify_fields(data)
        except DatagramRejected as rej:
            self._dropped(rej)
            return None
        self.metrics["accepted"] += 1
        return accepted

    def _dropped(self, rej: DatagramRejected) -> None:
        self.metrics[rej.reason] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("heartbeat dropped: %s", rej.detail)

    def last_boot_id(self, host: str) -> bytes | None:
        last = self._last.get(host)
        return last[0] if last else None


def ack_for(msg: Datagram, key: bytes) -> bytes:
    """The signed ack of heartbeat `msg`."""
    return encode(Datagram(Kind.ACK, msg.host, msg.boot_id, msg.seq, msg.sent_at), key)


class HeartbeatReceiver(asyncio.DatagramProtocol):
    """Heartbeats on the event loop: verify, ack, then `on_heartbeat(host,
    seq, sent_at)`. For tests and the lab's recording receiver; the
    controller uses the threaded `HeartbeatIntake` instead."""

    def __init__(
        self, secret_for: SecretFor, on_heartbeat: OnHeartbeat, send_acks: bool = True
    ) -> None:
        self._verifier = Verifier(secret_for)
        self._on_heartbeat = on_heartbeat
        self._send_acks = send_acks
        self._transport: asyncio.DatagramTransport | None = None
        self.metrics = self._verifier.metrics

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport is not a DatagramTransport
        # subclass on every Python version; it has the same methods.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        accepted = self._verifier.check(data, self.verify)
        if accepted is None:
            return
        msg, key = accepted
        if self._send_acks and self._transport is not None:
            self._transport.sendto(ack_for(msg, key), addr)
        try:
            self._on_heartbeat(msg.host, msg.seq, msg.sent_at)
        except Exception:
            log.exception("heartbeat handler failed for host %s", msg.host)

    def verify(self, data: bytes) -> tuple[Datagram, bytes]:
        return self._verifier.verify(data)

    def last_boot_id(self, host: str) -> bytes | None:
        return self._verifier.last_boot_id(host)


async def start_receiver(
    secret_for: SecretFor,
    on_heartbeat: OnHeartbeat,
    host: str = "0.0.0.0",  # noqa: S104 - agents reach the controller on any address
    port: int = DEFAULT_HEARTBEAT_PORT,
    sock: socket.socket | None = None,
) -> tuple[asyncio.DatagramTransport, HeartbeatReceiver]:
    """Bind the receiver on host:port/udp (or take `sock`, already bound);
    close the transport to stop it."""
    loop = asyncio.get_running_loop()

    def factory() -> HeartbeatReceiver:
        return HeartbeatReceiver(secret_for, on_heartbeat)

    if sock is not None:
        transport, protocol = await loop.create_datagram_endpoint(factory, sock=sock)
    else:
        transport, protocol = await loop.create_datagram_endpoint(
            factory, local_addr=(host, port))
    return transport, protocol
