"""List endpoints: paging with limit/marker, filters, sorting, and their
errors as 422 problems naming the query field."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from vmha.api.context import Liveness
from vmha.api.schemas import HostOut
from vmha.domain.model import Capacity, Host, HostState


def _walk(client: TestClient, path: str, **params: object) -> tuple[list[str], int]:
    """Follow next_marker to the end; return keys and the number of pages."""
    keys: list[str] = []
    pages = 0
    marker = None
    while True:
        query = {**params, **({"marker": marker} if marker else {})}
        body = client.get(path, params=query).json()
        pages += 1
        keys += [item.get("id") or item["name"] for item in body["items"]]
        marker = body["next_marker"]
        if marker is None:
            return keys, pages


def test_pages_cover_everything_once(admin: TestClient) -> None:
    admin.post("/v1/segments", json={"name": "s"})
    names = [f"h{i:02d}" for i in range(7)]
    for name in reversed(names):
        assert admin.post("/v1/hosts", json={"name": name, "segment": "s"}).status_code == 201
    keys, pages = _walk(admin, "/v1/hosts", limit=3)
    assert (keys, pages) == (names, 3)
    keys, _ = _walk(admin, "/v1/hosts", limit=3, desc=True)
    assert keys == list(reversed(names))
    first = admin.get("/v1/hosts", params={"limit": 7}).json()
    assert first["next_marker"] is None and len(first["items"]) == 7


def test_a_listed_host_is_what_its_own_resource_shows(admin: TestClient) -> None:
    """The host list writes its JSON itself (HostOut.plain, for pages of
    1,000 hosts); GET /v1/hosts/{name} goes through the response model."""
    admin.post("/v1/segments", json={"name": "s"})
    body = {"name": "h1", "segment": "s", "address": "198.18.0.11", "reserved": True,
            "capacity": {"vcpus": 8, "ram_mb": 4096, "disk_gb": 40}, "bmc": "bmc-h1",
            "fence_levels": [["ipmi"], ["redfish", "agent_watchdog"]]}
    assert admin.post("/v1/hosts", json=body).status_code == 201
    admin.post("/v1/hosts", json={"name": "h2", "segment": "s"})
    page = admin.get("/v1/hosts", params={"limit": 1})
    assert page.headers["content-type"] == "application/json"
    assert page.json() == {"items": [admin.get("/v1/hosts/h1").json()], "next_marker": "h1"}


@pytest.mark.parametrize("live", [None, Liveness(heartbeat_age_s=None, phi=0.0),
                                  Liveness(heartbeat_age_s=2.5, phi=7.25)])
def test_plain_host_is_the_response_model_dumped(live: Liveness | None) -> None:
    host = Host(name="h1", segment="s", address="a", state=HostState.SUSPECT,
                capacity=Capacity(2, 512, 10), reserved=True, maintenance=True, bmc="b",
                fence_levels=(("ipmi",), ("redfish", "agent_watchdog")),
                state_reason="no heartbeat for 2.5 s", state_since=12.5, version=3)
    assert HostOut.plain(host, live) == HostOut.of(host, live).model_dump(mode="json")


def test_filters(seeded: TestClient) -> None:
    def ids(**params: str) -> list[str]:
        return [i["id"] for i in seeded.get("/v1/instances", params=params).json()["items"]]

    assert ids(project="p1") == ["a1", "a2"]
    assert ids(host="h3") == ["b1"]
    assert ids(segment="seg-a") == ["a1", "a2"]
    assert ids(state="stopped") == []
    hosts = seeded.get("/v1/hosts", params={"segment": "seg-b"}).json()["items"]
    assert [h["name"] for h in hosts] == ["h3"]
    segments = seeded.get("/v1/segments", params={"enabled": "true"}).json()["items"]
    assert [s["name"] for s in segments] == ["seg-a", "seg-b"]


def test_sort_by_other_field(seeded: TestClient) -> None:
    seeded.patch("/v1/instances/a1", json={"project": "p9"})
    items = seeded.get("/v1/instances", params={"sort": "project", "desc": "true"}).json()
    assert [i["project"] for i in items["items"]] == ["p9", "p2", "p1"]


def test_query_errors_name_the_field(seeded: TestClient) -> None:
    cases = (
        ({"sort": "address"}, "query.sort"),
        ({"limit": 0}, "query.limit"),
        ({"limit": 51}, "query.limit"),  # max_page_size is 50 in these tests
        ({"marker": "zz"}, "query.marker"),
        ({"state": "exploded"}, "query.state"),
    )
    for params, field in cases:
        refused = seeded.get("/v1/hosts", params=params)
        assert refused.status_code == 422, (params, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
        body = refused.json()
        assert body["errors"][0]["field"] == field
        assert body["detail"].startswith(field)
