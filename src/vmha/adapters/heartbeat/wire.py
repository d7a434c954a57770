"""The signed datagram format shared by heartbeats, acks and peer probes.

Used by the controller's heartbeat receiver and by the host agent. Pure
functions over bytes (standard library only): no sockets, no clock.

Layout, version 1 (network byte order, 28 + len(host) + 32 bytes)::

    offset size  field
    0      2     magic  b"VH"
    2      1     version (1)
    3      1     kind: 1 heartbeat, 2 ack, 3 probe, 4 probe reply
    4      8     boot id: random per agent start, so a restarted agent's
                 lower sequence numbers are not taken for replays
    12     8     sequence number (unsigned; monotonic within a boot id)
    20     8     send time, seconds since the epoch (IEEE double)
    28     1     length of the host name in bytes (1..64)
    29     n     host name, UTF-8
    29+n   32    HMAC-SHA256 over every byte before it

Keys: heartbeats and acks are signed with the per-host secret (the
controller acks with the secret of the host it answers). Probes and probe
replies between agents are signed with the segment secret every agent of
the segment shares; `host` names the sender, `seq` carries the prober's
random nonce, which the reply echoes. Nobody without the key can forge a
datagram; replay protection is the receiver's job (sequence/nonce checks).
"""

from __future__ import annotations

import enum
import hmac
import struct
from dataclasses import dataclass

from vmha.errors import ValidationError

MAGIC = b"VH"
VERSION = 1
MAC_SIZE = 32
HOST_MAX = 64
DEFAULT_HEARTBEAT_PORT = 8791
_HEAD = struct.Struct("!2sBB8sQdB")


class Kind(enum.IntEnum):
    HEARTBEAT = 1
    ACK = 2
    PROBE = 3
    PROBE_REPLY = 4


@dataclass(frozen=True)
class Datagram:
    kind: Kind
    host: str
    boot_id: bytes
    seq: int
    sent_at: float


class DatagramRejected(ValidationError):
    """A datagram that must be dropped; `reason` is the metric name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason


def encode(msg: Datagram, key: bytes) -> bytes:
    """The signed bytes of `msg`."""
    name = msg.host.encode()
    if not 0 < len(name) <= HOST_MAX:
        raise ValidationError("host", f"{msg.host!r} must be 1..{HOST_MAX} bytes of UTF-8")
    if len(msg.boot_id) != 8:
        raise ValidationError("boot_id", "must be exactly 8 bytes")
    head = _HEAD.pack(MAGIC, VERSION, int(msg.kind), msg.boot_id, msg.seq, msg.sent_at, len(name))
    body = head + name
    return body + hmac.digest(key, body, "sha256")


Fields = tuple[int, str, bytes, int, float]  # kind, host, boot id, seq, sent_at
_KINDS = {int(k): k for k in Kind}


def parse_fields(data: bytes) -> Fields:
    """The fields as a plain tuple, signature not checked: the controller's
    hot path (10,000 heartbeats a second), which needs no Datagram object."""
    if len(data) < _HEAD.size + 1 + MAC_SIZE:
        raise DatagramRejected("malformed", f"{len(data)} bytes is too short")
    magic, version, kind, boot_id, seq, sent_at, n = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise DatagramRejected("malformed", f"not a vmha v{VERSION} datagram")
    if len(data) != _HEAD.size + n + MAC_SIZE or n == 0:
        raise DatagramRejected("malformed", "length does not match the host name length")
    if kind not in _KINDS:
        raise DatagramRejected("malformed", f"{kind} is not a datagram kind")
    try:
        host = data[_HEAD.size : _HEAD.size + n].decode()
    except UnicodeDecodeError as exc:
        raise DatagramRejected("malformed", str(exc)) from exc
    return kind, host, boot_id, seq, sent_at


def parse(data: bytes) -> Datagram:
    """Decode the fields without checking the signature (to find the key)."""
    kind, host, boot_id, seq, sent_at = parse_fields(data)
    return Datagram(_KINDS[kind], host, boot_id, seq, sent_at)


def check_signature(data: bytes, key: bytes) -> None:
    """Raise DatagramRejected('bad_signature') unless `key` signed `data`."""
    expected = hmac.digest(key, data[:-MAC_SIZE], "sha256")
    if not hmac.compare_digest(data[-MAC_SIZE:], expected):
        raise DatagramRejected("bad_signature", "HMAC does not match")


def ack_of(heartbeat: bytes, key: bytes) -> bytes:
    """The signed ack of a verified heartbeat, from its bytes: the same
    fields with kind ACK, signed again with the host's key."""
    body = heartbeat[:3] + bytes((Kind.ACK,)) + heartbeat[4:-MAC_SIZE]
    return body + hmac.digest(key, body, "sha256")


def decode(data: bytes, key: bytes) -> Datagram:
    """Parse and verify with a known key (agents: acks and probes)."""
    msg = parse(data)
    check_signature(data, key)
    return msg
