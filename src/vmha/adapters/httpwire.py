"""HTTP/1.1 on the wire: the one request/response parser and writer of vmha's
own HTTP stacks, and the one place for their limits.

Users: the agent's API server (`vmha.agent.http`), the agent's client to
the controller (`vmha.agent.report.Client`, also used by
`vmha.agent.probesync`), the webhook poster (`vmha.adapters.bus.http1`)
and the lab cloud's Neutron stub (`vmha.lab.openstack.stubs`). Standard
library only (asyncio streams), so the agent stays small and the stub
starts fast. The controller's own calls to agents use httpx (`adapters/peer`,
`adapters/cloud/libvirt`): there, a few calls a second, its cost does not
matter.

Why not h11 (the issue asked for it, and it is installed with httpx): per
exchange it costs about 7x what this parser does (`bench/http1_parse.py`:
~51 vs ~7 us for a webhook POST and its answer; bench/results/http1_parse.json,
docs/development.md), every header of every message checked with regular
expressions; at 1,000 events/s to 10 subscribers (10,000 POSTs/s) that is
half a CPU of the controller's two. What
vmha sends is its own, so it is written directly; what it reads is parsed
strictly:

- a message head is a start line and header lines, each ending in CRLF,
  at most `HEAD_MAX` bytes (the streams' buffer limit: `connect`/`serve`);
- a header line is `name: value`, the name without spaces; header names
  are kept in lower case, the last of repeated ones wins;
- a body is delimited by `Transfer-Encoding: chunked` (which wins over a
  Content-Length), by a Content-Length, or, for answers only, by the
  connection's close; a request without either has no body;
- what breaks these rules raises `ProtocolError`; a peer that closes
  before a message head is complete raises `Closed`.

Not here: the probe checks of `vmha.agent.checks` read an application's
answer leniently on purpose (a verdict on whatever bytes arrive, LF-only
lines accepted: an application that answers is healthy even with a sloppy
HTTP stack), and they run on raw sockets for speed.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

# -- limits: every user's, in one place ----------------------------------------
HEAD_MAX = 64 * 1024  # start line and headers of any message, bytes
AGENT_BODY_MAX = 256 * 1024  # a request body the agent's API takes (domain XML)
AGENT_READ_TIMEOUT_S = 15.0  # the agent's API reads a whole request within this
CONTROLLER_BODY_MAX = 16 << 20  # an answer body the agent reads from the controller
CONTROLLER_CONNECT_TIMEOUT_S, CONTROLLER_REQUEST_TIMEOUT_S = 1.0, 3.0  # the agent's client
WEBHOOK_BODY_KEPT = 4096  # bytes of a webhook receiver's answer kept (error messages)
WEBHOOK_DRAIN_MAX = 1 << 20  # a longer answer is not read: the connection closes instead
LAB_STUB_BODY_MAX = 1 << 20  # a request body the lab cloud's Neutron stub reads (and ignores)

REASONS = {200: "OK", 202: "Accepted", 204: "No Content", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
           422: "Unprocessable Entity", 500: "Internal Server Error",
           503: "Service Unavailable"}

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ProtocolError(Exception):
    """The bytes are not HTTP/1.x as vmha reads it (or exceed a limit)."""


class TooLarge(ProtocolError):
    """A body over the reader's limit (a server answers 413)."""


class Closed(Exception):
    """The peer closed the connection before a message head was complete."""


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # as sent: path and query
    version: str
    headers: dict[str, str]  # names in lower case
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes  # at most the reader's `body_max` bytes


# -- streams with the head limit -------------------------------------------------
async def connect(host: str, port: int, tls: ssl.SSLContext | None = None,
                  server_hostname: str | None = None,
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client connection whose reader refuses heads over HEAD_MAX."""
    return await asyncio.open_connection(
        host, port, ssl=tls, server_hostname=server_hostname if tls else None, limit=HEAD_MAX)


async def serve(handler: Handler, host: str, port: int) -> asyncio.Server:
    """A server whose connections' readers refuse heads over HEAD_MAX."""
    return await asyncio.start_server(handler, host, port, limit=HEAD_MAX)


# -- writing ---------------------------------------------------------------------
def encode_request(method: str, target: str, host: str, headers: Mapping[str, str],
                   body: bytes = b"") -> bytes:
    """A request's bytes: the start line, Host, Content-Length, `headers`
    (in their order), the body. A line break in any of them is refused."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return _encode(lines, body)


def encode_response(status: int, headers: Mapping[str, str], body: bytes,
                    reason: str | None = None) -> bytes:
    """An answer's bytes, its Content-Length from the body."""
    lines = [f"HTTP/1.1 {status} {reason or REASONS.get(status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return _encode(lines, body)


def _encode(lines: list[str], body: bytes) -> bytes:
    if any("\r" in line or "\n" in line for line in lines):
        raise ProtocolError("a header of the message has a line break")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


# -- parsing heads (no I/O) ----------------------------------------------------------
def parse_request_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Method, target, version and headers of a request head (CRLF CRLF ended)."""
    start, headers = _split(head)
    parts = start.split(" ")
    if (len(parts) != 3 or not parts[0].isalpha() or not parts[1]
            or parts[2] not in ("HTTP/1.1", "HTTP/1.0")):
        raise ProtocolError(f"not an HTTP/1.x request line: {start[:80]!r}")
    return parts[0], parts[1], parts[2], headers


def parse_response_head(head: bytes) -> tuple[str, int, dict[str, str]]:
    """Version, status and headers of an answer head (CRLF CRLF ended)."""
    start, headers = _split(head)
    parts = start.split(" ", 2)
    if (len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0")
            or len(parts[1]) != 3 or not parts[1].isdigit()):
        raise ProtocolError(f"not an HTTP/1.x status line: {start[:80]!r}")
    return parts[0], int(parts[1]), headers


def _split(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or " " in name or "\n" in line:
            raise ProtocolError(f"bad header line: {line[:80]!r}")
        headers[name.lower()] = value.strip()
    return lines[0], headers


def content_length(headers: Mapping[str, str]) -> int | None:
    """The Content-Length, None when absent; ProtocolError when not a number."""
    length = headers.get("content-length")
    if length is None:
        return None
    if not length.isdigit():
        raise ProtocolError(f"bad Content-Length {length[:20]!r}")
    return int(length)


def chunked(headers: Mapping[str, str]) -> bool:
    return "chunked" in headers.get("transfer-encoding", "").lower()


# -- reading messages from a stream ------------------------------------------------
async def read_head(reader: asyncio.StreamReader) -> bytes:
    """One message head; Closed when the stream ended before its end."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise Closed("the connection closed before a complete message head") from exc
    except asyncio.LimitOverrunError as exc:
        raise ProtocolError(f"message head over {HEAD_MAX} bytes") from exc


async def read_request(reader: asyncio.StreamReader, body_max: int) -> Request:
    """One request; a body over `body_max` raises TooLarge before it is read."""
    method, target, version, headers = parse_request_head(await read_head(reader))
    try:
        if chunked(headers):
            body = await _read_chunked(reader, body_max, body_max)
        else:
            length = content_length(headers) or 0
            if length > body_max:
                raise TooLarge(f"body of {length} bytes exceeds {body_max}")
            body = await reader.readexactly(length) if length else b""
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise ProtocolError("the connection ended in the middle of the request") from exc
    return Request(method, target, version, headers, body)


async def read_answer(reader: asyncio.StreamReader, body_max: int,
                      drain_max: int | None = None) -> tuple[Answer, bool]:
    """One answer (1xx skipped) and whether the connection may be reused.
    The body keeps its first `body_max` bytes; one longer than `drain_max`
    (default: `body_max`) is not read to its end (the connection is not
    reusable; a chunked one raises ProtocolError)."""
    drain = body_max if drain_max is None else drain_max
    while True:
        try:  # read_head's work in line: one coroutine less per answer (webhooks)
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise Closed("the connection closed before a complete message head") from exc
        except asyncio.LimitOverrunError as exc:
            raise ProtocolError(f"message head over {HEAD_MAX} bytes") from exc
        version, status, headers = parse_response_head(head)
        if status >= 200:
            break
    try:
        body, delimited = await _read_answer_body(reader, status, headers, body_max, drain)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise ProtocolError("the connection ended in the middle of the answer") from exc
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    return Answer(status, headers, body), keep and delimited


async def _read_answer_body(reader: asyncio.StreamReader, status: int,
                            headers: Mapping[str, str], body_max: int,
                            drain_max: int) -> tuple[bytes, bool]:
    """The body and whether its end was delimited (False: it ended with the
    connection, or was left unread)."""
    if status in (204, 304):
        return b"", True
    if chunked(headers):
        return await _read_chunked(reader, body_max, drain_max), True
    length = content_length(headers)
    if length is not None:
        if length > drain_max:
            return (await reader.read(body_max)), False
        return (await reader.readexactly(length))[:body_max], True
    data = await reader.read(drain_max)  # delimited by the close (HTTP/1.0 style)
    return data[:body_max], False


async def _read_chunked(reader: asyncio.StreamReader, body_max: int, drain_max: int) -> bytes:
    body = bytearray()
    while True:
        size_line = (await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError as exc:
            raise ProtocolError(f"bad chunk size {size_line[:20]!r}") from exc
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return bytes(body[:body_max])
        if size < 0 or size + len(body) > drain_max:
            raise TooLarge(f"chunked body over {drain_max} bytes")
        chunk = await reader.readexactly(size + 2)
        if chunk[size:] != b"\r\n":
            raise ProtocolError("a chunk does not end with CRLF")
        body.extend(chunk[:size])
