"""CRUD of segments, hosts, instances and policies through the API."""

from __future__ import annotations

from fastapi.testclient import TestClient

from vmha.domain.model import Job, JobKind, JobState
from vmha.domain.policy import DEFAULT_POLICY
from vmha.ports import Store


def test_segment_lifecycle(admin: TestClient) -> None:
    created = admin.post("/v1/segments", json={"name": "s1", "recovery_method": "reserved_host",
                                               "description": "rack 1"})
    assert created.status_code == 201
    assert created.headers["location"] == "/v1/segments/s1"
    assert created.json()["recovery_method"] == "reserved_host"
    assert created.json()["enabled"] is True

    changed = admin.patch("/v1/segments/s1", json={"enabled": False,
                                                   "mass_failure_threshold": 0.3})
    assert changed.status_code == 200
    got = admin.get("/v1/segments/s1").json()
    assert (got["enabled"], got["mass_failure_threshold"]) == (False, 0.3)
    assert got["description"] == "rack 1"  # PATCH left the other fields alone

    assert admin.delete("/v1/segments/s1").status_code == 204
    missing = admin.get("/v1/segments/s1")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "segment 's1' does not exist"


def test_duplicate_is_conflict(admin: TestClient) -> None:
    assert admin.post("/v1/segments", json={"name": "s1"}).status_code == 201
    again = admin.post("/v1/segments", json={"name": "s1"})
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert "already exists" in again.json()["detail"]


def test_segment_with_hosts_cannot_be_deleted(seeded: TestClient) -> None:
    refused = seeded.delete("/v1/segments/seg-a")
    assert refused.status_code == 409
    assert "still has 2 host(s)" in refused.json()["detail"]


def test_host_with_a_paused_recovery_job_cannot_be_deleted(
    seeded: TestClient, store: Store
) -> None:
    """The engine would lose the host its job fences (issue 11 item 7)."""
    store.create_job(Job("job-42", JobKind.HOST_RECOVERY, "h1", state=JobState.PAUSED))
    refused = seeded.delete("/v1/hosts/h1")
    assert refused.status_code == 409
    assert "unfinished recovery job job-42 (paused)" in refused.json()["detail"]
    assert seeded.get("/v1/hosts/h1").status_code == 200


def test_host_lifecycle(admin: TestClient, clock: object) -> None:
    admin.post("/v1/segments", json={"name": "s1"})
    admin.post("/v1/segments", json={"name": "s2"})
    body = {"name": "h1", "segment": "s1", "address": "198.18.0.21", "reserved": True,
            "capacity": {"vcpus": 4, "ram_mb": 8192, "disk_gb": 50},
            "fence_levels": [["redfish"], ["ipmi", "agent_watchdog"]]}
    created = admin.post("/v1/hosts", json=body)
    assert created.status_code == 201, created.text
    host = created.json()
    assert created.headers["location"] == "/v1/hosts/h1"
    assert (host["state"], host["maintenance"], host["schedulable"]) == ("up", False, True)
    assert host["fence_levels"] == [["redfish"], ["ipmi", "agent_watchdog"]]
    assert host["state_since"] == 1_800_000_000.0

    changed = admin.patch("/v1/hosts/h1", json={"segment": "s2", "reserved": False})
    assert changed.status_code == 200
    assert (changed.json()["segment"], changed.json()["reserved"]) == ("s2", False)
    assert changed.json()["capacity"]["vcpus"] == 4

    assert admin.delete("/v1/hosts/h1").status_code == 204
    assert admin.get("/v1/hosts/h1").status_code == 404


def test_host_state_is_not_writable(seeded: TestClient) -> None:
    for field, value in (("state", "failed"), ("maintenance", True), ("name", "x")):
        refused = seeded.patch("/v1/hosts/h1", json={field: value})
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["field"] == f"body.{field}"
    assert seeded.get("/v1/hosts/h1").json()["state"] == "up"


def test_host_in_unknown_segment_names_the_field(admin: TestClient) -> None:
    refused = admin.post("/v1/hosts", json={"name": "h1", "segment": "nowhere"})
    assert refused.status_code == 422
    assert refused.json()["errors"] == [{
        "field": "body.segment",
        "message": "segment 'nowhere' does not exist; create it first or name another",
    }]


def test_instance_lifecycle_with_generated_id(seeded: TestClient) -> None:
    created = seeded.post("/v1/instances", json={
        "name": "web", "host": "h1", "project": "p1",
        "resources": {"vcpus": 2, "ram_mb": 2048, "disk_gb": 10}})
    assert created.status_code == 201, created.text
    instance = created.json()
    assert instance["id"] == "vm-000001"
    assert created.headers["location"] == "/v1/instances/vm-000001"
    assert instance["state"] == "running"

    changed = seeded.patch("/v1/instances/vm-000001", json={"host": "h2", "policy_name": "gold"})
    assert changed.status_code == 200
    assert (changed.json()["host"], changed.json()["policy_name"]) == ("h2", "gold")
    cleared = seeded.patch("/v1/instances/vm-000001", json={"policy_name": None})
    assert cleared.json()["policy_name"] is None

    assert seeded.delete("/v1/instances/vm-000001").status_code == 204
    assert seeded.get("/v1/instances/vm-000001").status_code == 404


def test_instance_references_must_exist(seeded: TestClient) -> None:
    cases = (({"policy_name": "platinum"}, "body.policy_name"),
             ({"host": "h99"}, "body.host"))
    for extra, field in cases:
        refused = seeded.post("/v1/instances", json={"name": "x", **extra})
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["field"] == field
    refused = seeded.patch("/v1/instances/a1", json={"policy_name": "platinum"})
    assert refused.status_code == 422
    assert seeded.get("/v1/instances/a1").json()["policy_name"] is None


def test_instance_spec_round_trip_and_errors(seeded: TestClient) -> None:
    spec = {"image": "lab", "address": "198.18.1.11/24",
            "health_url": "http://198.18.1.11:8080/health"}
    created = seeded.post("/v1/instances", json={"name": "vm1", "host": "h1", "spec": spec})
    assert created.status_code == 201, created.text
    got = created.json()["spec"]
    assert (got["image"], got["address"], got["watchdog_s"]) == ("lab", "198.18.1.11/24", 3)
    iid = created.json()["id"]
    moved = seeded.patch(f"/v1/instances/{iid}", json={"spec": {"xml": "<domain type='qemu'/>"}})
    assert moved.status_code == 200, moved.text
    assert moved.json()["spec"]["xml"] == "<domain type='qemu'/>"
    cases = (({"image": "lab", "xml": "<domain/>"}, "body.spec"),
             ({"image": "lab", "address": "198.18.1.300/24"}, "body.spec.address"),
             ({"image": "../etc"}, "body.spec.image"),
             ({"image": "lab", "mac": "01:00:00:00:00:01"}, "body.spec.mac"))
    for bad, field in cases:
        refused = seeded.post("/v1/instances", json={"name": "x", "spec": bad})
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["errors"][0]["field"] == field, (bad, refused.text)


def test_instance_id_must_be_url_safe(admin: TestClient) -> None:
    refused = admin.post("/v1/instances", json={"id": "a/b", "name": "x"})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "body.id"


def test_policy_lifecycle(admin: TestClient) -> None:
    body = {"name": "silver", "description": "middle",
            "policy": {"host": "auto+notify", "priority": 600,
                       "probes": [{"kind": "http", "target": "http://vm/health"}]}}
    created = admin.post("/v1/policies", json=body)
    assert created.status_code == 201, created.text
    policy = created.json()["policy"]
    assert (policy["host"], policy["priority"]) == ("auto+notify", 600)
    assert policy["guest"] == DEFAULT_POLICY.guest.value  # omitted keys take defaults
    assert policy["probes"][0]["interval_s"] == 10.0

    changed = admin.patch("/v1/policies/silver", json={"description": "changed"})
    assert changed.json()["description"] == "changed"
    assert changed.json()["policy"]["priority"] == 600
    replaced = admin.patch("/v1/policies/silver", json={"policy": {"priority": 10}})
    assert replaced.json()["policy"]["host"] == DEFAULT_POLICY.host.value

    assert admin.delete("/v1/policies/silver").status_code == 204
    assert admin.get("/v1/policies/silver").status_code == 404


def test_policy_in_use_cannot_be_deleted(seeded: TestClient) -> None:
    refused = seeded.delete("/v1/policies/gold")
    assert refused.status_code == 409
    assert "still used by 0 instance(s) and 1 segment(s)" in refused.json()["detail"]


def test_effective_policy_sources(seeded: TestClient) -> None:
    seeded.post("/v1/instances", json={"id": "named", "name": "n", "host": "h3",
                                      "policy_name": "bronze"})
    seeded.post("/v1/instances", json={"id": "inline", "name": "i", "host": "h1",
                                      "policy_name": "bronze", "policy": {"priority": 42}})
    seeded.post("/v1/instances", json={"id": "nohost", "name": "z"})
    expected = {
        "inline": ("inline", None, 42),
        "named": ("named", "bronze", 100),
        "a1": ("segment", "gold", 900),  # h1 is in seg-a, default gold
        "b1": ("default", None, DEFAULT_POLICY.priority),  # seg-b has no default
        "nohost": ("default", None, DEFAULT_POLICY.priority),
    }
    for iid, (source, name, priority) in expected.items():
        got = seeded.get(f"/v1/instances/{iid}/policy").json()
        assert (got["source"], got["name"], got["policy"]["priority"]) == (source, name, priority)
        assert got["instance"] == iid
