"""Secrets at rest (issue 11, item 3): webhook secrets, agents' heartbeat
secrets and API tokens, and decision tokens are sealed in the SQL store
with the service's key; the API (project tokens included) still gets them
back where it should, and never in a URL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apikit import running_engine
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_api_actions_decisions import ManualClock

from vmha.adapters.fencing.secrets import SecretBox, generate_key
from vmha.adapters.store import open_store
from vmha.adapters.store.sql import SqlStore
from vmha.adapters.system import SequentialIds
from vmha.api import create_app
from vmha.config import Settings
from vmha.controller.inbox import Inbox
from vmha.domain.agents import AgentRecord
from vmha.domain.commands import InstanceEvent
from vmha.domain.model import Host, Segment
from vmha.errors import ConfigError

TOKENS = {"admin": "tok-admin", "project:p1": "tok-p1", "agent": "tok-agent"}
WEBHOOK_SECRET = "p1-webhook-secret-0123456789"
AGENT_API_TOKEN = "agent-api-token-0123456789"


def on_disk(db: Path) -> bytes:
    """Everything SQLite keeps for this database (the file and its WAL)."""
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[FastAPI, Inbox, SqlStore, Path]]:
    db = tmp_path / "vmha.db"
    store = open_store(f"sqlite:///{db}", migrate=True, box=SecretBox(generate_key()))
    settings = Settings.model_validate({
        "api": {"tokens": [{"token": t, "role": r} for r, t in TOKENS.items()]},
        "events": {"allow_private_destinations": True}})
    ids, clock = SequentialIds("job"), ManualClock()
    app = create_app(settings, store, clock, ids)
    with running_engine(store, clock) as inbox:  # type: ignore[arg-type]
        app.state.vmha.inbox = inbox
        yield app, inbox, store, db
    store.close()


def client(app: FastAPI, role: str) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {TOKENS[role]}"},
                      raise_server_exceptions=False)


def test_secrets_are_sealed_on_disk_and_clear_through_the_api(world: Any) -> None:
    app, inbox, store, db = world
    with client(app, "admin") as admin, client(app, "project:p1") as p1, \
            client(app, "agent") as agent:
        admin.post("/v1/segments", json={"name": "s1"}).raise_for_status()
        registered = agent.post("/v1/agents/register", json={
            "host": "h1", "segment": "s1", "api": {"url": "http://198.18.0.11:8792",
                                                  "token": AGENT_API_TOKEN}})
        assert registered.status_code == 201, registered.text
        heartbeat_secret = registered.json()["secret"]
        batch = agent.post("/v1/agents/register-batch", json={"agents": [
            {"host": "h2", "segment": "s1", "api": {"url": "http://198.18.0.12:8792",
                                                    "token": AGENT_API_TOKEN + "2"}}]})
        assert batch.status_code == 200, batch.text
        batch_secret = batch.json()["agents"][0]["secret"]
        sub = p1.post("/v1/subscriptions", json={
            "url": "http://127.0.0.1:9/hook", "event_types": ["decision.*"],
            "secret": WEBHOOK_SECRET})
        assert sub.status_code == 201, sub.text
        p1.post("/v1/instances", json={"id": "a1", "name": "vm",
                                       "policy": {"guest": "custom"}}).raise_for_status()
        admin.patch("/v1/instances/a1", json={"host": "h1"}).raise_for_status()
        admin.portal.call(inbox.ask, InstanceEvent("a1", "crashed", "test"))  # type: ignore[union-attr]
        events = p1.get("/v1/events", params={"type": "decision.requested"}).json()["items"]
        token = events[-1]["payload"]["token"]  # the tenant gets its token in clear
        secret_part = token.split(".", 1)[1]
        # The store's callers see clear values ...
        assert store.get_subscription(sub.json()["id"]).secret == WEBHOOK_SECRET
        assert store.get_agent("h1").api_token == AGENT_API_TOKEN
        assert store.get_agent("h1").secret == heartbeat_secret
        assert store.get_agent("h2").secret == batch_secret
        # ... the disk does not.
        raw = on_disk(db)
        for secret in (WEBHOOK_SECRET, AGENT_API_TOKEN, heartbeat_secret, secret_part,
                       batch_secret, AGENT_API_TOKEN + "2"):
            assert secret.encode() not in raw, secret
        assert b"sealed:" in raw
        # The token is answered in the body, never in a URL.
        ok = p1.post("/v1/decisions", json={"token": token, "action": "ignore"})
        assert ok.status_code == 202, ok.text
        assert ok.json()["decision"]["state"] == "done"


def test_the_store_refuses_another_key_and_seals_what_was_clear(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'vmha.db'}"
    clear = open_store(url, migrate=True)  # no key: as before migration 0006
    clear.create_segment(Segment("s1"))
    clear.create_host(Host(name="h1", segment="s1"))
    clear.save_agent(AgentRecord(host="h1", secret="legacy-heartbeat-secret-0123",
                                 api_url="", api_token="legacy-api-token-0123"))
    clear.close()
    assert b"legacy-api-token-0123" in on_disk(tmp_path / "vmha.db")
    key = generate_key()
    sealed = open_store(url, migrate=True, box=SecretBox(key))
    assert sealed.get_agent("h1").api_token == "legacy-api-token-0123"
    sealed.close()
    raw = on_disk(tmp_path / "vmha.db")
    assert b"legacy-api-token-0123" not in raw and b"legacy-heartbeat-secret" not in raw
    with pytest.raises(ConfigError, match="encrypted with another key"):
        open_store(url, migrate=True, box=SecretBox(generate_key()))
    keyless = open_store(url)
    with pytest.raises(ConfigError, match="no key is configured"):
        keyless.get_agent("h1")
    keyless.close()
