"""Host pages from the running engine's cache (vmha.controller.hostview,
issue 18), as `vmha serve` answers them: the same pages as the store's for
every sort, direction, filter, page size and marker, without a store query;
the API's own host writes and the engine's state changes listed at once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from apikit import TOKENS, StepClock, engine_thread, make_settings
from fastapi import FastAPI
from fastapi.testclient import TestClient

from vmha.adapters.system import SequentialIds
from vmha.api import create_app
from vmha.controller.hostview import EngineHostView
from vmha.domain.model import HostState
from vmha.ports import ListQuery, Page, Store

ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}
AGENT = {"Authorization": f"Bearer {TOKENS['agent']}"}
NAMES = ["h-10", "h-9", "H1", "h_2", "h.3", "a0", "zz", "h00", "h0", "Z-1", "m1", "m2"]
STATES = [HostState.UP, HostState.SUSPECT, HostState.FAILED, HostState.MAINTENANCE]


@pytest.fixture
def view_app(store: Store, clock: StepClock) -> Iterator[tuple[FastAPI, EngineHostView]]:
    """The API with a running engine whose hosts it lists (as `vmha serve`)."""
    app = create_app(make_settings(max_page_size=50), store, clock, SequentialIds("vm"))
    with engine_thread(store, clock) as (engine, loop, inbox):
        view = EngineHostView(store, lambda: engine.cluster)
        view.loop = loop
        app.state.vmha.inbox = inbox
        app.state.vmha.hosts = view
        yield app, view


@pytest.fixture
def engine_admin(view_app: tuple[FastAPI, EngineHostView]) -> Iterator[TestClient]:
    with TestClient(view_app[0], headers=ADMIN, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def store_admin(bare_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(bare_app, headers=ADMIN, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def no_store_pages(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host page read from the store fails the test."""
    def refused(query: ListQuery) -> Page[Any]:
        raise AssertionError(f"a host page was read from the store: {query}")

    monkeypatch.setattr(store, "list_hosts", refused)


def walk(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    pages, marker = [], None
    while True:
        answer = client.get("/v1/hosts", params={**params, **({"marker": marker} if marker
                                                                else {})})
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        marker = pages[-1]["next_marker"]
        if marker is None:
            return pages


def seed(admin: TestClient, store: Store, view: EngineHostView) -> None:
    """Hosts in three segments and several states (states written to the
    store as the engine would, then handed to the engine's cache)."""
    for segment in ("seg-b", "seg-a", "Seg-c"):
        assert admin.post("/v1/segments", json={"name": segment}).status_code == 201
    for i, name in enumerate(NAMES):
        body = {"name": name, "segment": ("seg-b", "seg-a", "Seg-c")[i % 3]}
        assert admin.post("/v1/hosts", json=body).status_code == 201
        if i % 4:
            host = store.get_host(name)
            store.update_host(replace(host, state=STATES[i % 4]))
    view.written(NAMES)


def test_engine_pages_are_the_stores_pages(
    view_app: tuple[FastAPI, EngineHostView], engine_admin: TestClient,
    store_admin: TestClient, store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed(engine_admin, store, view_app[1])
    queries: list[dict[str, Any]] = []
    for sort in (None, "name", "state", "segment"):
        for desc in (False, True):
            for filters in ({}, {"segment": "seg-a"}, {"state": "suspect"},
                            {"segment": "seg-b", "state": "up"}, {"segment": "none"}):
                for limit in (1, 5, 50):
                    queries.append({**filters, "limit": limit, "desc": desc,
                                    **({"sort": sort} if sort else {})})
    expected = [walk(store_admin, **q) for q in queries]
    assert len(expected[0][0]["items"]) == 1 and len(expected[0]) == len(NAMES)
    bad = [{"marker": "gone"}, {"sort": "address"}, {"state": "asleep"}, {"limit": 51}]
    refusals = [store_admin.get("/v1/hosts", params=q) for q in bad]

    def refused(query: ListQuery) -> Page[Any]:
        raise AssertionError(f"a host page was read from the store: {query}")

    monkeypatch.setattr(store, "list_hosts", refused)
    assert [walk(engine_admin, **q) for q in queries] == expected
    for query, refusal in zip(bad, refusals, strict=True):
        answer = engine_admin.get("/v1/hosts", params=query)
        assert (answer.status_code, answer.json()) == (refusal.status_code, refusal.json())
    assert refusals[0].status_code == 422


@pytest.mark.usefixtures("no_store_pages")
def test_the_apis_own_host_writes_are_listed_at_once(
    view_app: tuple[FastAPI, EngineHostView], engine_admin: TestClient,
) -> None:
    admin, view = engine_admin, view_app[1]

    def listed() -> dict[str, dict[str, Any]]:
        return {h["name"]: h for page in walk(admin, limit=2) for h in page["items"]}

    assert admin.post("/v1/segments", json={"name": "s"}).status_code == 201
    assert admin.post("/v1/hosts", json={"name": "h1", "segment": "s"}).status_code == 201
    assert admin.post("/v1/hosts", json={"name": "h2", "segment": "s"}).status_code == 201
    assert list(listed()) == ["h1", "h2"]
    patched = admin.patch("/v1/hosts/h1", json={"address": "198.18.0.1"})
    assert patched.status_code == 200
    assert listed()["h1"]["address"] == "198.18.0.1"
    assert admin.get("/v1/hosts/h1").json() == patched.json()
    assert view.get("h1") is not None and view.get("h1").address == "198.18.0.1"  # type: ignore[union-attr]
    assert admin.delete("/v1/hosts/h2").status_code == 204
    assert list(listed()) == ["h1"] and admin.get("/v1/hosts/h2").status_code == 404
    with TestClient(view_app[0], headers=AGENT) as agent:
        one = {"host": "h3", "segment": "s", "address": "198.18.0.3"}
        assert agent.post("/v1/agents/register", json=one).status_code == 201
        batch = {"agents": [{"host": f"b{i}", "segment": "s", "address": "198.18.1.1"}
                            for i in range(3)]}
        assert agent.post("/v1/agents/register-batch", json=batch).status_code == 200
    assert list(listed()) == ["b0", "b1", "b2", "h1", "h3"]
    stale = admin.get("/v1/hosts", params={"marker": "h2"})
    assert stale.status_code == 422 and "h2" in stale.text


@pytest.mark.usefixtures("no_store_pages")
def test_the_engines_state_changes_are_listed_at_once(engine_admin: TestClient) -> None:
    admin = engine_admin
    assert admin.post("/v1/segments", json={"name": "s"}).status_code == 201
    assert admin.post("/v1/hosts", json={"name": "h1", "segment": "s"}).status_code == 201
    entered = admin.post("/v1/hosts/h1/maintenance", json={"enabled": True, "reason": "disk"})
    assert entered.status_code == 200 and entered.json()["state"] == "maintenance"
    page = admin.get("/v1/hosts", params={"state": "maintenance"}).json()
    assert [(h["name"], h["state"]) for h in page["items"]] == [("h1", "maintenance")]
