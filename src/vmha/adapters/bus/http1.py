"""A lean HTTP/1.1 POST client for webhook deliveries (over asyncio streams).

Why not httpx, and why not h11: measured here (bench/notify_latency.py,
docs/events.md), an httpx.AsyncClient POST costs about 0.9 ms of CPU and
one through h11 about 0.13 ms, h11 validating every header of every
request and answer with regular expressions, while the whole round trip
over asyncio streams costs about 0.03 ms. At 1,000 events/s to 10
subscribers (10,000 POSTs/s) only the last fits on the controller's CPU.
What is sent is vmha's own (method, path from a checked URL, a few
headers it makes), so the request is written directly; answers are parsed
strictly: a status line, headers (64 KiB at most), then a body delimited
by Content-Length, chunked transfer coding, or the connection's close.

It also closes the DNS-rebinding gap of URL checks: the caller resolves and
checks the addresses, and `post` connects to exactly that address (the
`Host` header and the TLS server name stay the URL's host name).

One keep-alive connection per key (the dispatcher uses one per
subscription). `post_all` pipelines a subscription's backlog: its requests
are written together and the answers read in order, as HTTP/1.1 lets a
server answer them (receivers dedupe on the event id anyway: delivery is at
least once). A reused connection that the server closed while idle is
retried once on a fresh one. Redirects
are never followed (the caller sees the 3xx). Errors: `PostFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult

HEAD_MAX = 65536  # bytes of status line and headers
BODY_MAX = 4096  # bytes of a response body kept (for error messages)
DRAIN_MAX = 1 << 20  # a longer answer body closes the connection instead


class PostFailed(Exception):
    """The request could not be completed (connection, timeout, protocol)."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class _Conn:
    origin: tuple[str, str, int]  # scheme, address, port
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()


class Http1Poster:
    """POSTs over kept-alive HTTP/1.1 connections, one per key."""

    def __init__(self, timeout_s: float, tls: ssl.SSLContext | None = None) -> None:
        self._timeout_s = timeout_s
        self._tls = tls or ssl.create_default_context()
        self._conns: dict[str, _Conn] = {}

    async def aclose(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    async def post(self, key: str, url: SplitResult, address: str, body: bytes,
                   headers: dict[str, str]) -> Answer:
        """POST `body` to `url`, connecting to `address` (already checked)."""
        answers, error = await self.post_all(key, url, address, [(body, headers)])
        if error is not None:
            raise error
        return answers[0]

    async def post_all(self, key: str, url: SplitResult, address: str,
                       items: Sequence[tuple[bytes, dict[str, str]]],
                       ) -> tuple[list[Answer], PostFailed | None]:
        """POST every (body, headers) in order on the key's connection,
        pipelined: all requests written at once, the answers read in order
        (one wake-up of each side for many requests). Returns the answers
        of the first requests that got one and, when not all did, why the
        next did not (the later ones may or may not have reached the server)."""
        answers: list[Answer] = []
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._post_all(key, url, address, items, answers)
            return answers, None
        except TimeoutError:
            error = PostFailed(f"no answer within {self._timeout_s:g} s")
        except _Closed:
            error = PostFailed("the server closed the connection without answering")
        except (OSError, _BadAnswer, ssl.SSLError) as exc:
            error = PostFailed(f"{type(exc).__name__}: {exc}")
        self._drop(key)
        return answers, error

    async def _post_all(self, key: str, url: SplitResult, address: str,
                        items: Sequence[tuple[bytes, dict[str, str]]],
                        answers: list[Answer]) -> None:
        scheme = url.scheme
        port = url.port or (443 if scheme == "https" else 80)
        requests = [_request(url, body, headers) for body, headers in items]  # checked first
        conn = self._conns.get(key)
        if conn is not None and conn.origin != (scheme, address, port):
            self._drop(key)
            conn = None
        if conn is not None:
            try:
                await self._exchange(key, conn, requests, answers)
                return
            except (OSError, _BadAnswer, _Closed):
                self._drop(key)
                if answers:
                    raise  # it did answer: not an idle connection the server closed
        conn = await self._connect(url, address, port)  # one more try on a new one
        self._conns[key] = conn
        await self._exchange(key, conn, requests, answers)

    async def _connect(self, url: SplitResult, address: str, port: int) -> _Conn:
        tls = self._tls if url.scheme == "https" else None
        reader, writer = await asyncio.open_connection(
            address, port, ssl=tls, server_hostname=url.hostname if tls else None,
            limit=HEAD_MAX,
        )
        return _Conn((url.scheme, address, port), reader, writer)

    async def _exchange(self, key: str, conn: _Conn, requests: list[bytes],
                        answers: list[Answer]) -> None:
        conn.writer.write(b"".join(requests))
        await conn.writer.drain()
        for _ in requests:
            answer, reusable = await _read_answer(conn.reader)
            answers.append(answer)
            if not reusable:
                self._drop(key)
                if len(answers) < len(requests):
                    raise _Closed
                return

    def _drop(self, key: str) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


class _Closed(Exception):
    """The server closed the connection before a response arrived."""


class _BadAnswer(Exception):
    """The answer is not HTTP/1.x as this client reads it."""


def _request(url: SplitResult, body: bytes, headers: dict[str, str]) -> bytes:
    """The POST's bytes: Host from the URL, the body's length, `headers`."""
    host = url.netloc.rpartition("@")[2]
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    lines = [f"POST {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if any("\r" in line or "\n" in line for line in lines):
        raise _BadAnswer("a header of the request has a line break")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


async def _read_answer(reader: asyncio.StreamReader) -> tuple[Answer, bool]:
    """The answer (1xx skipped) and whether the connection may be reused."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise _Closed from exc
        except asyncio.LimitOverrunError as exc:
            raise _BadAnswer(f"answer headers over {HEAD_MAX} bytes") from exc
        version, status, headers = _parse_head(head)
        if status >= 200:
            break
    try:
        body, delimited = await _read_body(reader, status, headers)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise _BadAnswer("the connection ended in the middle of the answer") from exc
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    return Answer(status, headers, body), keep and delimited


def _parse_head(head: bytes) -> tuple[str, int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1].isdigit():
        raise _BadAnswer(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise _BadAnswer(f"bad header line: {line[:80]!r}")
        headers[name.lower()] = value.strip()
    return parts[0], int(parts[1]), headers


async def _read_body(reader: asyncio.StreamReader, status: int,
                     headers: dict[str, str]) -> tuple[bytes, bool]:
    """The body (first BODY_MAX bytes) and whether its end was delimited
    (False: it ended with the connection)."""
    if status in (204, 304):
        return b"", True
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader), True
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise _BadAnswer(f"bad Content-Length {length[:20]!r}")
        size = int(length)
        if size > DRAIN_MAX:
            return (await reader.read(BODY_MAX)), False
        return (await reader.readexactly(size))[:BODY_MAX], True
    data = await reader.read(DRAIN_MAX)  # delimited by the close (HTTP/1.0 style)
    return data[:BODY_MAX], False


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = (await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError as exc:
            raise _BadAnswer(f"bad chunk size {size_line[:20]!r}") from exc
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return bytes(body[:BODY_MAX])
        if size + len(body) > DRAIN_MAX:
            raise _BadAnswer("chunked answer too long")
        chunk = await reader.readexactly(size + 2)
        body.extend(chunk[:size])
