"""`/v1/whatif`: the guard and the planner on the live inventory; nothing changes."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from vmha.domain.model import Event, Severity, SubjectKind
from vmha.ports import Store

ClientFor = Callable[[str | None], TestClient]


def test_one_host_of_two_moves_its_instances_to_the_other(
    seeded: TestClient, client_for: ClientFor, store: Store
) -> None:
    before = (store.last_event_id(), seeded.get("/v1/hosts").json())
    r = client_for("viewer").post("/v1/whatif", json={"fail": ["h1"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["failed"] == ["h1"] and body["absorbed"] and not body["isolated"]
    (a1,) = body["instances"]
    assert (a1["instance"], a1["action"], a1["target"], a1["priority"]) == (
        "a1", "move", "h2", 900)  # the segment's default policy "gold"
    (seg,) = body["segments"]
    assert (seg["segment"], seg["hosts"], seg["down"], seg["would_pause"]) == (
        "seg-a", 2, 1, False)
    # nothing was touched: no event, no state change
    assert (store.last_event_id(), seeded.get("/v1/hosts").json()) == before


def test_the_whole_segment_failing_would_pause_it_and_everything_isolates(
    seeded: TestClient,
) -> None:
    both = seeded.post("/v1/whatif", json={"fail": ["h1", "h2"]}).json()
    assert both["segments"][0]["would_pause"] and not both["absorbed"]
    assert not both["isolated"]
    assert {i["action"] for i in both["instances"]} == {"unplaceable"}
    everything = seeded.post("/v1/whatif", json={"fail": ["h1", "h2", "h3"]}).json()
    assert everything["isolated"]


def test_a_paused_segment_is_reported(seeded: TestClient, store: Store) -> None:
    store.append_events([Event(type="segment.recovery_paused", subject="seg-a", time=1.0,
                               subject_kind=SubjectKind.SEGMENT, severity=Severity.CRITICAL,
                               payload={"segment": "seg-a", "reason": "test"})])
    seg = seeded.post("/v1/whatif", json={"fail": ["h1"]}).json()["segments"][0]
    assert seg["already_paused"] and not seg["recovers"]
    assert "paused now" in seg["reason"]
    # the segment itself says so, with the guard's reason
    shown = seeded.get("/v1/segments/seg-a").json()
    assert (shown["recovery_paused"], shown["paused_reason"]) == (True, "test")
    listed = {s["name"]: s["recovery_paused"] for s in seeded.get("/v1/segments").json()["items"]}
    assert listed == {"seg-a": True, "seg-b": False}


def test_unknown_hosts_bad_bodies_and_roles(seeded: TestClient, client_for: ClientFor) -> None:
    r = seeded.post("/v1/whatif", json={"fail": ["h1", "nope"]})
    assert r.status_code == 422 and "nope" in r.text and "body.fail" in r.text
    assert seeded.post("/v1/whatif", json={"fail": []}).status_code == 422
    assert client_for("project:p1").post("/v1/whatif", json={"fail": ["h1"]}).status_code == 403
    assert client_for(None).post("/v1/whatif", json={"fail": ["h1"]}).status_code == 401
    assert client_for("project:p1").get("/v1/whatif/single-host").status_code == 403


def test_single_host_check(seeded: TestClient, client_for: ClientFor) -> None:
    r = client_for("operator").get("/v1/whatif/single-host")
    assert r.status_code == 200, r.text
    hosts = {h["host"]: h for h in r.json()["hosts"]}
    assert set(hosts) == {"h1", "h2", "h3"}
    assert hosts["h1"]["absorbed"] and hosts["h1"]["moved"] == 1
    # h3 is alone in seg-b: its instance has nowhere to go
    assert not hosts["h3"]["absorbed"] and not r.json()["all_absorbed"]
    assert hosts["h3"]["unplaceable"][0]["instance"] == "b1"
    assert "would find no host" in hosts["h3"]["reason"]
