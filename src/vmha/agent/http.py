"""The agent's tiny HTTP API (stdlib asyncio, HTTP/1.1, one request per
connection), for the controller's confirmation step.

    GET  /v1/health                      -> the agent's view of itself
    POST /v1/probe {"targets": ["host2"], "timeout_s": 1.0}
                                         -> {"host2": true}

Every request needs `Authorization: Bearer <api.token>`. Errors are
problem+json with a `detail` that names the field. Bodies above 64 KiB
are refused. Called by `vmha.agent.main`; it only reads the Agent.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from vmha.agent.runtime import Agent

log = logging.getLogger(__name__)

BODY_MAX = 65536
READ_TIMEOUT_S = 5.0
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 422: "Unprocessable Entity"}


class HttpError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class AgentApi:
    def __init__(self, agent: Agent, token: str) -> None:
        self._agent = agent
        self._auth = f"Bearer {token}".encode()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, payload = await asyncio.wait_for(self._serve(reader), READ_TIMEOUT_S * 3)
        except HttpError as err:
            status, payload = err.status, {"title": _REASONS[err.status], "detail": err.detail}
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            writer.close()
            return
        body = json.dumps(payload).encode()
        ctype = "application/json" if status == 200 else "application/problem+json"
        head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        try:
            writer.write(head.encode() + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader) -> tuple[int, Any]:
        method, path, headers = await self._read_head(reader)
        length = int(headers.get("content-length", "0") or 0)
        if length > BODY_MAX:
            raise HttpError(413, f"body of {length} bytes exceeds {BODY_MAX}")
        body = await reader.readexactly(length) if length else b""
        if not hmac.compare_digest(headers.get("authorization", "").encode(), self._auth):
            raise HttpError(401, "missing or wrong bearer token")
        if path == "/v1/health":
            if method != "GET":
                raise HttpError(405, f"{method} is not allowed on {path}; use GET")
            return 200, self._agent.health()
        if path == "/v1/probe":
            if method != "POST":
                raise HttpError(405, f"{method} is not allowed on {path}; use POST")
            return 200, await self._probe(body)
        raise HttpError(404, f"no such path {path!r}; try /v1/health or /v1/probe")

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
        line = await reader.readline()
        parts = line.decode("latin-1").split()
        if len(parts) != 3:
            raise HttpError(400, "malformed request line")
        headers: dict[str, str] = {}
        for _ in range(100):
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            key, _, value = raw.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        return parts[0], parts[1].split("?", 1)[0], headers

    async def _probe(self, body: bytes) -> dict[str, bool]:
        try:
            data = json.loads(body or b"{}")
        except ValueError as exc:
            raise HttpError(400, f"body is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise HttpError(422, "body must be a JSON object")
        targets = data.get("targets")
        timeout_s = data.get("timeout_s", 1.0)
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise HttpError(422, "targets: must be a list of host names")
        if not isinstance(timeout_s, int | float) or not 0 < timeout_s <= 10:
            raise HttpError(422, "timeout_s: must be a number in (0, 10]")
        peers = self._agent.cfg.peers
        unknown = [t for t in targets if t not in peers]
        if unknown:
            raise HttpError(422, f"targets: {unknown} are not peers of {self._agent.ident.host}")
        results = await asyncio.gather(*(self._agent.probe(t, timeout_s) for t in targets))
        return dict(zip(targets, results, strict=True))
