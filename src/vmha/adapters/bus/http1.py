"""The webhook poster: kept-alive, pipelined HTTP/1.1 POSTs over asyncio
streams, on the one HTTP/1.1 parser and writer (`vmha.adapters.httpwire`,
whose limits it uses: 64 KiB of head, 4 KiB of an answer's body kept,
answers over 1 MiB left unread).

Why not httpx, and why not h11: measured here (bench/notify_latency.py,
bench/http1_parse.py, docs/events.md), an httpx.AsyncClient POST costs
about 0.9 ms of CPU and one through h11 about 0.13 ms, h11 validating every
header of every request and answer with regular expressions, while the
whole round trip over asyncio streams costs about 0.03 ms. At 1,000
events/s to 10 subscribers (10,000 POSTs/s) only the last fits on the
controller's CPU.

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

from vmha.adapters import httpwire

HEAD_MAX = httpwire.HEAD_MAX
BODY_MAX = httpwire.WEBHOOK_BODY_KEPT
DRAIN_MAX = httpwire.WEBHOOK_DRAIN_MAX
Answer = httpwire.Answer


class PostFailed(Exception):
    """The request could not be completed (connection, timeout, protocol)."""


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
        except (_Closed, httpwire.Closed):
            error = PostFailed("the server closed the connection without answering")
        except (OSError, httpwire.ProtocolError, ssl.SSLError) as exc:
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
            except (OSError, httpwire.ProtocolError, httpwire.Closed, _Closed):
                self._drop(key)
                if answers:
                    raise  # it did answer: not an idle connection the server closed
        conn = await self._connect(url, address, port)  # one more try on a new one
        self._conns[key] = conn
        await self._exchange(key, conn, requests, answers)

    async def _connect(self, url: SplitResult, address: str, port: int) -> _Conn:
        tls = self._tls if url.scheme == "https" else None
        reader, writer = await httpwire.connect(address, port, tls, url.hostname)
        return _Conn((url.scheme, address, port), reader, writer)

    async def _exchange(self, key: str, conn: _Conn, requests: list[bytes],
                        answers: list[Answer]) -> None:
        conn.writer.write(b"".join(requests))
        await conn.writer.drain()
        for _ in requests:
            answer, reusable = await httpwire.read_answer(conn.reader, BODY_MAX, DRAIN_MAX)
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


def _request(url: SplitResult, body: bytes, headers: dict[str, str]) -> bytes:
    """The POST's bytes: Host from the URL, the body's length, `headers`."""
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    return httpwire.encode_request("POST", target, url.netloc.rpartition("@")[2], headers, body)
