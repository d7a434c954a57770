"""Any controller takes API calls: a follower hands changes to the leader.

With several controllers (issue 15) only the leader runs the engine that
drains the command inbox, so a follower forwards every changing call
(POST, PUT, PATCH, DELETE under /v1/) to the leader's API as it came —
same path, query, headers (the caller's token: the leader authenticates)
and body — and answers with the leader's response. Reads (GET, the event
stream) are served by the follower itself from the shared store.

Why forward the HTTP request rather than the typed command: the answer a
caller gets (the engine's result, its 404/409/422 problem) is the
leader's own, with no second encoding of commands and results between
controllers; and writes that are not commands (creating a segment, a
subscription) reach the same place. No leader (etcd without quorum, an
election under way): 503 with Retry-After. A call forwarded once is never
forwarded again (`X-Vmha-Forwarded`): two controllers that disagree on the
leader answer 503 instead of bouncing the request.

Installed by vmha.controller.service when it runs; a bare API app has none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import httpx

log = logging.getLogger("vmha.api.forward")

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MARK = b"x-vmha-forwarded"
HOP_BY_HOP = frozenset({b"host", b"content-length", b"connection", b"transfer-encoding",
                        b"keep-alive", b"upgrade", b"te", b"trailer"})
TIMEOUT_S = 60.0  # a fence-ack's probe round or an evacuation answer can take a while

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


class LeaderForward:
    """ASGI middleware; `target()` is None to answer here (this controller
    leads), the leader's API URL to forward, or "" when there is none."""

    def __init__(self, app: Any, target: Callable[[], str | None], verify: bool | str = True
                 ) -> None:
        self.app = app
        self.target = target
        self.client = httpx.AsyncClient(timeout=TIMEOUT_S, verify=verify)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in CHANGES \
                or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        url = self.target()
        if url is None:
            await self.app(scope, receive, send)
            return
        if not url or any(k == MARK for k, _ in scope["headers"]):
            await _problem(send, 503, "no controller leads the recovery engine right now "
                           "(an election, or etcd without quorum); try again shortly")
            return
        await self._forward(url, scope, receive, send)

    async def _forward(self, url: str, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        headers.append((MARK, b"1"))
        query = scope.get("query_string", b"").decode("latin-1")
        target = url.rstrip("/") + scope["path"] + (f"?{query}" if query else "")
        try:
            resp = await self.client.request(scope["method"], target, content=body,
                                             headers=headers)
        except httpx.HTTPError as exc:
            log.warning("cannot forward %s %s to the leader at %s: %s", scope["method"],
                        scope["path"], url, exc)
            await _problem(send, 503, "the leading controller did not answer; try again shortly")
            return
        out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.items()
               if k.lower().encode() not in HOP_BY_HOP and k.lower() != "content-encoding"]
        out.append((b"content-length", str(len(resp.content)).encode()))
        await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
        await send({"type": "http.response.body", "body": resp.content})

    async def aclose(self) -> None:
        await self.client.aclose()


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _problem(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"type": "about:blank", "title": "Temporarily unavailable",
                       "status": status, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/problem+json"), (b"retry-after", b"1"),
        (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
