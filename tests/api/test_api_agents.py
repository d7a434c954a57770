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
