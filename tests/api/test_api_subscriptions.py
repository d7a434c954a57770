"""`/v1/subscriptions`: CRUD, write-only secret, SSRF refusals, role and
project rules, deliveries and redelivery of dead letters."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from vmha.adapters.system import SequentialIds
from vmha.api import create_app
from vmha.config import EventsConfig
from vmha.domain.model import Event
from vmha.ports import Delivery, DeliveryStatus, Store

BODY = {"url": "http://127.0.0.1:9/hook", "event_types": ["instance.*", "host.failed"],
        "secret": "0123456789abcdef"}


@pytest.fixture
def client(app: FastAPI, store: Store) -> Iterator[dict[str, TestClient]]:
    """Clients per role on an app like conftest's `app`, but allowing
    private (loopback) destinations."""
    ctx = app.state.vmha
    settings = ctx.settings.model_copy(
        update={"events": EventsConfig(allow_private_destinations=True)}
    )
    private_ok = create_app(settings, store, ctx.clock, SequentialIds("sub"))
    clients = {t.role: TestClient(private_ok, headers={"Authorization": f"Bearer {t.secret()}"},
                                  raise_server_exceptions=False)
               for t in settings.api.tokens}
    yield clients
    for c in clients.values():
        c.close()


def test_create_get_list_delete_with_a_write_only_secret(
    client: dict[str, TestClient], store: Store
) -> None:
    stored = store.append_events([Event("host.up", "h1", 1.0)])
    admin = client["admin"]
    created = admin.post("/v1/subscriptions", json=BODY)
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["secret"] == "***" and "0123456789abcdef" not in created.text
    assert sub["cursor"] == stored[-1].id  # starts with what happens from now on
    assert sub["project"] is None and sub["event_types"] == BODY["event_types"]
    assert created.headers["location"] == f"/v1/subscriptions/{sub['id']}"
    assert store.get_subscription(sub["id"]).secret == "0123456789abcdef"
    assert admin.get(f"/v1/subscriptions/{sub['id']}").json() == sub
    assert [s["id"] for s in admin.get("/v1/subscriptions").json()["items"]] == [sub["id"]]
    assert admin.delete(f"/v1/subscriptions/{sub['id']}").status_code == 204
    assert admin.get(f"/v1/subscriptions/{sub['id']}").status_code == 404


@pytest.mark.parametrize(("url", "why"), [
    ("http://127.0.0.1:8080/hook", "loopback"),
    ("http://10.0.0.7/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://user:pw@example.com/hook", "credentials"),
    ("ftp://example.com/hook", "scheme"),
])
def test_unsafe_destinations_are_422_naming_the_url(admin: TestClient, url: str,
                                                    why: str) -> None:
    # `admin` is on the default app: private destinations not allowed.
    response = admin.post("/v1/subscriptions", json={**BODY, "url": url})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"][0]["field"] == "body.url"
    assert why in problem["detail"]


@pytest.mark.parametrize("url", [
    "http://[::127.0.0.1]/hook", "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
    "http://[2002:a9fe:a9fe::1]/", "http://[64:ff9b:1::a9fe:a9fe]/",
])
def test_a_tenant_cannot_reach_inner_addresses_through_ipv6_forms(
    client: dict[str, TestClient], client_for: Callable[[str | None], TestClient], url: str,
) -> None:
    # Default app (private refused) and an app that allows private
    # destinations: metadata and unknowable embeddings are refused on both.
    response = client_for("project:p1").post("/v1/subscriptions", json={**BODY, "url": url})
    assert response.status_code == 422, response.text
    if "127.0.0.1" not in url:
        response = client["project:p1"].post("/v1/subscriptions", json={**BODY, "url": url})
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "body.url"


def test_bad_bodies_are_422(client: dict[str, TestClient]) -> None:
    admin = client["admin"]
    for bad in ({**BODY, "secret": "short"}, {**BODY, "event_types": []},
                {**BODY, "event_types": ["a*b"]}, {**BODY, "extra": 1}):
        assert admin.post("/v1/subscriptions", json=bad).status_code == 422


def test_roles_and_project_isolation(client: dict[str, TestClient]) -> None:
    assert client["viewer"].post("/v1/subscriptions", json=BODY).status_code == 403
    assert client["viewer"].get("/v1/subscriptions").status_code == 403
    assert client["operator"].post("/v1/subscriptions", json=BODY).status_code == 201
    p1 = client["project:p1"]
    assert p1.post("/v1/subscriptions", json={**BODY, "project": "p2"}).status_code == 403
    mine = p1.post("/v1/subscriptions", json=BODY).json()
    assert mine["project"] == "p1"  # forced
    p2 = client["project:p2"]
    assert p2.get(f"/v1/subscriptions/{mine['id']}").status_code == 404
    assert p2.delete(f"/v1/subscriptions/{mine['id']}").status_code == 404
    assert p2.get("/v1/subscriptions").json()["items"] == []
    assert [s["id"] for s in p1.get("/v1/subscriptions").json()["items"]] == [mine["id"]]
    assert len(client["admin"].get("/v1/subscriptions").json()["items"]) == 2


def test_deliveries_show_dead_letters_and_redeliver_queues_them(
    client: dict[str, TestClient], store: Store
) -> None:
    admin = client["admin"]
    sid = admin.post("/v1/subscriptions", json=BODY).json()["id"]
    store.save_deliveries(sid, [
        Delivery(sid, 3, DeliveryStatus.DEAD, 8, "HTTP 503: busy", 5.0),
        Delivery(sid, 4, DeliveryStatus.DELIVERED, 1, "", 6.0),
    ], cursor=4)
    listing = admin.get(f"/v1/subscriptions/{sid}/deliveries").json()
    assert listing["cursor"] == 4
    assert [(d["event_id"], d["status"], d["dead_letter"]) for d in listing["items"]] == [
        (4, "delivered", False), (3, "dead", True)]
    dead_only = admin.get(f"/v1/subscriptions/{sid}/deliveries?status=dead").json()
    assert [d["event_id"] for d in dead_only["items"]] == [3]
    base = f"/v1/subscriptions/{sid}/deliveries"
    queued = admin.post(f"{base}/3/redeliver")
    assert queued.status_code == 202 and queued.json()["status"] == "redeliver"
    assert store.list_deliveries(sid, DeliveryStatus.REDELIVER)[0].event_id == 3
    assert admin.post(f"{base}/4/redeliver").status_code == 409
    assert admin.post(f"{base}/99/redeliver").status_code == 404
    assert client["project:p1"].get(base).status_code == 404  # staff's subscription
