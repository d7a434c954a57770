"""What a request may cost before a handler sees it: `RequestLimits`.

An ASGI middleware in front of the whole API (installed by `create_app`).
For every `/v1` request it checks the bearer token *before* it reads a
byte of the body, so an unauthenticated caller costs the headers only
(uvicorn stops reading the socket while nobody consumes the body). Then
it reads the body itself, up to `[api] max_body_bytes`: a declared
`Content-Length` over the limit is refused at once, a chunked body as soon
as it passes the limit; the connection is then closed by uvicorn without
reading the rest. Only a body within the limit reaches FastAPI (which
parses JSON on the event loop that also takes the agents' heartbeats).

Refusals are the usual problem+json answers: 401 (`WWW-Authenticate:
Bearer`, the same wording as vmha.api.auth) and 413. The principal found
is left in the request state for `vmha.api.auth.authenticate`. Paths
outside `/v1` (health, OpenAPI, docs) take no body: theirs is never read.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vmha.api.auth import PRINCIPAL_STATE, principal_of
from vmha.api.problems import vmha_error_response
from vmha.errors import TooLarge, VmhaError


class RequestLimits:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        ctx = scope["app"].state.vmha
        try:
            if scope["path"] == "/v1" or scope["path"].startswith("/v1/"):
                principal = principal_of(ctx.tokens, request.headers.get("authorization"))
                scope.setdefault("state", {})[PRINCIPAL_STATE] = principal
                receive = await _read_body(request, receive, ctx.settings.api.max_body_bytes)
        except VmhaError as exc:
            await vmha_error_response(request, exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _read_body(request: Request, receive: Receive, limit: int) -> Receive:
    """The whole body (at most `limit` bytes), replayed to the app; then
    the original channel (the app still learns about a disconnect)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(_too_large(int(declared), limit))
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if declared in (None, "0") and not chunked:
        return receive
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return _replay(b"".join(parts), receive, message)
        size += len(message.get("body", b""))
        if size > limit:
            raise TooLarge(_too_large(None, limit))
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return _replay(b"".join(parts), receive)


def _replay(body: bytes, receive: Receive, first: Message | None = None) -> Receive:
    pending: list[Message] = [first] if first is not None else [
        {"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _too_large(declared: int | None, limit: int) -> str:
    size = f"{declared} bytes" if declared is not None else "the body"
    return (f"{size} is more than this API accepts ({limit} bytes, [api] max_body_bytes); "
            "send less per request (e.g. split a batch)")
