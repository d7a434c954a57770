"""A real webhook receiver for the tests: a tiny asyncio HTTP/1.1 server on
127.0.0.1 that records every POST and answers as scripted (fail the first
N, answer slowly, redirect). Keep-alive is supported, as httpx reuses
connections. Test helper only."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() at receipt

    @property
    def event(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    fail_first: int = 0  # answer 500 to this many requests first
    delay_s: float = 0.0
    status: int = 200
    location: str = ""
    requests: list[Received] = field(default_factory=list)
    answered: int = 0
    _server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def ids(self) -> list[int]:
        """Event ids of the requests answered 2xx, in arrival order."""
        return [int(r.event["id"]) for r in self.requests if r.headers.get("x-ok") == "1"]

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        received = Received(headers, body, time.time())
        self.requests.append(received)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status = 500 if self.answered < self.fail_first else self.status
        self.answered += 1
        if 200 <= status < 300:
            received.headers["x-ok"] = "1"
        extra = f"Location: {self.location}\r\n" if self.location else ""
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\n{extra}\r\nok".encode()
        )
        await writer.drain()
        return True
