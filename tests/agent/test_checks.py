"""The agent's http and tcp checks against real local servers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

import pytest

from vmha.agent.checks import http_check, tcp_check

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def answering(status: str, body: bytes, length: bool = True) -> Handler:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        head = f"HTTP/1.1 {status}\r\n"
        if length:
            head += f"Content-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        writer.close()
    return serve


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)  # accepts, never answers (a hung application)


async def serving(handler: Handler, check: Callable[[int], Awaitable[str | None]]) -> str | None:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await check(port)
    finally:
        server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("status", "body", "expect", "verdict"),
    [
        ("200 OK", b"ok vm1\n", "", None),
        ("302 Found", b"", "", None),
        ("200 OK", b"ok vm1\n", "ok vm1", None),
        ("200 OK", b"degraded\n", "ok", "HTTP 200 without 'ok' in its body"),
        ("503 Service Unavailable", b"", "", "HTTP 503"),
        ("404 Not Found", b"ok", "ok", "HTTP 404"),
    ],
)
def test_http_status_and_body(status: str, body: bytes, expect: str,
                              verdict: str | None) -> None:
    got = asyncio.run(serving(answering(status, body), lambda port: http_check(
        f"http://127.0.0.1:{port}/health", 1.0, expect)))
    assert got == verdict


def test_http_body_without_length_is_read_to_the_end() -> None:
    got = asyncio.run(serving(answering("200 OK", b"x" * 100_000 + b"ready", length=False),
                              lambda port: http_check(f"http://127.0.0.1:{port}/", 2.0, "ready")))
    assert got == "HTTP 200 without 'ready' in its body"  # beyond the first 64 KiB
    got = asyncio.run(serving(answering("200 OK", b"ready" + b"x" * 100_000, length=False),
                              lambda port: http_check(f"http://127.0.0.1:{port}/", 2.0, "ready")))
    assert got is None


def test_a_hung_application_times_out_and_a_closed_port_is_refused() -> None:
    t0 = time.monotonic()
    got = asyncio.run(serving(silent, lambda port: http_check(
        f"http://127.0.0.1:{port}/health", 0.3)))
    assert got == "no answer within 0.3 s"
    assert 0.25 < time.monotonic() - t0 < 1.5
    port = free_port()
    assert asyncio.run(http_check(f"http://127.0.0.1:{port}/", 1.0)) == "connection refused"
    assert asyncio.run(tcp_check("127.0.0.1", port, 1.0)) == "connection refused"


def test_not_http_and_closed_without_answer() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH\r\n")
        writer.close()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass  # read the request: closing with unread data would be a reset
        writer.close()

    url = "http://127.0.0.1:{}/"
    assert asyncio.run(serving(garbage, lambda p: http_check(url.format(p), 1.0))) == (
        "not an HTTP answer")
    assert asyncio.run(serving(hang_up, lambda p: http_check(url.format(p), 1.0))) == (
        "connection closed without an answer")


def test_tcp_connects() -> None:
    assert asyncio.run(serving(silent, lambda port: tcp_check("127.0.0.1", port, 1.0))) is None


async def pieces(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An answer in three writes, the header name split between two."""
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    for part in (b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 9\r\n\r\nstat", b"us ok"):
        writer.write(part)
        await writer.drain()
        await asyncio.sleep(0.05)
    writer.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])  # socket callbacks; streams
def test_an_answer_in_pieces_is_read_until_the_body_decides(host: str) -> None:
    url = "http://" + host + ":{}/health"
    assert asyncio.run(serving(pieces, lambda p: http_check(url.format(p), 2.0, "us ok"))) is None
    assert asyncio.run(serving(pieces, lambda p: http_check(url.format(p), 2.0, "fine"))) == (
        "HTTP 200 without 'fine' in its body")
    assert asyncio.run(serving(silent, lambda p: http_check(url.format(p), 0.2))) == (
        "no answer within 0.2 s")
