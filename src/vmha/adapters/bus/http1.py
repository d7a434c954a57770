"""A lean HTTP/1.1 POST client for webhook deliveries (h11 over asyncio).

Why not httpx: measured on the CI box, an httpx.AsyncClient POST costs
about 0.9 ms of CPU, so one controller tops out near 1,000 deliveries/s —
exactly 100 events/s to 10 subscribers, the latency goal of issue 7. h11
(the protocol engine uvicorn uses, sans I/O) over asyncio streams costs a
fraction of that (bench/notify_latency.py has the figures).

It also closes the DNS-rebinding gap of URL checks: the caller resolves and
checks the addresses, and `post` connects to exactly that address (the
`Host` header and the TLS server name stay the URL's host name).

One keep-alive connection per key (the dispatcher uses one per
subscription, which sends one request at a time). A reused connection
that the server closed while idle is retried once on a fresh one. Redirects
are never followed (the caller sees the 3xx). Errors: `PostFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from urllib.parse import SplitResult

import h11

READ_CHUNK = 65536
BODY_MAX = 4096  # bytes of a response body kept (for error messages)


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
    protocol: h11.Connection

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
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._post(key, url, address, body, headers)
        except TimeoutError as exc:
            self._drop(key)
            raise PostFailed(f"no answer within {self._timeout_s:g} s") from exc
        except (OSError, h11.ProtocolError, ssl.SSLError) as exc:
            self._drop(key)
            raise PostFailed(f"{type(exc).__name__}: {exc}") from exc

    async def _post(self, key: str, url: SplitResult, address: str, body: bytes,
                    headers: dict[str, str]) -> Answer:
        scheme = url.scheme
        port = url.port or (443 if scheme == "https" else 80)
        conn = self._conns.get(key)
        if conn is not None and conn.origin != (scheme, address, port):
            self._drop(key)
            conn = None
        if conn is not None:
            try:
                return await self._exchange(key, conn, url, body, headers)
            except (OSError, h11.RemoteProtocolError, _Closed):
                self._drop(key)  # closed while idle: one more try on a new one
        conn = await self._connect(url, address, port)
        self._conns[key] = conn
        try:
            return await self._exchange(key, conn, url, body, headers)
        except _Closed as exc:
            raise PostFailed("the server closed the connection without answering") from exc

    async def _connect(self, url: SplitResult, address: str, port: int) -> _Conn:
        tls = self._tls if url.scheme == "https" else None
        reader, writer = await asyncio.open_connection(
            address, port, ssl=tls, server_hostname=url.hostname if tls else None
        )
        return _Conn((url.scheme, address, port), reader, writer,
                     h11.Connection(h11.CLIENT))

    async def _exchange(self, key: str, conn: _Conn, url: SplitResult, body: bytes,
                        headers: dict[str, str]) -> Answer:
        host = url.netloc.rpartition("@")[2]
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        fields = [("Host", host), ("Content-Length", str(len(body))), *headers.items()]
        p = conn.protocol
        conn.writer.write(p.send(h11.Request(method="POST", target=target, headers=fields))
                          + p.send(h11.Data(data=body)) + p.send(h11.EndOfMessage()))
        await conn.writer.drain()
        answer = await self._read_answer(conn)
        if p.our_state is h11.MUST_CLOSE or p.their_state is h11.MUST_CLOSE:
            self._drop(key)
        else:
            p.start_next_cycle()
        return answer

    async def _read_answer(self, conn: _Conn) -> Answer:
        p, status, headers, body = conn.protocol, 0, {}, bytearray()
        while True:
            event = p.next_event()
            if event is h11.NEED_DATA:
                data = await conn.reader.read(READ_CHUNK)
                if not data and status == 0:
                    raise _Closed
                p.receive_data(data)
            elif isinstance(event, h11.InformationalResponse):
                continue
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                if len(body) < BODY_MAX:
                    body.extend(event.data[: BODY_MAX - len(body)])
            elif isinstance(event, h11.EndOfMessage):
                return Answer(status, headers, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                raise _Closed

    def _drop(self, key: str) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


class _Closed(Exception):
    """The server closed the connection before a response arrived."""
