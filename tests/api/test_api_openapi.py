"""/openapi.json describes what the server does (issue 11, item 10): every
error answer as problem+json, the limits and patterns the server enforces,
and the server refuses what the document refuses."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from vmha.adapters.store import query

PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


@pytest.fixture
def spec(admin: TestClient) -> dict[str, Any]:
    got = admin.get("/openapi.json")
    assert got.status_code == 200
    document: dict[str, Any] = got.json()
    return document


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in spec["paths"].items()
            for method, op in item.items()]


def test_every_error_answer_is_declared_as_problem_json(spec: dict[str, Any]) -> None:
    for path, method, op in operations(spec):
        responses = op["responses"]
        wanted = {"422"}
        if path.startswith("/v1"):
            wanted |= {"401", "403", "413", "503"}
        if "{" in path:
            wanted.add("404")
        if method in ("post", "put", "patch", "delete"):
            wanted.add("409")
        assert wanted <= set(responses), (method, path, sorted(responses))
        for status, response in responses.items():
            if status[0] in "45":
                assert response["content"] == PROBLEM, (method, path, status)
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_limits_and_patterns_are_the_servers(spec: dict[str, Any],
                                             admin: TestClient) -> None:
    params = {p["name"]: p["schema"] for p in spec["paths"]["/v1/hosts"]["get"]["parameters"]}
    assert params["limit"]["maximum"] == 50  # the conftest app's api.max_page_size
    assert params["sort"]["pattern"] == "^(name|state|segment)$"
    assert admin.get("/v1/hosts", params={"limit": 51}).status_code == 422
    assert admin.get("/v1/hosts", params={"sort": "address"}).status_code == 422
    assert admin.get("/v1/hosts", params={"sort": "state", "limit": 50}).status_code == 200
    name = spec["components"]["schemas"]["SegmentCreate"]["properties"]["name"]
    assert name["maxLength"] == 64 and "pattern" in name
    for bad in (".", "..", "a/b", ""):
        assert admin.post("/v1/segments", json={"name": bad}).status_code == 422, bad


def test_json_types_are_strict_but_integral_numbers_are_integers(admin: TestClient) -> None:
    assert admin.post("/v1/segments", json={"name": "s", "enabled": 0}).status_code == 422
    assert admin.post("/v1/segments", json={"name": "s", "enabled": "true"}).status_code == 422
    made = admin.post("/v1/hosts", json={"name": "h", "segment": "s",
                                         "capacity": {"vcpus": 4.0}})
    assert made.status_code == 422 and made.json()["errors"][0]["field"] == "body.segment"
    assert admin.post("/v1/segments", json={"name": "s"}).status_code == 201
    made = admin.post("/v1/hosts", json={"name": "h", "segment": "s",
                                         "capacity": {"vcpus": 4.0}})
    assert made.status_code == 201 and made.json()["capacity"]["vcpus"] == 4
    bad = admin.post("/v1/hosts", json={"name": "h2", "segment": "s",
                                        "capacity": {"vcpus": "4"}})
    assert bad.status_code == 422


def test_method_not_allowed_lists_every_method_of_the_path(admin: TestClient) -> None:
    got = admin.request("OPTIONS", "/v1/hosts")
    assert got.status_code == 405
    assert got.headers["allow"] == "GET, POST"
    got = admin.request("PUT", "/v1/hosts/h1")
    assert got.headers["allow"] == "DELETE, GET, PATCH"


@pytest.mark.parametrize(("path", "resource"), [
    ("/v1/segments", query.SEGMENTS), ("/v1/hosts", query.HOSTS),
    ("/v1/instances", query.INSTANCES), ("/v1/policies", query.POLICIES),
    ("/v1/jobs", query.JOBS),
])
def test_declared_sort_fields_are_the_stores(spec: dict[str, Any], path: str,
                                             resource: query.Resource) -> None:
    params = {p["name"]: p["schema"] for p in spec["paths"][path]["get"]["parameters"]}
    assert params["sort"]["pattern"] == f"^({'|'.join(resource.sorts)})$"
