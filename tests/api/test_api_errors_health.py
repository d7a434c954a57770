"""problem+json for every error; /healthz and /readyz."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from apikit import StepClock, make_settings
from fastapi import FastAPI
from fastapi.testclient import TestClient

from vmha.adapters.store.fake import FakeStore
from vmha.adapters.system import SequentialIds
from vmha.api import create_app
from vmha.domain.model import Host
from vmha.errors import StoreUnavailable
from vmha.ports import ListQuery, Page, Store

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


def _is_problem(response: object, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert set(body) >= PROBLEM_KEYS
    assert body["status"] == status
    return body


def test_unknown_route_and_method(admin: TestClient) -> None:
    body = _is_problem(admin.get("/v1/nothing-here"), 404)
    assert body["instance"] == "/v1/nothing-here"
    assert "no such endpoint" in str(body["detail"])
    body = _is_problem(admin.put("/v1/hosts"), 405)
    assert "PUT is not allowed" in str(body["detail"])


def test_body_validation_names_field_path(admin: TestClient) -> None:
    bad = admin.post("/v1/policies", json={"name": "p", "policy": {"priority": "high"}})
    body = _is_problem(bad, 422)
    assert body["errors"][0]["field"] == "body.policy.priority"  # type: ignore[index]
    assert str(body["detail"]).startswith("body.policy.priority: ")

    declared = admin.post("/v1/policies", json={"name": "p", "policy": {"window_s": 0}})
    body = _is_problem(declared, 422)  # a range /openapi.json states
    assert body["errors"][0]["field"] == "body.policy.window_s"  # type: ignore[index]
    domain = admin.post("/v1/policies", json={"name": "p", "policy": {"probes": [
        {"kind": "tcp", "target": "80", "interval_s": 1, "timeout_s": 2}]}})
    body = _is_problem(domain, 422)  # two fields together: the domain's words
    assert body["errors"] == [{"field": "body.policy.probes[0].timeout_s",
                               "message": "must be positive and at most interval_s"}]

    probe = admin.post("/v1/policies", json={
        "name": "p", "policy": {"probes": [{"kind": "tcp", "target": "99999"}]}})
    body = _is_problem(probe, 422)
    assert body["errors"][0]["field"] == "body.policy.probes[0].target"  # type: ignore[index]

    name = admin.post("/v1/segments", json={"name": "bad name!"})
    body = _is_problem(name, 422)
    assert body["errors"][0]["field"] == "body.name"  # type: ignore[index]

    missing = admin.post("/v1/hosts", json={"name": "h"})
    body = _is_problem(missing, 422)
    assert body["errors"][0]["field"] == "body.segment"  # type: ignore[index]

    not_json = admin.post("/v1/segments", content=b"{",
                          headers={"content-type": "application/json"})
    _is_problem(not_json, 422)


class _BrokenStore(FakeStore):
    def list_hosts(self, query: ListQuery) -> Page[Host]:
        raise RuntimeError("secret internal detail: password=hunter2")


class _DownStore(FakeStore):
    def ping(self) -> None:
        raise StoreUnavailable("database at db:5432 does not answer")


class _OldSchemaStore(FakeStore):
    def schema_current(self) -> bool:
        return False


AppOn = Callable[[Store], FastAPI]


def _client(app: FastAPI, token: str | None = "tok-admin") -> TestClient:  # noqa: S107
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return TestClient(app, headers=headers, raise_server_exceptions=False)


def test_unexpected_error_is_generic_500_and_logged(
    caplog: pytest.LogCaptureFixture, app_on: AppOn
) -> None:
    broken = _client(app_on(_BrokenStore()))
    with caplog.at_level(logging.ERROR, logger="vmha.api"), broken as client:
        response = client.get("/v1/hosts")
    body = _is_problem(response, 500)
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert "controller's log" in str(body["detail"])
    assert any("hunter2" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_healthz_needs_no_token(app_on: AppOn) -> None:
    with _client(app_on(FakeStore()), token=None) as client:
        response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz(app_on: AppOn) -> None:
    with _client(app_on(FakeStore()), token=None) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
    with _client(app_on(_DownStore()), token=None) as client:
        body = _is_problem(client.get("/readyz"), 503)
    assert body["detail"] == "database at db:5432 does not answer"
    with _client(app_on(_OldSchemaStore()), token=None) as client:
        body = _is_problem(client.get("/readyz"), 503)
    assert "vmha db upgrade" in str(body["detail"])


def test_docs_and_openapi_without_token(app_on: AppOn) -> None:
    with _client(app_on(FakeStore()), token=None) as client:
        spec = client.get("/openapi.json")
        docs = client.get("/docs")
    assert spec.status_code == 200 and "/v1/hosts/{name}/maintenance" in spec.json()["paths"]
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_nul_characters_are_refused(admin: TestClient) -> None:
    """PostgreSQL text cannot hold NUL: refuse it at the door, naming where."""
    body = _is_problem(admin.post("/v1/segments", json={"name": "s", "description": "a\x00"}), 422)
    assert body["errors"] == [{"field": "body.description",
                               "message": "must not contain NUL characters"}]
    body = _is_problem(admin.get("/v1/hosts", params={"segment": "a\x00"}), 422)
    assert body["errors"][0]["field"] == "query.segment"  # type: ignore[index]
    body = _is_problem(admin.get("/v1/hosts/a%00b"), 422)
    assert body["errors"][0]["field"] == "path"  # type: ignore[index]


def test_operator_fencing_needs_the_running_engine(bare_app: FastAPI) -> None:
    """A bare API app (no engine in this process) says so with a 503."""
    seeded = TestClient(bare_app, headers={"Authorization": "Bearer tok-admin"},
                        raise_server_exceptions=False)
    for response in (seeded.get("/v1/hosts/h1/power-status"),
                     seeded.post("/v1/hosts/h1/fence-ack"),
                     seeded.post("/v1/hosts/h1/maintenance", json={"enabled": True})):
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "engine is not running" in response.json()["detail"]


def test_bodies_over_the_limit_are_413_and_tokens_are_checked_first(
    store: Store,
) -> None:
    app = create_app(make_settings(max_body_bytes=65536), store, StepClock(), SequentialIds())
    big = b'{"name": "s1"' + b" " * 70000 + b"}"
    json_type = {"Content-Type": "application/json"}
    with TestClient(app, headers={"Authorization": "Bearer tok-admin"}) as admin:
        body = _is_problem(admin.post("/v1/segments", content=big, headers=json_type), 413)
        assert "65536 bytes" in str(body["detail"])
        chunked = admin.post("/v1/segments", content=iter([big[:40000], big[40000:]]),
                             headers=json_type)
        _is_problem(chunked, 413)
        fits = admin.post("/v1/segments", content=big[:60000].rstrip() + b"}",
                          headers=json_type)
        assert fits.status_code == 201, fits.text
    with TestClient(app) as anonymous:
        refused = anonymous.post("/v1/segments", content=big, headers=json_type)
        _is_problem(refused, 401)
        assert refused.headers["www-authenticate"] == "Bearer"
        _is_problem(anonymous.get("/v1/nothing-here"), 401)  # every /v1 path needs a token


def test_an_overloaded_controller_is_not_ready_and_says_why(
    app: FastAPI, client_for: Callable[[str | None], TestClient]
) -> None:
    viewer = client_for("viewer")
    assert _is_problem(viewer.get("/v1/controller"), 503)["detail"].startswith(
        "the controller's engine is not running")
    status = {"hosts_watched": 3, "overloaded": False, "overload_reason": "",
              "intake_lag_s": 0.01, "tick_lag_s": 0.0, "heartbeats_applied": 12,
              "heartbeats": {"accepted": 12, "kernel_drops": 0}}
    app.state.vmha.controller_status = lambda: status
    assert client_for(None).get("/readyz").json() == {"status": "ready"}
    assert viewer.get("/v1/controller").json() == status
    assert client_for("agent").get("/v1/controller").status_code == 403
    status.update(overloaded=True, overload_reason="heartbeat intake 2.5 s behind")
    body = _is_problem(client_for(None).get("/readyz"), 503)
    assert "overloaded: heartbeat intake 2.5 s behind" in body["detail"]
