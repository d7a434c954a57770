"""The lean HTTP/1.1 poster against real sockets: keep-alive reuse, a
server that closed the idle connection, chunked and close-delimited
answers, and timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import pytest

from vmha.adapters.bus.http1 import Http1Poster, PostFailed

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler) -> tuple[asyncio.AbstractServer, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://localhost:{port}/hook?x=1"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return head, await reader.readexactly(length)


def test_keep_alive_reuses_one_connection_and_sends_host_and_body() -> None:
    connections: list[int] = []
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head, body = await read_request(reader)
                heads.append(head)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
        except asyncio.IncompleteReadError:
            writer.close()

    async def run() -> None:
        server, url = await serve(handler)
        poster = Http1Poster(timeout_s=2)
        parts = urlsplit(url)
        for n in range(3):
            answer = await poster.post("s1", parts, "127.0.0.1", b"body-%d" % n, {"X-N": str(n)})
            assert (answer.status, answer.body) == (200, b"body-%d" % n)
        await poster.aclose()
        server.close()

    asyncio.run(run())
    assert len(connections) == 1 and len(heads) == 3
    assert heads[0].startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
    assert b"host: localhost:" in heads[0].lower() and b"x-n: 0" in heads[0].lower()


def test_idle_connection_closed_by_the_server_is_retried_on_a_new_one() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        # Keep-alive promised, then closed right away (an idle timeout).
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        writer.close()

    async def run() -> None:
        server, url = await serve(handler)
        poster = Http1Poster(timeout_s=2)
        for _ in range(3):
            answer = await poster.post("s1", urlsplit(url), "127.0.0.1", b"{}", {})
            assert answer.status == 204
            await asyncio.sleep(0.02)
        await poster.aclose()
        server.close()

    asyncio.run(run())


def test_chunked_and_close_delimited_answers() -> None:
    answers = iter([
        b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbusy\r\n0\r\n\r\n",
        b"HTTP/1.0 302 Found\r\nLocation: http://169.254.169.254/\r\n\r\nmoved",
    ])

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await read_request(reader)
                data = next(answers)
                writer.write(data)
                await writer.drain()
                if b"HTTP/1.0" in data:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, StopIteration):
            writer.close()

    async def run() -> None:
        server, url = await serve(handler)
        poster = Http1Poster(timeout_s=2)
        first = await poster.post("s1", urlsplit(url), "127.0.0.1", b"{}", {})
        assert (first.status, first.body) == (500, b"busy")
        second = await poster.post("s1", urlsplit(url), "127.0.0.1", b"{}", {})
        assert second.status == 302 and second.headers["location"].startswith("http://169")
        assert second.body == b"moved"
        await poster.aclose()
        server.close()

    asyncio.run(run())


def test_timeout_and_refused_connection_are_post_failed() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def run() -> None:
        server, url = await serve(silent)
        poster = Http1Poster(timeout_s=0.2)
        with pytest.raises(PostFailed, match=r"no answer within 0\.2 s"):
            await poster.post("s1", urlsplit(url), "127.0.0.1", b"{}", {})
        server.close()
        refused = urlsplit("http://127.0.0.1:9/")
        with pytest.raises(PostFailed, match=r"Connect|refused"):
            await poster.post("s2", refused, "127.0.0.1", b"{}", {})
        await poster.aclose()

    asyncio.run(run())
