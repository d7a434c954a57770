"""A tiny HTTP/1.1 receiver standing in for the controller's agent endpoints.

Records every request (method, path, headers, JSON body, arrival time) and
answers 202 {"accepted": N} for event batches, a set JSON document for
GETs of its path, 200 otherwise, or a chosen status. Keeps connections
alive, as httpx expects. Tests only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float  # time.time() on arrival


class Receiver:
    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: list[Request] = []
        self.status: int | None = None  # force a status for every answer
        self.documents: dict[str, Any] = {}  # GET path -> JSON answer (probe documents)
        self.replies: dict[str, Any] = {}  # path suffix -> JSON answered to it
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.arrived = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Stop listening and cut open connections (the controller is down)."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    def events(self) -> list[dict[str, Any]]:
        return [e for r in self.requests if r.path.endswith("/events") for e in r.body["events"]]

    def inventories(self) -> list[Request]:
        return [r for r in self.requests if r.path.endswith("/inventory")]

    async def wait_for(self, check: Any, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver: condition not met in {timeout} s; "
                                     f"got {[(r.method, r.path, r.body) for r in self.requests]}")
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), 0.05)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers = {}
                while (raw := await reader.readline()) not in (b"\r\n", b""):
                    key, _, value = raw.decode().partition(":")
                    headers[key.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                data = json.loads(body) if body else None
                self.requests.append(Request(method, path, headers, data, time.time()))
                self.arrived.set()
                status = self.status or (202 if path.endswith("/events") else 200)
                reply = next((v for k, v in self.replies.items() if path.endswith(k)), {})
                answer = json.dumps({"accepted": len(data["events"])} if status == 202 and data
                                    else reply).encode()
                if method == "GET" and path in self.documents and self.status is None:
                    status, answer = 200, json.dumps(self.documents[path]).encode()
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(answer)}\r\n\r\n".encode() + answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        except asyncio.CancelledError:
            return
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
