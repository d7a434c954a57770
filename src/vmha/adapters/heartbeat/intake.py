"""The controller's heartbeat intake: the socket, read by a worker process.

Built and started by the controller's composition root (`vmha serve`);
the engine pulls what arrived with `take()` on every detector tick.

Why not an asyncio DatagramProtocol on the event loop: the loop also serves
the API, writes to the store and runs confirmation rounds, and any stall of
it longer than the socket's buffer lasts dropped heartbeats, which the
detector then learned as link loss — or read its own backlog as the hosts'
silence. Why not a thread: see `vmha.adapters.heartbeat.worker` (the GIL).
The worker reads, verifies and acks; each heartbeat it hands over carries
the time the *kernel* received it, so a late `take()` changes nothing for
the detector. This side keeps the socket (bound here or by `vmha serve`'s
start checks), starts the worker on it, feeds it the agents' secrets
(`set_secrets`, `learn`), collects its frames in a thread, and starts a new
worker if one dies (the detector meanwhile judges nothing past what was
read: the controller says it is overloaded).

`take()` returns how far the worker has read (every datagram received
before that time is in this or an earlier batch, known to within the
worker's IDLE_S when idle): the detector judges silence only up to there,
so a backlog of the controller's own is never read as hosts' silence.

Drops are counted by layer in `stats()`: the kernel's (the socket's drop
counter, SO_MEMINFO: the buffer was full) and the receiver's (`Verifier`
reasons, counted by the worker). A rise of the kernel's counter, seen at
`take()`, also sets `lost_until`: heartbeats of any host may have been lost
before then, so the detector counts no silence across it. At start the
receive buffer is set to `receive_buffer_bytes`; when the kernel caps it
(net.core.rmem_max) a warning names the sysctl to raise.

Linux only (the socket options are Linux's); elsewhere the stamps fall back
to the time of reading and kernel drops are not counted.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vmha.adapters.heartbeat.receiver import REASONS
from vmha.adapters.heartbeat.worker import read_frame, write_frame
from vmha.ports import Arrival, HeartbeatBatch

log = logging.getLogger(__name__)

SO_RCVBUFFORCE = 33  # Linux; needs CAP_NET_ADMIN; ignores net.core.rmem_max
SO_MEMINFO = 55  # Linux; u32[9], [8]: datagrams dropped
RESTART_DELAY_S = 1.0  # before a new worker replaces one that died
STOP_WAIT_S = 2.0
WORKER_COUNTERS = ("acks_sent", "ack_errors", "batches", "largest_batch")


@dataclass(frozen=True)
class IntakeSettings:
    host: str
    port: int
    receive_buffer_bytes: int = 16 * 1024 * 1024
    send_acks: bool = True


class HeartbeatIntake:
    """The heartbeat socket and its worker process (see the module doc)."""

    def __init__(self, settings: IntakeSettings, sock: socket.socket | None = None,
                 on_unknown: Callable[[], None] | None = None) -> None:
        """`sock`: already bound (by `vmha serve`'s start checks), else bound
        here. `on_unknown`: called (from a thread) when an unknown host sent."""
        self.settings = settings
        self._sock = sock if sock is not None else _open_socket(settings)
        self._sock.setblocking(False)
        self.receive_buffer_bytes = _receive_buffer(self._sock, settings.receive_buffer_bytes)
        self._on_unknown = on_unknown
        self._lock = threading.Lock()  # pending, read mark, metrics
        self._write_lock = threading.Lock()  # the worker's stdin
        self._pending: list[Arrival] = []
        self._read_until = time.time()
        self._lost_until = 0.0  # the kernel dropped heartbeats before this
        self._drops_seen = _kernel_drops(self._sock)
        self._metrics: dict[str, int] = dict.fromkeys((*REASONS, *WORKER_COUNTERS), 0)
        self._secrets: dict[str, bytes] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._closing = False
        self.restarts = 0
        self._reader = threading.Thread(target=self._collect, name="heartbeat-intake",
                                        daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._spawn()
        self._reader.start()

    def close(self) -> None:
        """Stop the worker (EOF on its stdin), then close the socket."""
        self._closing = True
        proc = self._proc
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_WAIT_S)
        if self._reader.is_alive():
            self._reader.join(STOP_WAIT_S)
        self._sock.close()

    # -- secrets ----------------------------------------------------------------

    def set_secrets(self, secrets: Mapping[str, bytes]) -> None:
        """Every registered host's heartbeat key (replaces the worker's)."""
        with self._write_lock:
            self._secrets = dict(secrets)
            self._tell(("secrets", self._secrets))

    def learn(self, secrets: Mapping[str, bytes]) -> None:
        """Hosts registered just now: accepted at once."""
        with self._write_lock:
            self._secrets.update(secrets)
            self._tell(("learn", dict(secrets)))

    def _tell(self, message: Any) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdin.closed:
            return
        with contextlib.suppress(OSError):  # the worker is gone; a new one gets every secret
            write_frame(proc.stdin, message)

    # -- the engine's side ------------------------------------------------------

    def take(self) -> HeartbeatBatch:
        """Heartbeats accepted since the last call, oldest first; the time up
        to which every datagram received is in them or before; and the time
        before which the kernel dropped some (the receive buffer was full)."""
        with self._lock:
            batch, self._pending = self._pending, []
            drops = _kernel_drops(self._sock)
            if drops > self._drops_seen:  # lost since the last look: any host's, up to now
                self._drops_seen = drops
                self._lost_until = time.time()
            return HeartbeatBatch(batch, self._read_until, self._lost_until)

    def stats(self) -> dict[str, int]:
        """Counters for the API and metrics: accepted and dropped by reason
        (receiver), kernel drops, acks, batches, worker restarts, the
        receive buffer."""
        with self._lock:
            return {**self._metrics, "kernel_drops": self._drops_seen,
                    "worker_restarts": self.restarts,
                    "receive_buffer_bytes": self.receive_buffer_bytes,
                    "receive_buffer_requested": self.settings.receive_buffer_bytes}

    # -- the worker -------------------------------------------------------------

    def _spawn(self) -> None:
        fd = self._sock.fileno()
        command = [sys.executable, "-m", "vmha.adapters.heartbeat.worker", "--fd", str(fd)]
        if not self.settings.send_acks:
            command.append("--no-acks")
        self._proc = subprocess.Popen(command, pass_fds=(fd,), stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE)
        with self._write_lock:
            self._tell(("secrets", self._secrets))

    def _collect(self) -> None:
        """Take the worker's frames; start a new worker when one ends."""
        while True:
            proc = self._proc
            assert proc is not None and proc.stdout is not None
            while (frame := read_frame(proc.stdout.read)) is not None:
                self._received(frame)
            code = proc.wait()
            if self._closing:
                return
            log.error("heartbeat intake: its worker process ended (exit code %s); starting "
                      "a new one in %g s", code, RESTART_DELAY_S)
            self.restarts += 1
            time.sleep(RESTART_DELAY_S)
            if self._closing:
                return
            self._spawn()

    def _received(self, frame: Mapping[str, Any]) -> None:
        with self._lock:
            self._pending.extend(frame["arrivals"])
            self._read_until = max(self._read_until, frame["read_until"])
            self._metrics.update(frame["metrics"])
        if frame["missed"] and self._on_unknown is not None:
            self._on_unknown()


def _open_socket(settings: IntakeSettings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((settings.host, settings.port))
    except OSError:
        sock.close()
        raise
    return sock


def _receive_buffer(sock: socket.socket, wanted: int) -> int:
    """Ask for `wanted` bytes of receive buffer (past net.core.rmem_max when
    we may); warn when the kernel caps it. Linux reports twice the size
    asked for (its bookkeeping share)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    if got < wanted:
        try:  # root (CAP_NET_ADMIN) may go past the cap
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, wanted)
            got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        except OSError:
            pass
    if got < wanted:
        log.warning(
            "heartbeat socket: the kernel gave a %d KiB receive buffer instead of the %d KiB "
            "configured ([heartbeat] receive_buffer_bytes); raise net.core.rmem_max "
            "(sysctl -w net.core.rmem_max=%d) or a burst of heartbeats is dropped",
            got // 1024, wanted // 1024, wanted)
    return got


def _kernel_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped on this socket so far (SO_MEMINFO; 0
    where the system does not say)."""
    try:
        info = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 64)
    except OSError:
        return 0
    return int(struct.unpack_from("@9I", info)[8]) if len(info) >= 36 else 0
