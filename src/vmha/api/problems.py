"""Every API error as `application/problem+json` (RFC 9457).

`install(app)` registers the exception handlers: vmha errors by their
`.status` and `.title`, request validation (422 naming each field path),
Starlette's HTTP errors (unknown route 404, 405, 401/403 raised by auth)
and anything unexpected (500 with a generic detail; the traceback goes to
the server log only, never to the client).

Called by `vmha.api.app.create_app`; holds no state.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vmha.errors import Unauthenticated, ValidationError, VmhaError

log = logging.getLogger("vmha.api")

PROBLEM_TYPE = "application/problem+json"
TYPE_BASE = "https://vmha.dev/problems/"


def problem(
    request: Request,
    status: int,
    title: str,
    detail: str,
    *,
    errors: Sequence[Mapping[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """One problem response; `type` is a stable URI per status."""
    slug = HTTPStatus(status).phrase.lower().replace(" ", "-") if status in _STATUSES else "error"
    body: dict[str, Any] = {
        "type": TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if errors is not None:
        body["errors"] = list(errors)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_TYPE, headers=headers)


_STATUSES = {s.value for s in HTTPStatus}


def _field_path(loc: Iterable[Any]) -> str:
    """`("body", "policy", "priority")` -> `body.policy.priority`; list
    indices as `[0]`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _on_request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": _field_path(err.get("loc", ())),
         "message": str(err.get("msg", "invalid")).removeprefix("Value error, ")}
        for err in exc.errors()
    ]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return problem(request, 422, "Invalid input", detail, errors=errors)


def _on_vmha_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VmhaError)
    return vmha_error_response(request, exc)


def vmha_error_response(request: Request, exc: VmhaError) -> JSONResponse:
    """The problem answer of a vmha error (also used by vmha.api.limits)."""
    headers: dict[str, str] = {}
    errors = None
    if isinstance(exc, ValidationError):
        errors = [{"field": exc.field, "message": exc.reason}]
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.status >= 500:
        # Store outages and the like: say what, not how (no internals).
        log.warning("%s %s: %s", request.method, request.url.path, exc.detail)
    delay = getattr(exc, "delay_s", None)
    if delay is not None:
        headers["Retry-After"] = str(max(1, round(delay)))
    return problem(request, exc.status, exc.title, exc.detail, errors=errors, headers=headers)


def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    title = HTTPStatus(status).phrase.capitalize() if status in _STATUSES else "Error"
    detail = exc.detail if isinstance(exc.detail, str) else title
    if status == 404 and detail == "Not Found":
        detail = f"no such endpoint: {request.method} {request.url.path}; see /docs"
    headers = exc.headers
    if status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}; see /docs"
        known = (headers or {}).get("Allow", "")
        allowed = _documented_methods(request) | {m.strip() for m in known.split(",") if m}
        headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
    return problem(request, status, title, detail, headers=headers)


def _documented_methods(request: Request) -> set[str]:
    """Every method /openapi.json documents for this path (Starlette's own
    Allow names only the first route that matched the path)."""
    methods: set[str] = set()
    for template, item in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\{[^/]+\}", "[^/]+", template), request.url.path):
            methods |= {method.upper() for method in item}
    return methods


def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(
        request, 500, "Internal error",
        "the server failed to handle this request; the details are in the controller's log",
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(VmhaError, _on_vmha_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
