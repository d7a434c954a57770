"""The heartbeat intake's worker process: reads, verifies and acks.

Started by `vmha.adapters.heartbeat.intake.HeartbeatIntake` (the
controller) as `python -m vmha.adapters.heartbeat.worker --fd N`: it
inherits the bound heartbeat socket, reads every datagram queued on it,
verifies it (`Verifier`), acks it, and streams what it accepted to the
controller on stdout, each heartbeat stamped with the time the kernel
received it (SO_TIMESTAMPNS). The controller sends it the agents' secrets
on stdin; EOF on stdin ends it.

Why a process: reading, verifying and acking cost ~15 us a heartbeat and
two system calls, each of which gives up the GIL. In a thread of the
controller that meant winning the GIL back twice per heartbeat from an
event loop that serves the API and the detector: at 10,000 hosts on a busy
machine the thread starved and the kernel dropped heartbeats. A process of
its own has a GIL of its own; the controller pays one pipe read per batch.

Frames, both ways: a 4-byte big-endian length, then a pickle (the two ends
are the same program; the pipes are private to them).
- to the worker: ("secrets", {host: key}) replaces, ("learn", {...}) adds;
- from it: {"arrivals": [(host, seq, sent_at, arrived_at), ...],
  "read_until": t (every datagram received before t is in this frame or an
  earlier one), "metrics": {...}, "missed": bool (an unknown host sent)}.
It writes a frame FRAME_S after the previous one when it read something
(or sooner, past DRAIN_MAX heartbeats), and at least every IDLE_S.

Standard library and vmha's wire format only; no asyncio, no store.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from vmha.adapters.heartbeat.receiver import Verifier
from vmha.adapters.heartbeat.wire import ack_of

log = logging.getLogger("vmha.heartbeat.worker")

SO_TIMESTAMPNS = 35  # Linux (asm-generic/socket.h); the socket module lacks it
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)
_LENGTH = struct.Struct(">I")
DATAGRAM_MAX = 256  # a heartbeat is at most 28 + 64 + 32 = 124 bytes
DRAIN_MAX = 4096  # datagrams read before a frame goes out
FRAME_S = 0.02  # what was read goes out at most this late (fewer frames, fewer wake-ups)
IDLE_S = 0.05  # a frame at least this often, so the controller knows how far it read
# After a drain that emptied the queue, let datagrams gather this long:
# batches of ~50 at 10,000/s instead of a wake-up per datagram. Costs no
# accuracy (the stamps are the kernel's) and 5 ms of ack latency.
SETTLE_S = 0.005


def write_frame(out: IO[bytes], message: Any) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_LENGTH.pack(len(body)) + body)
    out.flush()


def read_frame(read: Callable[[int], bytes]) -> Any | None:
    """One frame; None at EOF (or a frame cut short by it). `read(n)` gives
    n bytes, fewer only at EOF."""
    head = read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    body = read(size)
    if len(body) < size:
        return None
    return pickle.loads(body)  # noqa: S301 - our own frames over a private pipe


def read_exact(fd: int, size: int) -> bytes:
    """`size` bytes from a file descriptor (fewer only at EOF); unbuffered,
    so poll() on it tells the truth about what is left."""
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def kernel_stamp(ancillary: list[tuple[int, int, bytes]], fallback: float) -> float:
    """The kernel's receive time (SO_TIMESTAMPNS), else `fallback`."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return float(sec + nsec * 1e-9)
    return fallback


class Worker:
    """The loop of the worker process (see the module docstring)."""

    def __init__(self, sock: socket.socket, out: IO[bytes], send_acks: bool = True) -> None:
        self.sock = sock
        self.out = out
        self.send_acks = send_acks
        self.secrets: dict[str, bytes] = {}
        self.verifier = Verifier(self._secret_for)
        self.counters = dict.fromkeys(("acks_sent", "ack_errors", "batches", "largest_batch"), 0)
        self._missed = False
        self._last_frame = 0.0
        self._batch: list[tuple[str, int, float, float]] = []
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            log.warning("no kernel receive stamps on this system: heartbeats are stamped "
                        "when read")

    def _secret_for(self, host: str) -> bytes | None:
        key = self.secrets.get(host)
        if key is None:
            self._missed = True  # maybe it registered a moment ago
        return key

    def command(self, message: Any) -> None:
        kind, secrets = message
        if kind == "secrets":
            self.secrets = dict(secrets)
        elif kind == "learn":
            self.secrets.update(secrets)

    def run(self, inp: int) -> None:
        """Until EOF on the file descriptor `inp` (the controller closed it
        or is gone)."""
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(inp, select.POLLIN | select.POLLHUP)
        while True:
            for fd, _ in poller.poll(IDLE_S * 1000):
                if fd == inp:
                    message = read_frame(lambda n: read_exact(inp, n))
                    if message is None:
                        return
                    self.command(message)
            if self.drain():
                time.sleep(SETTLE_S)

    def drain(self) -> bool:
        """Read, verify and ack what is queued (up to DRAIN_MAX), write a
        frame when it is time (see the module doc); True if the queue emptied."""
        last = time.time()
        for _ in range(DRAIN_MAX):
            before = time.time()
            try:
                data, ancillary, _flags, addr = self.sock.recvmsg(DATAGRAM_MAX, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                self._send(before)  # the queue was empty at `before`
                return True
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                log.debug("heartbeat worker: %s", exc)
                continue
            last = kernel_stamp(ancillary, before)
            arrival = self._one(data, addr, last)
            if arrival is not None:
                self._batch.append(arrival)
        self._send(last)  # cut at DRAIN_MAX: read up to the last one
        return False

    def _one(self, data: bytes, addr: Any, arrived: float) -> tuple[str, int, float, float] | None:
        accepted = self.verifier.accept(data)
        if accepted is None:
            return None
        (_, host, _, seq, sent_at), key = accepted
        if self.send_acks:
            try:
                self.sock.sendto(ack_of(data, key), addr)
                self.counters["acks_sent"] += 1
            except OSError:
                self.counters["ack_errors"] += 1
        return host, seq, sent_at, arrived

    def _send(self, read_until: float) -> None:
        batch, now = self._batch, time.time()
        wait = FRAME_S if batch else IDLE_S
        if now - self._last_frame < wait and len(batch) < DRAIN_MAX:
            return
        if batch:
            self.counters["batches"] += 1
            self.counters["largest_batch"] = max(self.counters["largest_batch"], len(batch))
        write_frame(self.out, {"arrivals": batch, "read_until": read_until,
                               "metrics": {**self.verifier.metrics, **self.counters},
                               "missed": self._missed})
        self._batch, self._missed, self._last_frame = [], False, now


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vmha.adapters.heartbeat.worker")
    parser.add_argument("--fd", type=int, required=True, help="the bound heartbeat socket")
    parser.add_argument("--no-acks", action="store_true")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the controller decides when we stop
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = socket.socket(fileno=args.fd)
    code = 0
    try:
        Worker(sock, sys.stdout.buffer, not args.no_acks).run(sys.stdin.fileno())
    except BrokenPipeError:
        pass  # the controller went away
    except Exception:
        log.exception("heartbeat worker failed")
        code = 1
    os._exit(code)  # nothing to clean up; do not flush into a dead pipe


if __name__ == "__main__":
    main()
