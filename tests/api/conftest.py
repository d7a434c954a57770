"""API test fixtures: the app on a real SQLite store, and clients per role.

Migrating a SQLite file takes ~0.4 s, so one migrated file is made per
session and copied for each test (a fresh, empty, current database).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from apikit import TOKENS, StepClock, make_settings, running_engine
from fastapi import FastAPI
from fastapi.testclient import TestClient

from vmha.adapters.store import open_store
from vmha.adapters.system import SequentialIds
from vmha.api import create_app
from vmha.ports import Store


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "vmha.db"
    open_store(f"sqlite:///{path}", migrate=True).close()
    return path


@pytest.fixture
def store(template_db: Path, tmp_path: Path) -> Iterator[Store]:
    path = tmp_path / "vmha.db"
    shutil.copyfile(template_db, path)
    sql = open_store(f"sqlite:///{path}", migrate=True)
    yield sql
    sql.close()


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
def app(store: Store, clock: StepClock) -> Iterator[FastAPI]:
    """The API with a running engine behind its inbox (as in `vmha serve`)."""
    app = create_app(make_settings(max_page_size=50), store, clock, SequentialIds("vm"))
    with running_engine(store, clock) as inbox:
        app.state.vmha.inbox = inbox
        yield app


@pytest.fixture
def bare_app(store: Store, clock: StepClock) -> FastAPI:
    """The API alone: no engine in this process (its engine requests are 503)."""
    return create_app(make_settings(max_page_size=50), store, clock, SequentialIds("vm"))


@pytest.fixture
def app_on() -> Callable[[Store], FastAPI]:
    """Build an app on another store (e.g. a failing one)."""
    return lambda store: create_app(make_settings(), store, StepClock(), SequentialIds())


ClientFor = Callable[[str | None], TestClient]


@pytest.fixture
def client_for(app: FastAPI) -> Iterator[ClientFor]:
    clients: list[TestClient] = []

    def make(role: str | None) -> TestClient:
        headers = {"Authorization": f"Bearer {TOKENS[role]}"} if role else {}
        client = TestClient(app, headers=headers, raise_server_exceptions=False)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def admin(client_for: ClientFor) -> TestClient:
    return client_for("admin")


@pytest.fixture
def seeded(admin: TestClient) -> TestClient:
    """Two segments, three hosts, two policies, instances in p1 and p2;
    returns the admin client."""
    body: Mapping[str, object]
    for body in (
        {"name": "gold", "description": "critical", "policy": {"priority": 900}},
        {"name": "bronze", "policy": {"host": "notify", "priority": 100}},
    ):
        assert admin.post("/v1/policies", json=body).status_code == 201
    for name, policy in (("seg-a", "gold"), ("seg-b", None)):
        body = {"name": name, "default_policy": policy}
        assert admin.post("/v1/segments", json=body).status_code == 201
    for name, segment in (("h1", "seg-a"), ("h2", "seg-a"), ("h3", "seg-b")):
        body = {"name": name, "segment": segment, "address": f"10.0.0.{name[1]}",
                "capacity": {"vcpus": 8, "ram_mb": 16384, "disk_gb": 100}}
        assert admin.post("/v1/hosts", json=body).status_code == 201
    for iid, host, project in (("a1", "h1", "p1"), ("a2", "h2", "p1"), ("b1", "h3", "p2")):
        body = {"id": iid, "name": f"vm-{iid}", "host": host, "project": project}
        assert admin.post("/v1/instances", json=body).status_code == 201
    return admin
