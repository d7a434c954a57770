"""Project tokens pick only from what the admin offers ([tenants]), and learn
nothing about other projects or the hosts (issue 11, items 1 and 2).

Every case is sent with a `project:` token; the admin's token shows the
same body is fine for staff."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from apikit import StepClock, make_settings
from fastapi.testclient import TestClient

from vmha.adapters.system import SequentialIds
from vmha.api import create_app
from vmha.config import Settings
from vmha.ports import Store

TENANTS = {"images": ["tiny"], "max_priority": 600, "exec_commands": ["/bin/app-check"],
           "networks": [{"bridge": "br-t", "cidr": "198.18.1.0/24"}]}
GOOD_SPEC = {"image": "tiny", "bridge": "br-t", "address": "198.18.1.21/24",
             "gateway": "198.18.1.1", "health_url": "http://198.18.1.21:8080/health"}


@pytest.fixture
def clients(store: Store) -> Iterator[dict[str, TestClient]]:
    base = make_settings()
    settings = Settings.model_validate({**base.model_dump(mode="python"), "tenants": TENANTS})
    app = create_app(settings, store, StepClock(), SequentialIds("vm"))
    tokens = {"admin": "tok-admin", "p1": "tok-p1", "p2": "tok-p2", "operator": "tok-operator"}
    made = {who: TestClient(app, headers={"Authorization": f"Bearer {t}"},
                            raise_server_exceptions=False) for who, t in tokens.items()}
    admin = made["admin"]
    assert admin.post("/v1/segments", json={"name": "s"}).status_code == 201
    assert admin.post("/v1/hosts", json={"name": "h1", "segment": "s"}).status_code == 201
    yield made
    for c in made.values():
        c.close()


def create(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/instances", json={"name": "vm", **body})


def test_an_offered_spec_is_accepted_from_a_tenant(clients: dict[str, TestClient]) -> None:
    made = create(clients["p1"], spec=GOOD_SPEC)
    assert made.status_code == 201, made.text
    assert made.json()["project"] == "p1"


@pytest.mark.parametrize(("spec", "status", "field"), [
    ({"xml": "<domain type='qemu'><devices><disk><source file='/etc/shadow'/></disk>"
      "</devices></domain>"}, 403, None),
    ({**GOOD_SPEC, "bridge": "br0"}, 422, "body.spec.bridge"),
    ({**GOOD_SPEC, "image": "other"}, 422, "body.spec.image"),
    ({**GOOD_SPEC, "address": "198.18.0.1/24"}, 422, "body.spec.address"),
    ({**GOOD_SPEC, "gateway": "10.0.0.1"}, 422, "body.spec.gateway"),
    ({**GOOD_SPEC, "health_url": "http://169.254.169.254/latest/meta-data/"}, 422,
     "body.spec.health_url"),
    ({**GOOD_SPEC, "health_url": "http://127.0.0.1:8790/v1/hosts"}, 422,
     "body.spec.health_url"),
    ({**GOOD_SPEC, "health_url": "http://[64:ff9b::a9fe:a9fe]/"}, 422, "body.spec.health_url"),
    ({**GOOD_SPEC, "health_url": "http://metadata.google.internal/"}, 422,
     "body.spec.health_url"),
])
def test_a_tenant_may_only_pick_what_the_admin_offers(
    clients: dict[str, TestClient], spec: dict[str, Any], status: int, field: str | None,
) -> None:
    refused = create(clients["p1"], spec=spec)
    assert refused.status_code == status, refused.text
    if field is not None:
        assert refused.json()["errors"][0]["field"] == field
    # the same body from staff (raw XML, any bridge, any URL) is accepted
    assert create(clients["operator"], spec=spec).status_code == 201


def test_a_tenant_cannot_learn_which_hosts_exist(clients: dict[str, TestClient]) -> None:
    answers = [create(clients["p1"], host=name) for name in ("h1", "nohost")]
    assert [a.status_code for a in answers] == [403, 403]
    assert answers[0].json()["detail"] == answers[1].json()["detail"]
    mine = create(clients["p1"]).json()["id"]
    moved = [clients["p1"].patch(f"/v1/instances/{mine}", json={"host": name})
             for name in ("h1", "nohost")]
    assert [m.status_code for m in moved] == [403, 403]
    act = clients["p1"].post(f"/v1/instances/{mine}/actions",
                             json={"action": "evacuate", "host": "h1"})
    assert act.status_code == 403, act.text


def test_an_id_clash_does_not_reveal_another_projects_instance(
    clients: dict[str, TestClient],
) -> None:
    assert create(clients["p2"], id="secret-db").status_code == 201
    assert create(clients["p1"], id="mine").status_code == 201
    theirs = create(clients["p1"], id="secret-db")
    own = create(clients["p1"], id="mine")
    assert theirs.status_code == own.status_code == 409
    assert theirs.json()["detail"].replace("secret-db", "X") == \
        own.json()["detail"].replace("mine", "X")
    assert "exist" not in theirs.json()["detail"]


def test_tenant_policies_are_capped_and_exec_probes_allow_listed(
    clients: dict[str, TestClient],
) -> None:
    p1 = clients["p1"]
    high = create(p1, policy={"priority": 601})
    assert high.status_code == 422 and high.json()["errors"][0]["field"] == \
        "body.policy.priority"
    assert create(p1, policy={"priority": 600}).status_code == 201
    assert create(clients["admin"], policy={"priority": 1000}).status_code == 201
    probe = {"kind": "exec", "target": "rm -rf /", "interval_s": 10, "timeout_s": 2}
    assert create(p1, policy={"probes": [probe]}).status_code == 403
    assert create(p1, policy={"probes": [{**probe, "target": "/bin/app-check"}]}
                  ).status_code == 201
    http = {"kind": "http", "target": "http://169.254.169.254/", "interval_s": 10}
    bad = create(p1, policy={"probes": [http]})
    assert bad.status_code == 422, bad.text
    assert bad.json()["errors"][0]["field"] == "body.policy.probes[0].target"


def test_a_tenant_may_edit_around_what_staff_set(clients: dict[str, TestClient]) -> None:
    made = create(clients["admin"], project="p1", host="h1", spec={"xml": "<domain/>"},
                  policy={"priority": 1000})
    iid = made.json()["id"]
    renamed = clients["p1"].patch(f"/v1/instances/{iid}", json={"name": "renamed"})
    assert renamed.status_code == 200, renamed.text
    raised = clients["p1"].patch(f"/v1/instances/{iid}", json={"spec": {"xml": "<domain/>"}})
    assert raised.status_code == 200  # unchanged: still the admin's choice
    swapped = clients["p1"].patch(f"/v1/instances/{iid}", json={"spec": {"xml": "<domain x/>"}})
    assert swapped.status_code == 403
