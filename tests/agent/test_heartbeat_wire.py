"""The signed datagram format: round trip, tampering, malformed input."""

from __future__ import annotations

import pytest

from vmha.adapters.heartbeat.wire import (
    MAC_SIZE,
    Datagram,
    DatagramRejected,
    Kind,
    ack_of,
    decode,
    encode,
    parse,
    parse_fields,
)
from vmha.errors import ValidationError

KEY = b"k" * 32
MSG = Datagram(Kind.HEARTBEAT, "host1", bytes(range(8)), 42, 1_700_000_000.25)


def test_round_trip_keeps_every_field() -> None:
    data = encode(MSG, KEY)
    assert decode(data, KEY) == MSG
    assert len(data) == 28 + len("host1") + 1 + MAC_SIZE
    assert data[:2] == b"VH" and data[2] == 1 and data[3] == Kind.HEARTBEAT


def test_unicode_host_names_survive() -> None:
    msg = Datagram(Kind.PROBE, "hôte-7", b"\0" * 8, 2**64 - 1, 0.0)
    assert decode(encode(msg, KEY), KEY) == msg


@pytest.mark.parametrize("offset", range(0, 28 + 5 + 1 + MAC_SIZE))
def test_any_flipped_byte_is_rejected(offset: int) -> None:
    data = bytearray(encode(MSG, KEY))
    data[offset] ^= 0x01
    with pytest.raises(DatagramRejected) as err:
        decode(bytes(data), KEY)
    assert err.value.reason in ("bad_signature", "malformed")


def test_wrong_key_is_a_bad_signature() -> None:
    with pytest.raises(DatagramRejected) as err:
        decode(encode(MSG, KEY), b"other")
    assert err.value.reason == "bad_signature"


@pytest.mark.parametrize(
    "data",
    [b"", b"VH", b"hello world" * 3, encode(MSG, KEY)[:-1], encode(MSG, KEY) + b"x",
     b"XX" + encode(MSG, KEY)[2:], encode(MSG, KEY)[:2] + b"\x02" + encode(MSG, KEY)[3:]],
)
def test_malformed_datagrams(data: bytes) -> None:
    with pytest.raises(DatagramRejected) as err:
        parse(data)
    assert err.value.reason == "malformed"


def test_unsigned_datagram_is_malformed() -> None:
    with pytest.raises(DatagramRejected) as err:
        parse(encode(MSG, KEY)[:-MAC_SIZE])
    assert err.value.reason == "malformed"


def test_unknown_kind_is_malformed() -> None:
    data = bytearray(encode(MSG, KEY))
    data[3] = 9
    with pytest.raises(DatagramRejected, match="9"):
        parse(bytes(data))


@pytest.mark.parametrize("host", ["", "x" * 65])
def test_bad_host_names_cannot_be_encoded(host: str) -> None:
    with pytest.raises(ValidationError, match="host"):
        encode(Datagram(Kind.HEARTBEAT, host, b"\0" * 8, 1, 0.0), KEY)


def test_the_ack_made_from_a_heartbeat_s_bytes_is_the_encoded_ack() -> None:
    key = b"k" * 32
    beat = Datagram(Kind.HEARTBEAT, "höst-1", b"B" * 8, 2**63 + 5, 1_800_000_000.25)
    ack = ack_of(encode(beat, key), key)
    assert ack == encode(Datagram(Kind.ACK, beat.host, beat.boot_id, beat.seq, beat.sent_at), key)
    assert decode(ack, key).kind is Kind.ACK
    assert parse_fields(ack) == (Kind.ACK, "höst-1", b"B" * 8, 2**63 + 5, 1_800_000_000.25)
