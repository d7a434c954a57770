"""Authentication (401), the role matrix (403) and project isolation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from vmha.domain.jobs import ActionData, DecisionData, HostRecoveryData, InstanceRecoveryData, Move
from vmha.domain.model import Event, Job, JobKind, JobState, SubjectKind
from vmha.ports import Store

ClientFor = Callable[[str | None], TestClient]
ROLES = ("viewer", "project:p2", "project:p1", "operator", "admin")
ALL = set(ROLES)
STAFF = {"admin", "operator", "viewer"}

# (method, path, body, roles allowed, roles answered 404 instead of 403).
# Written out by hand from docs/api.md, independently of vmha.api.auth.
MATRIX: list[tuple[str, str, dict[str, Any] | None, set[str], set[str]]] = [
    ("GET", "/v1/segments", None, STAFF, set()),
    ("GET", "/v1/segments/seg-a", None, STAFF, set()),
    ("POST", "/v1/segments", {"name": "new"}, {"admin"}, set()),
    ("PATCH", "/v1/segments/seg-a", {"description": "x"}, {"admin"}, set()),
    ("DELETE", "/v1/segments/seg-b", None, {"admin"}, set()),
    ("POST", "/v1/segments/seg-a/resume", None, {"admin", "operator"}, set()),
    ("GET", "/v1/hosts", None, STAFF, set()),
    ("GET", "/v1/hosts/h1", None, STAFF, set()),
    ("POST", "/v1/hosts", {"name": "h9", "segment": "seg-a"}, {"admin"}, set()),
    ("PATCH", "/v1/hosts/h1", {"address": "x"}, {"admin"}, set()),
    ("DELETE", "/v1/hosts/h3", None, {"admin"}, set()),
    ("POST", "/v1/hosts/h1/maintenance", {"enabled": True}, {"admin", "operator"}, set()),
    ("GET", "/v1/instances", None, ALL, set()),
    ("GET", "/v1/instances/a1", None, ALL - {"project:p2"}, {"project:p2"}),
    ("GET", "/v1/instances/a1/policy", None, ALL - {"project:p2"}, {"project:p2"}),
    ("POST", "/v1/instances", {"name": "n", "project": "p1"}, ALL - {"viewer", "project:p2"},
     set()),
    ("PATCH", "/v1/instances/a1", {"name": "n"}, {"admin", "operator", "project:p1"},
     {"project:p2"}),
    ("DELETE", "/v1/instances/a1", None, {"admin", "operator", "project:p1"}, {"project:p2"}),
    ("GET", "/v1/policies", None, ALL, set()),
    ("GET", "/v1/policies/gold", None, ALL, set()),
    ("POST", "/v1/policies", {"name": "new"}, {"admin"}, set()),
    ("PATCH", "/v1/policies/gold", {"description": "x"}, {"admin"}, set()),
    ("DELETE", "/v1/policies/bronze", None, {"admin"}, set()),
    ("GET", "/v1/events", None, ALL, set()),
    ("GET", "/v1/jobs", None, ALL, set()),
    ("GET", "/v1/jobs/act-a1", None, ALL - {"project:p2"}, {"project:p2"}),
    ("GET", "/v1/jobs/rec-b1", None, ALL - {"project:p1"}, {"project:p1"}),
    ("GET", "/v1/jobs/host-h1", None, STAFF, {"project:p1", "project:p2"}),
]

# Finished jobs of every kind about the seeded instances and hosts (the
# engine leaves finished jobs alone): (id, created_at, kind, subject, data).
JOBS: list[tuple[str, float, JobKind, str, Any]] = [
    ("host-h1", 1.0, JobKind.HOST_RECOVERY, "h1",
     HostRecoveryData(host="h1", segment="seg-a", instances={"a1": Move(target="h2")})),
    ("act-a1", 2.0, JobKind.ACTION, "a1",
     ActionData(instance="a1", action="evacuate", target="h2", by="ops", source="h1",
                project="p1", moving_to="h2")),
    ("rec-b1", 3.0, JobKind.INSTANCE_RECOVERY, "b1",
     InstanceRecoveryData(instance="b1", layer="guest", action="reset", host="h3",
                          project="p2")),
    ("dec-a2", 4.0, JobKind.DECISION, "a2",
     DecisionData(instance="a2", project="p1", host="h2", layer="host", host_job="host-h1")),
]


def add_jobs(store: Store, jobs: list[tuple[str, float, JobKind, str, Any]]) -> None:
    for job_id, at, kind, subject, data in jobs:
        store.create_job(Job(job_id, kind, subject, JobState.DONE, created_at=at,
                             updated_at=at, reason="test", data=data))


@pytest.fixture
def with_jobs(seeded: TestClient, store: Store) -> TestClient:
    add_jobs(store, JOBS)
    return seeded


@pytest.mark.parametrize(("method", "path", "body", "allowed", "hidden"), MATRIX,
                         ids=[f"{m} {p}" for m, p, *_ in MATRIX])
def test_role_matrix(
    with_jobs: TestClient, client_for: ClientFor, method: str, path: str,
    body: dict[str, Any] | None, allowed: set[str], hidden: set[str],
) -> None:
    # Refused and hidden roles first: an allowed DELETE must not hide a 403.
    for role in sorted(ROLES, key=lambda r: r in allowed):
        response = client_for(role).request(method, path, json=body)
        if role in allowed:  # may still be 404/409 after an earlier role's change
            assert response.status_code not in (401, 403), (role, response.text)
        elif role in hidden:
            assert response.status_code == 404, (role, response.text)
        else:
            assert response.status_code == 403, (role, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["title"] == "Forbidden"


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Bearer ", "Basic dG9rLWFkbWlu",
                                    "Bearer tok-admin-but-longer", "bearer"])
def test_missing_or_bad_token_is_401(app: object, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    with TestClient(app, headers=headers) as client:  # type: ignore[arg-type]
        response = client.get("/v1/hosts")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    assert "tok-admin" not in response.text


def test_project_token_sees_only_its_instances(seeded: TestClient, client_for: ClientFor) -> None:
    p1, p2 = client_for("project:p1"), client_for("project:p2")
    assert [i["id"] for i in p1.get("/v1/instances").json()["items"]] == ["a1", "a2"]
    assert [i["id"] for i in p2.get("/v1/instances").json()["items"]] == ["b1"]
    # Filters cannot widen the view.
    assert [i["id"] for i in p1.get("/v1/instances", params={"host": "h3"}).json()["items"]] == []
    assert p1.get("/v1/instances", params={"project": "p2"}).status_code == 403
    assert p1.get("/v1/instances", params={"project": "p1"}).status_code == 200
    # Another project's instance looks exactly like a missing one.
    other, missing = p1.get("/v1/instances/b1"), p1.get("/v1/instances/zz")
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"] == "instance 'b1' does not exist"
    marker = p1.get("/v1/instances", params={"marker": "b1"})
    assert marker.status_code == 422
    assert marker.json()["detail"].startswith("query.marker: instance 'b1' does not exist")


def test_project_token_writes_only_its_project(seeded: TestClient, client_for: ClientFor) -> None:
    p1 = client_for("project:p1")
    created = p1.post("/v1/instances", json={"id": "mine", "name": "mine"})
    assert created.status_code == 201
    assert created.json()["project"] == "p1"  # defaulted to the token's project
    assert p1.post("/v1/instances", json={"name": "x", "project": "p2"}).status_code == 403
    moved = p1.patch("/v1/instances/a1", json={"project": "p2"})
    assert moved.status_code == 403
    assert seeded.get("/v1/instances/a1").json()["project"] == "p1"
    assert p1.delete("/v1/instances/b1").status_code == 404
    assert seeded.get("/v1/instances/b1").status_code == 200


def test_project_token_reads_only_its_events(
    seeded: TestClient, client_for: ClientFor, store: Store
) -> None:
    store.append_events([
        Event("instance.crashed", "a1", 1.0, SubjectKind.INSTANCE, project="p1"),
        Event("instance.crashed", "b1", 2.0, SubjectKind.INSTANCE, project="p2"),
        Event("instance.watchdog", "a2", 3.0, SubjectKind.INSTANCE, project="p1"),
    ])
    seeded.post("/v1/hosts/h1/maintenance", json={"enabled": True})  # a host event, no project
    p1 = client_for("project:p1")
    seen = p1.get("/v1/events").json()["items"]
    assert [(e["type"], e["subject"]) for e in seen] == [
        ("instance.crashed", "a1"), ("instance.watchdog", "a2")]
    assert p1.get("/v1/events", params={"project": "p2"}).status_code == 403
    assert p1.get("/v1/events", params={"subject": "b1"}).json()["items"] == []
    everything = client_for("viewer").get("/v1/events").json()["items"]
    assert len(everything) == 4


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_project_token_reads_only_its_instances_jobs(
    with_jobs: TestClient, client_for: ClientFor
) -> None:
    p1, p2, viewer = client_for("project:p1"), client_for("project:p2"), client_for("viewer")
    assert ids(p1.get("/v1/jobs")) == ["act-a1", "dec-a2"]
    assert ids(p2.get("/v1/jobs")) == ["rec-b1"]
    assert ids(viewer.get("/v1/jobs")) == ["host-h1", "act-a1", "rec-b1", "dec-a2"]
    assert ids(viewer.get("/v1/jobs", params={"project": "p1"})) == ["act-a1", "dec-a2"]
    # Filters cannot widen the view; naming another project is 403.
    assert ids(p1.get("/v1/jobs", params={"kind": "host_recovery"})) == []
    assert ids(p1.get("/v1/jobs", params={"subject": "b1"})) == []
    assert ids(p1.get("/v1/jobs", params={"project": "p1", "kind": "decision"})) == ["dec-a2"]
    assert p1.get("/v1/jobs", params={"project": "p2"}).status_code == 403
    # Another project's job and a host recovery look exactly like a missing job.
    for job_id in ("rec-b1", "host-h1", "nope"):
        hidden = p1.get(f"/v1/jobs/{job_id}")
        assert hidden.status_code == 404, hidden.text
        assert hidden.json()["detail"] == f"job {job_id!r} does not exist"
        marker = p1.get("/v1/jobs", params={"marker": job_id})
        assert marker.status_code == 422, marker.text
        assert marker.json()["detail"].startswith(f"query.marker: job {job_id!r} does not exist")
    assert ids(p1.get("/v1/jobs", params={"marker": "act-a1"})) == ["dec-a2"]


def test_a_tenants_job_names_only_its_instances_hosts(
    with_jobs: TestClient, client_for: ClientFor
) -> None:
    p1, viewer = client_for("project:p1"), client_for("viewer")
    action = p1.get("/v1/jobs/act-a1").json()["data"]
    # where its instance was and was sent to: its events name them already
    assert (action["source"], action["target"], action["moving_to"]) == ("h1", "h2", "h2")
    decision = p1.get("/v1/jobs/dec-a2").json()
    assert decision["data"]["host"] == "h2" and decision["data"]["host_job"] is None
    assert viewer.get("/v1/jobs/dec-a2").json()["data"]["host_job"] == "host-h1"
    listed = {j["id"]: j for j in p1.get("/v1/jobs").json()["items"]}
    assert listed["dec-a2"] == decision


def test_a_tenants_job_pages_are_full(
    seeded: TestClient, client_for: ClientFor, store: Store
) -> None:
    """The project filter is part of the store query: with other projects'
    and host jobs in between, every page but the last is full."""
    jobs: list[tuple[str, float, JobKind, str, Any]] = []
    for n in range(12):
        at = float(n + 1)
        if n % 3 == 0:
            jobs.append((f"mine-{n:02}", at, JobKind.ACTION, "a1",
                         ActionData(instance="a1", action="restart", project="p1")))
        elif n % 3 == 1:
            jobs.append((f"theirs-{n:02}", at, JobKind.ACTION, "b1",
                         ActionData(instance="b1", action="restart", project="p2")))
        else:
            jobs.append((f"host-{n:02}", at, JobKind.HOST_RECOVERY, "h3",
                         HostRecoveryData(host="h3", instances={"a1": Move()})))
    add_jobs(store, jobs)
    p1 = client_for("project:p1")
    seen: list[list[str]] = []
    marker: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3, "sort": "created_at", "desc": True}
        if marker is not None:
            params["marker"] = marker
        page = p1.get("/v1/jobs", params=params).json()
        seen.append([j["id"] for j in page["items"]])
        marker = page["next_marker"]
        if marker is None:
            break
    assert seen == [["mine-09", "mine-06", "mine-03"], ["mine-00"]]


def test_tokens_never_reach_the_log(
    seeded: TestClient, client_for: ClientFor, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("DEBUG"):
        client_for("admin").get("/v1/hosts")
        client_for(None).get("/v1/hosts", headers={"Authorization": "Bearer guess-123"})
    assert "tok-admin" not in caplog.text and "guess-123" not in caplog.text
