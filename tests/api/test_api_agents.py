"""Agent registration: idempotent secrets, host creation, roles."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

ClientFor = Callable[[str | None], TestClient]

BODY = {
    "host": "host1",
    "segment": "lab",
    "address": "198.18.0.11",
    "capacity": {"vcpus": 4, "ram_mb": 8192, "disk_gb": 40},
    "version": "0.1.0",
    "boot_id": "b0",
    "api": {"url": "http://198.18.0.11:8792", "token": "agent-api-token"},
}


def test_register_creates_host_then_keeps_the_same_secret(
    admin: TestClient, client_for: ClientFor
) -> None:
    admin.post("/v1/segments", json={"name": "lab"}).raise_for_status()
    agent = client_for("agent")
    first = agent.post("/v1/agents/register", json=BODY)
    assert first.status_code == 201, first.text
    assert first.json()["created_host"] is True
    secret = first.json()["secret"]
    assert len(secret) == 64

    moved = {**BODY, "address": "198.18.0.99", "boot_id": "b1",
             "capacity": {"vcpus": 8, "ram_mb": 8192, "disk_gb": 40}}
    again = agent.post("/v1/agents/register", json=moved)
    assert again.status_code == 200
    assert again.json() == {"host": "host1", "secret": secret, "created_host": False}
    host = admin.get("/v1/hosts/host1").json()
    assert host["address"] == "198.18.0.99" and host["capacity"]["vcpus"] == 8


def test_register_needs_an_existing_segment(admin: TestClient, client_for: ClientFor) -> None:
    response = client_for("agent").post("/v1/agents/register", json=BODY)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "segment" in response.json()["detail"] and "lab" in response.json()["detail"]


def test_only_admin_and_agent_may_register(admin: TestClient, client_for: ClientFor) -> None:
    admin.post("/v1/segments", json={"name": "lab"}).raise_for_status()
    for role in ("operator", "viewer", "project:p1"):
        assert client_for(role).post("/v1/agents/register", json=BODY).status_code == 403
    assert client_for(None).post("/v1/agents/register", json=BODY).status_code == 401
    assert client_for("agent").get("/v1/hosts").status_code == 403


def test_bad_registration_names_the_field(admin: TestClient, client_for: ClientFor) -> None:
    admin.post("/v1/segments", json={"name": "lab"}).raise_for_status()
    bad = {**BODY, "api": {"url": "ftp://x", "token": "t"}}
    response = client_for("agent").post("/v1/agents/register", json=bad)
    assert response.status_code == 422
    assert "api.url" in response.json()["detail"]


def test_register_a_batch_keeps_secrets_and_refuses_a_missing_segment(
    admin: TestClient, client_for: ClientFor
) -> None:
    admin.post("/v1/segments", json={"name": "lab"}).raise_for_status()
    agent = client_for("agent")
    secret = agent.post("/v1/agents/register", json=BODY).json()["secret"]
    batch = [{**BODY, "host": f"host{i}", "address": f"198.18.0.{10 + i}"} for i in (1, 2, 3)]
    answer = agent.post("/v1/agents/register-batch", json={"agents": batch})
    assert answer.status_code == 200, answer.text
    got = answer.json()["agents"]
    assert [(a["host"], a["created_host"]) for a in got] == [
        ("host1", False), ("host2", True), ("host3", True)]
    assert got[0]["secret"] == secret and len({a["secret"] for a in got}) == 3
    again = agent.post("/v1/agents/register", json={**BODY, "host": "host3"}).json()
    assert again["secret"] == got[2]["secret"]
    assert admin.get("/v1/hosts/host2").json()["address"] == "198.18.0.12"

    missing = agent.post("/v1/agents/register-batch",
                         json={"agents": [{**BODY, "host": "host9", "segment": "nowhere"}]})
    assert missing.status_code == 422 and "nowhere" in missing.json()["detail"]
    assert admin.get("/v1/hosts/host9").status_code == 404
    bad = [{**BODY, "host": "host8", "api": {"url": "ftp://x", "token": "t"}}]
    response = agent.post("/v1/agents/register-batch", json={"agents": bad})
    assert response.status_code == 422 and "body.agents.0.api.url" in response.json()["detail"]
    too_many = {"agents": [{**BODY, "host": f"h{i}"} for i in range(1001)]}
    assert agent.post("/v1/agents/register-batch", json=too_many).status_code == 422
    assert client_for("viewer").post("/v1/agents/register-batch",
                                     json={"agents": []}).status_code == 403
