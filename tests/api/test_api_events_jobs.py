"""Host maintenance through the state machine, the event feed, and jobs."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from vmha.domain.model import Job, JobKind, JobState
from vmha.domain.transitions import finish_step, start_step
from vmha.ports import Store

ClientFor = Callable[[str | None], TestClient]


def test_maintenance_on_and_off_emit_events(
    seeded: TestClient, client_for: ClientFor, clock: object
) -> None:
    operator = client_for("operator")
    on = operator.post("/v1/hosts/h1/maintenance", json={"enabled": True, "reason": "firmware"})
    assert on.status_code == 200, on.text
    host = on.json()
    assert (host["state"], host["maintenance"], host["schedulable"]) == (
        "maintenance", True, False)
    assert host["state_reason"] == "firmware"

    clock.t += 60  # type: ignore[attr-defined]
    off = operator.post("/v1/hosts/h1/maintenance", json={"enabled": False})
    assert (off.json()["state"], off.json()["maintenance"]) == ("up", False)
    assert off.json()["state_since"] == 1_800_000_060.0

    events = seeded.get("/v1/events", params={"subject": "h1"}).json()["items"]
    assert [e["type"] for e in events] == ["host.maintenance_on", "host.maintenance_off"]
    first = events[0]
    assert first["payload"]["reason"] == "firmware"
    assert first["payload"]["by"] == "operator-token"
    assert (first["payload"]["from"], first["payload"]["to"]) == ("up", "maintenance")
    assert events[1]["time"] == 1_800_000_060.0


def test_repeated_maintenance_is_a_no_op(seeded: TestClient) -> None:
    for _ in range(2):
        assert seeded.post("/v1/hosts/h2/maintenance", json={"enabled": True}).status_code == 200
    assert seeded.post("/v1/hosts/h3/maintenance", json={"enabled": False}).status_code == 200
    types = [e["type"] for e in seeded.get("/v1/events").json()["items"]]
    assert types == ["host.maintenance_on"]


def test_maintenance_of_missing_host(seeded: TestClient) -> None:
    missing = seeded.post("/v1/hosts/h9/maintenance", json={"enabled": True})
    assert missing.status_code == 404
    assert missing.json()["detail"] == "host 'h9' does not exist"


def test_event_cursor_and_type_filters(seeded: TestClient) -> None:
    for host in ("h1", "h2", "h3"):
        seeded.post(f"/v1/hosts/{host}/maintenance", json={"enabled": True})
    seeded.post("/v1/hosts/h1/maintenance", json={"enabled": False})

    page = seeded.get("/v1/events", params={"limit": 2}).json()
    assert [e["subject"] for e in page["items"]] == ["h1", "h2"]
    rest = seeded.get("/v1/events", params={"since": page["next_since"]}).json()
    assert [e["subject"] for e in rest["items"]] == ["h3", "h1"]
    empty = seeded.get("/v1/events", params={"since": rest["next_since"]}).json()
    assert empty == {"items": [], "next_since": rest["next_since"]}

    def types(*wanted: str) -> list[str]:
        body = seeded.get("/v1/events", params={"type": list(wanted)}).json()
        return [e["type"] for e in body["items"]]

    assert types("host.maintenance_off") == ["host.maintenance_off"]
    assert types("host.*") == ["host.maintenance_on"] * 3 + ["host.maintenance_off"]
    assert types("host.maintenance_off", "instance.*") == ["host.maintenance_off"]
    assert types("instance.*") == []


def _job(job_id: str, subject: str, created: float, state: JobState = JobState.PENDING) -> Job:
    job = Job(job_id, JobKind.HOST_RECOVERY, subject, state=state, created_at=created,
              updated_at=created)
    job = start_step(job, "fence", created + 1)
    job = finish_step(job, "fence", created + 3.5, detail="redfish: power off confirmed")
    return start_step(job, "evacuate", created + 4)


def test_jobs_list_and_show(admin: TestClient, store: Store) -> None:
    store.create_job(_job("j1", "h1", 100.0, JobState.EVACUATING))
    store.create_job(_job("j2", "h2", 200.0, JobState.DONE))
    store.create_job(Job("j3", JobKind.INSTANCE_RECOVERY, "a1", created_at=300.0))

    listed = admin.get("/v1/jobs").json()
    assert [j["id"] for j in listed["items"]] == ["j1", "j2", "j3"]
    by_kind = admin.get("/v1/jobs", params={"kind": "instance_recovery"}).json()["items"]
    assert [j["id"] for j in by_kind] == ["j3"]
    by_state = admin.get("/v1/jobs", params={"state": "done"}).json()["items"]
    assert [j["id"] for j in by_state] == ["j2"]
    paged = admin.get("/v1/jobs", params={"limit": 2}).json()
    assert paged["next_marker"] == "j2"
    assert admin.get("/v1/jobs", params={"kind": "nope"}).status_code == 422

    job = admin.get("/v1/jobs/j1").json()
    assert (job["state"], job["subject"], job["kind"]) == ("evacuating", "h1", "host_recovery")
    fence, evacuate = job["steps"]
    assert (fence["name"], fence["state"], fence["started_at"], fence["finished_at"]) == (
        "fence", "done", 101.0, 103.5)
    assert fence["duration_s"] == 2.5
    assert fence["detail"] == "redfish: power off confirmed"
    assert (evacuate["state"], evacuate["finished_at"], evacuate["duration_s"]) == (
        "running", None, None)
    assert admin.get("/v1/jobs/nope").status_code == 404
