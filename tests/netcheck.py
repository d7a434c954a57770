"""How an address answers, seen from the test process: for the lab tests
that a powered-off host is silent (no RST, no ICMP error), as a real dead
machine is, while a running host whose program is gone is refused.

`tcp(address, port)` and `udp(address, port)` return an Outcome: what
happened ("connected", "answered", "refused", "unreachable", "timeout") and
how long it took. Imported by tests/lab and tests/e2e (tests/ is on sys.path
through tests/conftest.py).
"""

from __future__ import annotations

import errno
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

SILENT = "timeout"


@dataclass(frozen=True)
class Outcome:
    what: str
    took_s: float


def _classify(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):  # a TCP RST, or ICMP port unreachable
        return "refused"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    raise exc


def tcp(address: str, port: int, timeout_s: float = 1.5) -> Outcome:
    """Connect once: "connected", "refused" (RST), "unreachable" or "timeout"."""
    t0 = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect((address, port))
            what = "connected"
        except TimeoutError:
            what = SILENT
        except OSError as exc:
            what = _classify(exc)
    return Outcome(what, time.monotonic() - t0)


def udp(address: str, port: int, timeout_s: float = 1.5) -> Outcome:
    """One datagram on a connected UDP socket, then wait for anything: an
    ICMP port unreachable shows as "refused"; "answered", "unreachable" or
    "timeout" otherwise."""
    t0 = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect((address, port))
        try:
            sock.send(b"vmha lab test: is anybody there?")
            sock.recv(512)
            what = "answered"
        except TimeoutError:
            what = SILENT
        except OSError as exc:
            what = _classify(exc)
    return Outcome(what, time.monotonic() - t0)


def at_once(**checks: Any) -> dict[str, Outcome]:
    """Run named zero-argument checks in parallel; their outcomes by name."""
    with ThreadPoolExecutor(len(checks)) as pool:
        futures = {name: pool.submit(fn) for name, fn in checks.items()}
        return {name: f.result() for name, f in futures.items()}
