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


def test_answers_cut_short_or_malformed_are_post_failed() -> None:
    answers = iter([
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",  # then closed
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n",
    ])

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(next(answers))
        await writer.drain()
        writer.close()

    async def run() -> list[str]:
        server, url = await serve(handler)
        poster = Http1Poster(timeout_s=2)
        errors = []
        for _ in range(3):
            with pytest.raises(PostFailed) as info:
                await poster.post("s1", urlsplit(url), "127.0.0.1", b"{}", {})
            errors.append(str(info.value))
        await poster.aclose()
        server.close()
        return errors

    errors = asyncio.run(run())
    assert "ended in the middle of the answer" in errors[0]
    assert "not an HTTP/1.x status line" in errors[1]
    assert "bad header line" in errors[2]


def test_a_header_value_with_a_line_break_is_never_sent() -> None:
    async def run() -> None:
        poster = Http1Poster(timeout_s=1)
        with pytest.raises(PostFailed, match="line break"):
            await poster.post("s1", urlsplit("http://127.0.0.1:9/"), "127.0.0.1", b"{}",
                              {"X-Evil": "a\r\nInjected: yes"})
        await poster.aclose()

    asyncio.run(run())


def test_post_all_writes_every_request_before_reading_an_answer() -> None:
    """A server that reads all five requests before it answers any: only
    a pipelining client gets through (one at a time would wait forever)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        bodies = [(await read_request(reader))[1] for _ in range(5)]
        for n, body in enumerate(bodies):
            status = 500 if n == 3 else 200
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s"
                         % (status, len(body), body))
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    async def run() -> None:
        server, url = await serve(handler)
        poster = Http1Poster(timeout_s=2)
        items = [(b"e%d" % n, {"X-N": str(n)}) for n in range(5)]
        answers, error = await poster.post_all("s1", urlsplit(url), "127.0.0.1", items)
        assert error is None
        assert [(a.status, a.body) for a in answers] == [
            (200, b"e0"), (200, b"e1"), (200, b"e2"), (500, b"e3"), (200, b"e4")]
        await poster.aclose()
        server.close()

    asyncio.run(run())
