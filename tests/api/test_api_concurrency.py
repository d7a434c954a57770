"""One record, two writers: the API changes a host's configuration while the
engine changes its state (issue 13, optimistic concurrency).

Both run for real: the API on a SQLite store, the engine in its own thread
behind the inbox. A write made on an old copy is refused by the store
(record versions) and made again on a fresh one, so neither change is
lost, whichever writer comes second.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from apikit import StepClock, make_settings, running_engine
from fastapi import FastAPI
from fastapi.testclient import TestClient

from vmha.adapters.system import SequentialIds
from vmha.api import create_app
from vmha.controller.inbox import Inbox
from vmha.domain.commands import SetMaintenance
from vmha.domain.model import Host
from vmha.ports import Store

ADMIN = {"Authorization": "Bearer tok-admin"}


class EngineFirst:
    """The store, except that the API's next write of a host is preceded by
    `before()`: the engine changes the host after the API read it."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.before: Any = None

    def update_host(self, host: Host, events: Any = ()) -> Host:
        step, self.before = self.before, None
        if step is not None:
            step()
        return self._store.update_host(host, events)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def world(store: Store, clock: StepClock) -> Iterator[tuple[TestClient, Inbox, EngineFirst]]:
    racing = EngineFirst(store)
    app: FastAPI = create_app(make_settings(), racing, clock, SequentialIds("vm"))  # type: ignore[arg-type]
    with running_engine(store, clock) as inbox, TestClient(app, headers=ADMIN) as client:
        app.state.vmha.inbox = inbox
        client.post("/v1/segments", json={"name": "s1"}).raise_for_status()
        client.post("/v1/hosts", json={"name": "h1", "segment": "s1",
                                       "address": "198.18.0.11"}).raise_for_status()
        yield client, inbox, racing


def events(client: TestClient) -> list[str]:
    return [e["type"] for e in client.get("/v1/events", params={"type": "host.*"})
            .json()["items"]]


def test_the_engine_writing_after_the_api_keeps_the_api_change(world: Any) -> None:
    client, _inbox, _ = world
    on = client.post("/v1/hosts/h1/maintenance", json={"enabled": True})
    assert on.status_code == 200, on.text  # the engine now holds h1 in its cache
    patched = client.patch("/v1/hosts/h1", json={"address": "198.18.0.99"})
    assert patched.status_code == 200, patched.text
    off = client.post("/v1/hosts/h1/maintenance", json={"enabled": False})  # on its old copy
    assert off.status_code == 200, off.text
    host = client.get("/v1/hosts/h1").json()
    assert (host["address"], host["state"], host["maintenance"]) == ("198.18.0.99", "up", False)
    assert events(client) == ["host.maintenance_on", "host.maintenance_off"]


def test_the_api_writing_after_the_engine_keeps_the_engine_change(world: Any) -> None:
    client, inbox, racing = world
    racing.before = lambda: inbox.post(SetMaintenance("h1", True, "firmware", "otto")).result(10)
    patched = client.patch("/v1/hosts/h1", json={"address": "198.18.0.99"})
    assert patched.status_code == 200, patched.text
    host = client.get("/v1/hosts/h1").json()
    assert (host["address"], host["state"], host["maintenance"]) == (
        "198.18.0.99", "maintenance", True)
    assert events(client) == ["host.maintenance_on"]
