"""One http or tcp check of an application, from the host agent (asyncio).

An http check sends one `GET` (HTTP/1.1, `Connection: close`) on a new
connection and is healthy on a 2xx or 3xx status (redirects are not
followed) whose body, when `expect` is set, contains it within its first
`BODY_MAX` bytes. https certificates are not verified (a probe asks "does
it answer", like Kubernetes' httpGet probes; it sends no secret). A tcp
check is healthy when a connection opens. Each verdict is `None` when
healthy, else a one-line reason ("connection refused", "no answer within
2 s", "HTTP 503", ...); the whole check, connect included, is bounded by
its timeout.

Why not httpx, and why not even asyncio's streams: the agent runs every
probe of its host, 50 at 1 s cost 4 % of a core through
`asyncio.open_connection` (a task, a stream pair, a `timeout` context and
several event-loop passes per check). The common case, plain http or tcp
to an IP address, runs here on a non-blocking socket (`start_http`,
`start_tcp`): connect, send the request bytes prepared once per target
(`HttpTarget`), parse the status line (and the body only when `expect`
asks), close. The sockets of all checks in flight share one epoll object
and one timeout timer (`Poller`), not the loop's per-socket readers.
https and host names take the stream path (TLS, name resolution) with
the same verdicts. A new connection per check, on purpose: a kept-alive
connection would report an application whose listener died as healthy.

`http_check`/`tcp_check` are the awaitable forms (tests, one-off checks).
Used by `vmha.agent.prober`; it knows nothing about instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import heapq
import ipaddress
import itertools
import math
import os
import select
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

BODY_MAX = 64 * 1024
HEAD_MAX = 16 * 1024  # status line and headers
_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE

Done = Callable[[str | None], None]


class Cancellable:
    """What `start_http`/`start_tcp` return: `cancel()` ends the check
    without a verdict (its `done` is not called)."""

    def cancel(self) -> object:
        raise NotImplementedError


def _reason(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed before a full answer"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"{type(exc).__name__}: {exc}"[:200]


def _literal(host: str) -> tuple[socket.AddressFamily, str] | None:
    """(family, address) when `host` is an IP address, else None."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), str(ip)


@dataclass(frozen=True)
class HttpTarget:
    """A probe URL taken apart once: where to connect and the request bytes."""

    url: str
    host: str
    port: int
    secure: bool
    request: bytes
    family: socket.AddressFamily | None  # set: an IP address (the callback path)

    @property
    def fast(self) -> bool:
        return self.family is not None and not self.secure


@functools.lru_cache(maxsize=4096)
def http_target(url: str) -> HttpTarget:
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               "User-Agent: vmha-probe\r\nConnection: close\r\n\r\n").encode("latin-1")
    literal = _literal(host)
    return HttpTarget(url, literal[1] if literal else host,
                      parts.port or (443 if secure else 80), secure, request,
                      literal[0] if literal else None)


def parse_answer(data: bytes, expect: bytes, eof: bool) -> str | Literal[False] | None:
    """The verdict on what arrived so far: None (healthy), a reason, or
    False when more bytes are needed."""
    end = data.find(b"\n")
    if end < 0:
        if not eof and len(data) < HEAD_MAX:
            return False
        return "not an HTTP answer" if data else "connection closed without an answer"
    fields = data[:end].split(None, 2)
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
        return "not an HTTP answer"
    status = int(fields[1])
    if not 200 <= status < 400:
        return f"HTTP {status}"
    if not expect:
        return None
    head = data.find(b"\r\n\r\n", end - 1)
    skip = 4
    if head < 0:
        head, skip = data.find(b"\n\n", end), 2
    if head < 0:
        if eof or len(data) >= HEAD_MAX:
            return f"HTTP {status} without {expect.decode(errors='replace')!r} in its body"
        return False
    limit = min(_content_length(data[end + 1:head]), BODY_MAX)
    body = data[head + skip:head + skip + limit]
    if expect in body:
        return None
    if eof or len(body) >= limit:
        return f"HTTP {status} without {expect.decode(errors='replace')!r} in its body"
    return False


def _content_length(headers: bytes) -> int:
    for header in headers.split(b"\n"):
        key, _, value = header.partition(b":")
        if key.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return BODY_MAX


class Poller:
    """The sockets of the checks in flight of one owner (the prober), on an
    epoll object of their own that the running loop watches as one reader.

    Why not the loop's `add_writer`/`add_reader`: each of those is a
    selector registration with its bookkeeping (a key, a handle, the
    transport check) and an `epoll_ctl`, four per http check, plus a loop
    timer per check; profiled with 50 checks a second that was a third of
    the agent's probe CPU. Here a check costs an `epoll_ctl` ADD (and a
    MOD from writable to readable for http; closing the socket removes
    it), every ready socket of a loop pass is served by one `poll`, and
    the timeouts are a heap behind a single loop timer armed at the
    earliest deadline still in flight. Verdicts are handed out after the
    pass (`done` never runs while events of the same pass wait, so a
    socket it might open cannot be taken for one that was just closed).
    Made on the running loop; `close()` ends it and every check in flight
    (without verdicts).
    """

    __slots__ = ("_checks", "_deadlines", "_ep", "_loop", "_order", "_timer", "_timer_at")

    def __init__(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._ep = select.epoll()
        self._checks: dict[int, _SocketCheck] = {}
        self._deadlines: list[tuple[float, int, _SocketCheck]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        loop.add_reader(self._ep.fileno(), self._ready)

    def watch(self, check: _SocketCheck, fd: int, timeout_s: float) -> None:
        """Wait for `fd` to connect (writable), at most `timeout_s`."""
        self._ep.register(fd, select.EPOLLOUT)
        self._checks[fd] = check
        deadline = self._loop.time() + timeout_s
        heapq.heappush(self._deadlines, (deadline, next(self._order), check))
        if deadline < self._timer_at:
            self._arm(deadline)

    def close(self) -> None:
        for check in list(self._checks.values()):
            check.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadlines.clear()
        if not self._ep.closed:
            self._loop.remove_reader(self._ep.fileno())
            self._ep.close()

    def readable(self, fd: int) -> None:
        self._ep.modify(fd, select.EPOLLIN)

    def forget(self, fd: int) -> None:
        """`fd` is about to close (which also takes it out of the epoll set)."""
        self._checks.pop(fd, None)

    def _ready(self) -> None:
        verdicts: list[tuple[Done, str | None]] = []
        for fd, _events in self._ep.poll(0):
            check = self._checks.get(fd)
            if check is not None:
                check.event(verdicts)
        _hand_out(verdicts)

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = self._loop.call_at(deadline, self._expire), deadline

    def _expire(self) -> None:
        """Time out what is due; drop the entries of checks that ended."""
        self._timer, self._timer_at = None, math.inf
        now, heap = self._loop.time(), self._deadlines
        verdicts: list[tuple[Done, str | None]] = []
        while heap and (heap[0][2].ended or heap[0][0] <= now):
            check = heapq.heappop(heap)[2]
            if not check.ended:
                check.time_out(verdicts)
        if heap:
            self._arm(heap[0][0])
        _hand_out(verdicts)


def _hand_out(verdicts: list[tuple[Done, str | None]]) -> None:
    for done, verdict in verdicts:
        done(verdict)


class _SocketCheck(Cancellable):
    """One check on a non-blocking socket, driven by a `Poller`:
    connect, then (http) send and read until `parse_answer` decides."""

    __slots__ = ("_data", "_done", "_expect", "_fd", "_poller", "_request", "_sent", "_sock",
                 "_timeout_s")

    def __init__(self, poller: Poller, request: bytes, expect: bytes, timeout_s: float,
                 done: Done) -> None:
        self._poller = poller
        self._request, self._expect = request, expect
        self._timeout_s, self._done = timeout_s, done
        self._sock: socket.socket | None = None
        self._fd = -1
        self._sent = False
        self._data = b""

    @property
    def ended(self) -> bool:
        return self._done is _ignore

    def start(self, family: socket.AddressFamily, address: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            sock = self._sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            self._fd = sock.fileno()
            code = sock.connect_ex((address, port))
        except OSError as exc:
            self._close()
            loop.call_soon(self._finish_now, _reason(exc, self._timeout_s))
            return
        if code not in (0, errno.EINPROGRESS):
            self._close()
            loop.call_soon(self._finish_now, _reason(OSError(code, os.strerror(code)), 0))
            return
        self._poller.watch(self, self._fd, self._timeout_s)

    def cancel(self) -> None:
        self._done = _ignore
        self._close()

    def event(self, verdicts: list[tuple[Done, str | None]]) -> None:
        """Its socket is ready: connected (or failed to), or readable."""
        if self._sent:
            self._readable(verdicts)
        else:
            self._connected(verdicts)

    def time_out(self, verdicts: list[tuple[Done, str | None]]) -> None:
        self._finish(verdicts, _reason(TimeoutError(), self._timeout_s))

    def _connected(self, verdicts: list[tuple[Done, str | None]]) -> None:
        sock = self._sock
        assert sock is not None
        if not self._request:  # tcp: did the connection open?
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            self._finish(verdicts, _reason(OSError(code, os.strerror(code)), 0) if code else None)
            return
        try:  # a failed connect raises its error here (refused, unreachable, ...)
            sent = sock.send(self._request)  # a few dozen bytes into an empty buffer
        except OSError as exc:
            self._finish(verdicts, _reason(exc, self._timeout_s))
            return
        if sent < len(self._request):
            self._finish(verdicts, "the request did not fit into the socket's send buffer")
            return
        self._sent = True
        self._poller.readable(self._fd)

    def _readable(self, verdicts: list[tuple[Done, str | None]]) -> None:
        assert self._sock is not None
        try:
            chunk = self._sock.recv(BODY_MAX + HEAD_MAX)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(verdicts, _reason(exc, self._timeout_s))
            return
        self._data += chunk
        verdict = parse_answer(self._data, self._expect, not chunk)
        if verdict is not False:
            self._finish(verdicts, verdict)

    def _finish(self, verdicts: list[tuple[Done, str | None]], verdict: str | None) -> None:
        verdicts.append((self._done, verdict))
        self._done = _ignore
        self._close()

    def _finish_now(self, verdict: str | None) -> None:
        done = self._done
        self._done = _ignore
        done(verdict)

    def _close(self) -> None:
        if self._sock is not None:
            self._poller.forget(self._fd)
            self._sock.close()
            self._sock = None


class _TaskCheck(Cancellable):
    """The stream path (https, host names) behind the same interface."""

    def __init__(self, check: asyncio.Future[str | None], done: Done) -> None:
        self._task = asyncio.ensure_future(check)
        self._task.add_done_callback(lambda t: None if t.cancelled() else done(t.result()))

    def cancel(self) -> None:
        self._task.cancel()


def start_http(target: HttpTarget, timeout_s: float, expect: str, done: Done,
               poller: Poller) -> Cancellable:
    """Start one http check; `done(verdict)` is called once, on the loop
    (`poller` runs it when it is plain http to an IP address)."""
    if target.fast:
        assert target.family is not None
        check = _SocketCheck(poller, target.request, expect.encode(), timeout_s, done)
        check.start(target.family, target.host, target.port)
        return check
    return _TaskCheck(asyncio.ensure_future(_stream_http(target, timeout_s, expect)), done)


def start_tcp(host: str, port: int, timeout_s: float, done: Done,
              poller: Poller) -> Cancellable:
    literal = _literal(host)
    if literal is not None:
        check = _SocketCheck(poller, b"", b"", timeout_s, done)
        check.start(literal[0], literal[1], port)
        return check
    return _TaskCheck(asyncio.ensure_future(_stream_tcp(host, port, timeout_s)), done)


async def http_check(url: str, timeout_s: float, expect: str = "") -> str | None:
    future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    poller = Poller()
    check = start_http(http_target(url), timeout_s, expect, future.set_result, poller)
    try:
        return await future
    finally:
        check.cancel()
        poller.close()


async def tcp_check(host: str, port: int, timeout_s: float) -> str | None:
    future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    poller = Poller()
    check = start_tcp(host, port, timeout_s, future.set_result, poller)
    try:
        return await future
    finally:
        check.cancel()
        poller.close()


async def _stream_tcp(host: str, port: int, timeout_s: float) -> str | None:
    try:
        async with asyncio.timeout(timeout_s):
            _reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        return _reason(exc, timeout_s)
    writer.close()
    return None


async def _stream_http(target: HttpTarget, timeout_s: float, expect: str) -> str | None:
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                target.host, target.port, ssl=_INSECURE if target.secure else None,
                server_hostname=target.host if target.secure else None)
            writer.write(target.request)
            data, eof = b"", False
            while True:
                verdict = parse_answer(data, expect.encode(), eof)
                if verdict is not False:
                    return verdict
                chunk = await reader.read(BODY_MAX + HEAD_MAX)
                data, eof = data + chunk, not chunk
    except (OSError, TimeoutError, ValueError) as exc:
        return _reason(exc, timeout_s)
    finally:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()


def _ignore(_verdict: str | None) -> None:
    """A finished or cancelled check's `done`."""
