"""Probes through the API: the agents' probe document, their reports, and
probe definitions refused with the field named (never stored, never an agent crash)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from fastapi.testclient import TestClient

from vmha.adapters.cloud.libvirt import domain_uuid

ClientFor = Callable[[str | None], TestClient]
HTTP = {"kind": "http", "target": "http://198.18.1.11:8080/health", "interval_s": 1,
        "timeout_s": 0.5, "initial_delay_s": 20}
XML_NO_AGENT = ("<domain type='qemu'><name>x</name><memory>65536</memory><os><type>hvm"
                "</type></os><devices/></domain>")


@pytest.fixture
def lab(admin: TestClient) -> TestClient:
    for path, body in (("/v1/segments", {"name": "lab"}),
                       ("/v1/hosts", {"name": "host1", "segment": "lab"}),
                       ("/v1/hosts", {"name": "host2", "segment": "lab"})):
        assert admin.post(path, json=body).status_code == 201
    return admin


def _instance(client: TestClient, name: str, policy: Mapping[str, Any] | None = None,
              host: str = "host1", **extra: Any) -> Any:
    body: dict[str, Any] = {"id": f"id-{name}", "name": name, "host": host, **extra}
    if policy is not None:
        body["policy"] = policy
    return client.post("/v1/instances", json=body)


def test_agents_get_the_probes_of_their_host_with_an_etag(
        lab: TestClient, client_for: ClientFor) -> None:
    spec = {"image": "lab", "address": "198.18.1.11/24"}
    assert _instance(lab, "vm1", {"app": "auto", "probes": [HTTP, {"kind": "tcp",
                     "target": "22"}], "app_actions": ["exec:/etc/init.d/app restart", "reset"]},
                     spec=spec).status_code == 201
    assert _instance(lab, "vm2", {"app": "off", "guest": "off"}).status_code == 201
    assert _instance(lab, "vm3", {"app": "notify", "probes": [HTTP]},
                     host="host2").status_code == 201
    agent = client_for("agent")
    first = agent.get("/v1/agents/host1/probes")
    assert first.status_code == 200, first.text
    doc = first.json()
    assert [e["name"] for e in doc["instances"]] == ["vm1"]  # vm2 watches nothing
    vm1 = doc["instances"][0]
    assert (vm1["domain"], vm1["instance"]) == (domain_uuid("id-vm1"), "id-vm1")
    assert [p["target"] for p in vm1["probes"]] == [HTTP["target"], "198.18.1.11:22"]
    assert vm1["probes"][0]["initial_delay_s"] == 20
    assert vm1["guest_ping"] == {"interval_s": 5.0, "failures": 3}
    etag = first.headers["etag"]
    assert agent.get("/v1/agents/host1/probes",
                     headers={"If-None-Match": etag}).status_code == 304
    lab.patch("/v1/instances/id-vm1", json={"policy": {"app": "auto", "probes": [
        {**HTTP, "failure_threshold": 5}]}}).raise_for_status()
    changed = agent.get("/v1/agents/host1/probes", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert changed.json()["instances"][0]["probes"][0]["failure_threshold"] == 5
    assert agent.get("/v1/agents/nohost/probes").status_code == 404
    for role in ("viewer", "operator", "project:p1"):
        assert client_for(role).get("/v1/agents/host1/probes").status_code == 403


@pytest.mark.parametrize(
    ("policy", "field", "words"),
    [
        ({"probes": [{"kind": "http", "target": "not a url"}]}, "body.policy.probes[0].target",
         "spaces"),
        ({"probes": [{"kind": "http", "target": "http://vm:0/"}]},
         "body.policy.probes[0].target", "port 0"),
        ({"probes": [{"kind": "tcp", "target": "0"}]}, "body.policy.probes[0].target",
         "TCP port"),
        ({"probes": [{"kind": "exec", "target": "/bin/check"}]}, "body.policy.probes[0].kind",
         "guest agent channel"),
        ({"app_actions": ["exec:/etc/init.d/app restart"]}, "body.policy.app_actions[0]",
         "guest agent channel"),
        ({"app_actions": ["rebuild"]}, "body.policy.app_actions[0]", "cannot rebuild"),
        ({"app_actions": ["reimage"]}, "body.policy.app_actions[0]", "exec:<command>"),
    ],
)
def test_bad_probes_are_422_naming_the_field(lab: TestClient, policy: dict[str, Any],
                                             field: str, words: str) -> None:
    response = _instance(lab, "vm1", policy, spec={"xml": XML_NO_AGENT})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"][0]["field"] == field, problem
    assert words in problem["errors"][0]["message"] or words in problem["detail"]
    assert lab.get("/v1/instances/id-vm1").status_code == 404  # nothing stored
    lab.post("/v1/instances", json={"id": "id-ok", "name": "ok", "host": "host1",
                                    "spec": {"xml": XML_NO_AGENT}}).raise_for_status()
    patched = lab.patch("/v1/instances/id-ok", json={"policy": policy})
    assert patched.status_code == 422 and patched.json()["errors"][0]["field"] == field


def test_a_named_policy_that_does_not_fit_names_policy_name(lab: TestClient) -> None:
    lab.post("/v1/policies", json={"name": "fix-in-guest", "policy": {
        "app_actions": ["exec:/etc/init.d/app restart", "reset"]}}).raise_for_status()
    response = _instance(lab, "vm1", None, spec={"xml": XML_NO_AGENT},
                         policy_name="fix-in-guest")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.policy_name"
    assert "app_actions[0]" in response.json()["detail"]
    ok = _instance(lab, "vm2", None, spec={"image": "lab", "address": "198.18.1.12/24"},
                   policy_name="fix-in-guest")
    assert ok.status_code == 201, ok.text


def test_rebuild_is_a_step_only_where_the_cloud_rebuilds(lab: TestClient) -> None:
    """`rebuild` (OpenStack) is refused, naming the step, when the configured
    cloud cannot rebuild; accepted where it can."""
    policy = {"app_actions": ["reset", "rebuild"]}
    refused = lab.post("/v1/policies", json={"name": "rebuilds", "policy": policy})
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == "body.policy.app_actions[1]"
    assert "OpenStack" in refused.json()["detail"]
    lab.post("/v1/policies", json={"name": "resets", "policy": {}}).raise_for_status()
    patched = lab.patch("/v1/policies/resets", json={"policy": policy})
    assert patched.status_code == 422, patched.text
    response = _instance(lab, "vm1", policy)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.policy.app_actions[1]"
    lab.app.state.vmha.can_rebuild = True  # type: ignore[attr-defined]  # e.g. OpenStack
    created = _instance(lab, "vm1", policy)
    assert created.status_code == 201, created.text
    assert created.json()["policy"]["app_actions"] == ["reset", "rebuild"]
    assert lab.patch("/v1/policies/resets", json={"policy": policy}).status_code == 200


def test_project_tokens_may_exec_only_the_offered_commands(
        lab: TestClient, client_for: ClientFor) -> None:
    """[tenants] exec_commands (vmha.api.offers) limits exec probes and exec steps alike."""
    p1 = client_for("project:p1")
    for policy, field in (({"probes": [{"kind": "exec", "target": "/bin/true"}]},
                           "body.policy.probes[0].target"),
                          ({"app_actions": ["exec:/bin/true"]}, "body.policy.app_actions[0]"),
                          ({"probes": [{"kind": "tcp", "target": "10.0.0.1:22"}]}, None)):
        response = p1.post("/v1/instances", json={"id": "t1", "name": "t1", "policy": policy})
        if field is None:
            assert response.status_code == 422, response.text
            assert "outside the networks offered" in response.json()["detail"]
            continue
        assert response.status_code == 403, response.text
        assert response.json()["detail"].startswith(field)
        assert "[tenants] exec_commands" in response.json()["detail"]
    ok = p1.post("/v1/instances", json={"id": "t2", "name": "t2", "policy": {
        "probes": [{"kind": "tcp", "target": "22"}], "app_actions": ["reboot", "reset"]}})
    assert ok.status_code == 201, ok.text
    assert _instance(lab, "vm2", {"app_actions": ["exec:/bin/true"]},
                     spec={"image": "lab", "address": "198.18.1.11/24"}).status_code == 201


def test_probe_reports_are_taken_with_probe_and_count(lab: TestClient,
                                                     client_for: ClientFor) -> None:
    assert _instance(lab, "vm1", {"app": "notify"}).status_code == 201
    event = {"instance": domain_uuid("id-vm1"), "name": "vm1", "kind": "app_failed",
             "detail": "HTTP 503", "time": 1.0, "probe": "http http://vm/health", "count": 3}
    response = client_for("agent").post("/v1/agents/host1/events",
                                        json={"boot_id": "b", "events": [event]})
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "known": 1}
    bad = client_for("agent").post("/v1/agents/host1/events",
                                   json={"events": [{**event, "count": -1}]})
    assert bad.status_code == 422
