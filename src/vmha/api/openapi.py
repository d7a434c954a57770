"""`/openapi.json` as the server behaves: its errors and its limits.

FastAPI documents the success answers and the constraints pydantic checks;
`install(app, settings)` replaces `app.openapi` with a version that also
states what vmha adds around them, so clients and schemathesis agree with
the server:

- every error answer is `application/problem+json` (the `Problem` schema,
  vmha.api.problems), never FastAPI's default validation body;
- every operation may answer 422 (NUL characters are refused everywhere),
  operations with a body 400 (not JSON); every `/v1` operation 401 and
  403 (token and role, checked before the body is read), 413 (`[api]
  max_body_bytes`) and 503 (store or engine unavailable); operations with
  path parameters 404; writes (POST, PUT, PATCH, DELETE) 409; `/readyz`
  503. A route may declare more in its `responses` (they get the problem
  schema too);
- a `limit` query parameter without a maximum of its own has the
  configured `[api] max_page_size`;
- optional query and header parameters are left out, never null;
- text that has no pattern of its own says it holds no NUL character.

Built once per app, on first request of the document. No I/O.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from vmha.config import Settings

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
NO_NUL = "^[^\\x00]*$"
WRITES = {"post", "put", "patch", "delete"}
DESCRIPTIONS = {
    "400": "the body is not JSON",
    "401": "missing or unknown bearer token (WWW-Authenticate: Bearer)",
    "403": "the token's role may not do this",
    "404": "no such resource (or another project's)",
    "409": "conflict: duplicate, still in use, or refused in the current state",
    "413": "the request body is larger than [api] max_body_bytes",
    "422": "invalid input; errors[].field names each bad field",
    "503": "the store or the engine is unavailable (Retry-After)",
}


class ProblemField(BaseModel):
    field: str = Field(description="where: body.…, query.…, header.…, path")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document (every error answer)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str = Field(description="the request path")
    errors: list[ProblemField] | None = Field(
        default=None, description="422 only: one entry per bad field")


def install(app: FastAPI, settings: Settings) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document(app: FastAPI, settings: Settings) -> dict[str, Any]:
    spec = get_openapi(title=app.title, version=app.version, description=app.description,
                       routes=app.routes)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(_schemas())
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            _errors(path, method, operation)
            _limits(operation, settings.api.max_page_size)
            for param in operation.get("parameters", []):
                param["schema"] = _no_null(param.get("schema", {}))
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    _no_nul_text(spec["paths"])
    for name, schema in schemas.items():
        if name not in ("Problem", "ProblemField"):  # may quote a path with any character
            _no_nul_text(schema)
    return spec


def _no_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional parameter is left out, never sent as null (a query
    string or a header cannot carry a null): drop the null alternative."""
    options = schema.get("anyOf")
    if not options:
        return schema
    kept = [o for o in options if o.get("type") != "null"]
    if len(kept) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**kept[0], **rest}


def _no_nul_text(node: Any) -> None:
    """Every text without a pattern of its own gets NO_NUL: the server
    refuses NUL characters in every string (vmha.api.context)."""
    if isinstance(node, dict):
        if node.get("type") == "string" and not ({"pattern", "enum", "const", "format"}
                                                 & node.keys()):
            node["pattern"] = NO_NUL
        for value in node.values():
            _no_nul_text(value)
    elif isinstance(node, list):
        for value in node:
            _no_nul_text(value)


def _schemas() -> dict[str, Any]:
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = problem.pop("$defs", {})
    return {"Problem": problem, **defs}


def _errors(path: str, method: str, operation: dict[str, Any]) -> None:
    statuses = {"422"}
    if path.startswith("/v1"):
        statuses |= {"401", "403", "413", "503"}
    if "{" in path:
        statuses.add("404")
    if method in WRITES:
        statuses.add("409")
    if "requestBody" in operation:
        statuses.add("400")
    if path == "/readyz":
        statuses.add("503")
    responses = operation.setdefault("responses", {})
    for status in statuses:
        responses.setdefault(status, {"description": DESCRIPTIONS[status]})
    for status, response in responses.items():
        if status[0] in "45":
            response["content"] = {"application/problem+json": {"schema": PROBLEM_REF}}


def _limits(operation: dict[str, Any], max_page_size: int) -> None:
    for param in operation.get("parameters", []):
        if param.get("name") != "limit" or param.get("in") != "query":
            continue
        schema = param.get("schema", {})
        for option in schema.get("anyOf", [schema]):
            if option.get("type") == "integer" and "maximum" not in option:
                option["maximum"] = max_page_size
