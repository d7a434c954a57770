"""The agent's http and tcp checks against real local servers."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable

import pytest

from vmha.agent.checks import Poller, http_check, http_target, start_http, start_tcp, tcp_check

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
    assert 0.25 < time.monotonic() - t0 < 10  # not before its timeout; it did not hang
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


def test_many_checks_on_one_poller_each_get_their_own_verdict_and_deadline() -> None:
    """One Poller carries checks of different kinds and timeouts at once: a
    later check with an earlier deadline still times out on time, the
    answering ones are not held up by the hung ones, and `close()` ends
    what is still in flight without a verdict (its socket closed)."""
    async def main() -> tuple[dict[str, tuple[str | None, float]], list[str], int]:
        ok = await asyncio.start_server(answering("200 OK", b"ok"), "127.0.0.1", 0)
        hung = await asyncio.start_server(silent, "127.0.0.1", 0)
        ok_port, hung_port = (s.sockets[0].getsockname()[1] for s in (ok, hung))
        poller, t0 = Poller(), time.monotonic()
        verdicts: dict[str, tuple[str | None, float]] = {}
        late: list[str] = []

        def record(name: str) -> Callable[[str | None], None]:
            return lambda v: verdicts.setdefault(name, (v, time.monotonic() - t0))

        start_http(http_target(f"http://127.0.0.1:{hung_port}/"), 4.0, "", record("hung-4"),
                   poller)
        start_http(http_target(f"http://127.0.0.1:{hung_port}/"), 0.5, "", record("hung-0.5"),
                   poller)
        start_http(http_target(f"http://127.0.0.1:{ok_port}/"), 1.0, "ok", record("ok"), poller)
        start_tcp("127.0.0.1", ok_port, 1.0, record("tcp"), poller)
        start_tcp("127.0.0.1", free_port(), 1.0, record("refused"), poller)
        while len(verdicts) < 5:
            await asyncio.sleep(0.1)
        kept = start_http(http_target(f"http://127.0.0.1:{hung_port}/"), 5.0, "",
                          late.append, poller)
        await asyncio.sleep(0.1)
        fds = len(os.listdir("/proc/self/fd"))
        poller.close()
        await asyncio.sleep(0.1)
        assert kept is not None
        for server in (ok, hung):
            server.close()
        return verdicts, late, fds - len(os.listdir("/proc/self/fd"))

    verdicts, late, closed = asyncio.run(main())
    assert {k: v for k, (v, _) in verdicts.items()} == {
        "hung-4": "no answer within 4 s", "hung-0.5": "no answer within 0.5 s",
        "ok": None, "tcp": None, "refused": "connection refused"}
    # each on its own deadline: the later check's earlier one re-armed the timer
    assert 0.45 < verdicts["hung-0.5"][1] < 3.5 < 3.95 < verdicts["hung-4"][1]
    assert late == []  # closed: no verdict
    assert closed >= 2  # the kept check's socket and the poller's epoll
