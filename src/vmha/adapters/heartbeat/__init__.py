"""Signed UDP heartbeats: the wire format (`wire`) and the controller's
receiver (`receiver`). See `vmha.adapters.heartbeat.wire` for the layout."""

from __future__ import annotations

from vmha.adapters.heartbeat.receiver import HeartbeatReceiver, start_receiver
from vmha.adapters.heartbeat.wire import (
    DEFAULT_HEARTBEAT_PORT,
    Datagram,
    DatagramRejected,
    Kind,
    decode,
    encode,
    parse,
)

__all__ = [
    "DEFAULT_HEARTBEAT_PORT",
    "Datagram",
    "DatagramRejected",
    "HeartbeatReceiver",
    "Kind",
    "decode",
    "encode",
    "parse",
    "start_receiver",
]
