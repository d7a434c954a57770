"""The one HTTP/1.1 parser and writer (vmha.adapters.httpwire): heads,
bodies (Content-Length, chunked, close-delimited), limits, malformed input
and pipelined messages, read from real asyncio stream readers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from vmha.adapters import httpwire
from vmha.adapters.httpwire import Closed, ProtocolError, TooLarge

T = TypeVar("T")


def fed(data: bytes, eof: bool = True) -> Callable[[], asyncio.StreamReader]:
    def make() -> asyncio.StreamReader:
        reader = asyncio.StreamReader(limit=httpwire.HEAD_MAX)
        reader.feed_data(data)
        if eof:
            reader.feed_eof()
        return reader
    return make


def run(data: bytes, read: Callable[[asyncio.StreamReader], Awaitable[T]],
        eof: bool = True) -> T:
    async def main() -> T:
        # a reader that waited for bytes that never come would fail here, not hang
        return await asyncio.wait_for(read(fed(data, eof)()), 5.0)
    return asyncio.run(main())


def request(data: bytes, body_max: int = 1024, eof: bool = True) -> httpwire.Request:
    return run(data, lambda r: httpwire.read_request(r, body_max), eof)


def answer(data: bytes, body_max: int = 1024,
           drain_max: int | None = None) -> tuple[httpwire.Answer, bool]:
    return run(data, lambda r: httpwire.read_answer(r, body_max, drain_max))


# -- requests --------------------------------------------------------------------
def test_a_request_with_a_body_and_a_query() -> None:
    req = request(b"PUT /v1/domains/x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                  b"Authorization: Bearer t\r\nX-Twice: 1\r\nx-twice: 2\r\n\r\nhello")
    assert (req.method, req.target, req.path, req.version) == (
        "PUT", "/v1/domains/x?y=1", "/v1/domains/x", "HTTP/1.1")
    assert req.headers["authorization"] == "Bearer t"
    assert req.headers["x-twice"] == "2"  # the last one wins
    assert req.body == b"hello"


def test_a_request_without_a_length_has_no_body() -> None:
    assert request(b"GET /v1/health HTTP/1.1\r\nHost: a\r\n\r\n").body == b""


def test_a_chunked_request_body_is_joined() -> None:
    req = request(b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n"
                  b"\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: x\r\n\r\n")
    assert req.body == b"abcde"  # chunked wins over a Content-Length


def test_pipelined_requests_are_read_one_after_the_other() -> None:
    async def both(reader: asyncio.StreamReader) -> list[httpwire.Request]:
        return [await httpwire.read_request(reader, 100) for _ in range(2)]

    first, second = run(b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
                        b"GET /b HTTP/1.1\r\n\r\n", both)
    assert (first.path, first.body, second.path, second.body) == ("/a", b"hi", "/b", b"")


@pytest.mark.parametrize("head", [
    b"GET /\r\n\r\n",  # no version
    b"GET / HTTP/2\r\n\r\n",
    b"GET  / HTTP/1.1\r\n\r\n",  # two spaces
    b"G3T / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",  # space before the colon
    b"GET / HTTP/1.1\r\nX Y: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n",
])
def test_malformed_requests_are_protocol_errors(head: bytes) -> None:
    with pytest.raises(ProtocolError):
        request(head)


def test_a_body_over_the_limit_is_refused_on_its_declared_length() -> None:
    # no body follows and the stream stays open: refused before reading
    with pytest.raises(TooLarge, match="body of 2000 bytes exceeds 1024"):
        request(b"PUT / HTTP/1.1\r\nContent-Length: 2000\r\n\r\n", eof=False)
    with pytest.raises(TooLarge):
        request(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n", eof=False)


def test_a_head_over_the_limit_is_a_protocol_error() -> None:
    big = b"X-Big: " + b"a" * httpwire.HEAD_MAX + b"\r\n"
    with pytest.raises(ProtocolError, match="head over 65536 bytes"):
        request(b"GET / HTTP/1.1\r\n" + big + b"\r\n")


def test_a_stream_that_ends_early() -> None:
    with pytest.raises(Closed):
        request(b"")
    with pytest.raises(Closed):
        request(b"GET / HTTP/1.1\r\nHost: a\r\n")  # in the head
    with pytest.raises(ProtocolError, match="middle of the request"):
        request(b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc")


# -- answers ---------------------------------------------------------------------
def test_a_kept_alive_answer_after_an_interim_one() -> None:
    got, reusable = answer(b"HTTP/1.1 100 Continue\r\n\r\n"
                           b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nETag: \"x\"\r\n\r\nok")
    assert (got.status, got.body, got.headers["etag"], reusable) == (200, b"ok", '"x"', True)


@pytest.mark.parametrize(("data", "body", "reusable"), [
    (b"HTTP/1.1 204 No Content\r\n\r\n", b"", True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", b"ok", True),
    (b"HTTP/1.1 200 OK\r\n\r\nuntil the close", b"until the close", False),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", b"ok", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", False),
])
def test_answer_bodies_and_whether_the_connection_is_kept(data: bytes, body: bytes,
                                                           reusable: bool) -> None:
    got, keep = answer(data)
    assert (got.body, keep) == (body, reusable)


def test_long_answer_bodies_are_cut_or_left_unread() -> None:
    got, keep = answer(b"HTTP/1.1 500 Oops\r\nContent-Length: 10\r\n\r\n0123456789",
                       body_max=4, drain_max=100)
    assert (got.body, keep) == (b"0123", True)  # read to its end, 4 bytes kept
    got, keep = answer(b"HTTP/1.1 500 Oops\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000,
                       body_max=4, drain_max=100)
    assert (got.body, keep) == (b"xxxx", False)  # not drained: the connection goes
    with pytest.raises(TooLarge):
        answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n" + b"x" * 256,
               body_max=4, drain_max=100)


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 2OO OK\r\n\r\n",
    b"HTTP/1.1 20 OK\r\n\r\n",
    b"ICY 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok",  # cut short
])
def test_malformed_answers_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        answer(data)


# -- writing ---------------------------------------------------------------------
def test_written_messages_read_back() -> None:
    raw = httpwire.encode_request("POST", "/hook?x=1", "example.org:8080",
                                  {"Content-Type": "application/json"}, b"{}")
    assert raw.startswith(b"POST /hook?x=1 HTTP/1.1\r\nHost: example.org:8080\r\n"
                          b"Content-Length: 2\r\n")
    req = request(raw)
    assert (req.target, req.headers["content-type"], req.body) == (
        "/hook?x=1", "application/json", b"{}")
    got, keep = answer(httpwire.encode_response(404, {"Content-Type": "text/plain"}, b"no"))
    assert (got.status, got.body, keep) == (404, b"no", True)
    assert httpwire.encode_response(200, {}, b"").startswith(b"HTTP/1.1 200 OK\r\n")


def test_a_line_break_in_a_header_is_never_written() -> None:
    with pytest.raises(ProtocolError, match="line break"):
        httpwire.encode_request("POST", "/", "a", {"X-Id": "1\r\nX-Evil: 2"})
    with pytest.raises(ProtocolError, match="line break"):
        httpwire.encode_response(200, {"Location": "/\nx"}, b"")
