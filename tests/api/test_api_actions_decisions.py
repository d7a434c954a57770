"""Instance actions and custom decisions through the API, on a real SQLite
store, with the Engine running on the fake cloud behind the inbox (the
engine parts are the real ones; only the hypervisor is a fake). One test
client (one event loop, the engine's) with a token per role."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from vmha.adapters.cloud.fake import FakeCloud
from vmha.adapters.peer.fake import FakePeerProber
from vmha.adapters.system import SequentialIds
from vmha.api import create_app
from vmha.config import Settings
from vmha.controller.inbox import Inbox
from vmha.domain.commands import InstanceEvent
from vmha.domain.model import HostState
from vmha.engine import ControllerSettings, Engine
from vmha.ports import Store

TOKENS = {"admin": "tok-admin", "operator": "tok-operator", "viewer": "tok-viewer",
          "project:p1": "tok-p1", "project:p2": "tok-p2"}


def make_settings() -> Settings:
    tokens = [{"token": secret, "role": role, "name": f"{role}-token"}
              for role, secret in TOKENS.items()]
    return Settings.model_validate({"api": {"tokens": tokens}})


class ManualClock:
    """Time moves only when the test moves it; sleepers wait for that."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        until = self.t + seconds
        while self.t < until:
            await asyncio.sleep(0.002)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def world(store: Store, clock: ManualClock) -> Iterator[tuple[FastAPI, Inbox, FakeCloud]]:
    ids = SequentialIds("job")
    app = create_app(make_settings(), store, clock, ids)
    cloud = FakeCloud()
    inbox = Inbox()
    engine = Engine(ControllerSettings(), store, clock, ids, {}, cloud, FakePeerProber(),
                    inbox=inbox)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(engine.run())
        yield
        await engine.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app.router.lifespan_context = lifespan
    app.state.vmha.inbox = inbox
    yield app, inbox, cloud


class As:
    """Requests with one role's token, through the shared test client."""

    def __init__(self, client: TestClient, role: str) -> None:
        self.client = client
        self.portal = client.portal
        self.headers = {"Authorization": f"Bearer {TOKENS[role]}"}

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.client.get(url, headers=self.headers, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Any:
        return self.client.post(url, headers=self.headers, **kwargs)


@contextmanager
def clients(app: FastAPI, *roles: str) -> Iterator[list[As]]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield [As(client, role) for role in roles]


def seed(admin: As, policy: dict[str, Any] | None = None) -> None:
    assert admin.post("/v1/segments", json={"name": "s1"}).status_code == 201
    for name in ("h1", "h2"):
        body = {"name": name, "segment": "s1",
                "capacity": {"vcpus": 8, "ram_mb": 16384, "disk_gb": 100}}
        assert admin.post("/v1/hosts", json=body).status_code == 201
    for iid, project in (("a1", "p1"), ("b1", "p2")):
        body = {"id": iid, "name": f"vm-{iid}", "host": "h1", "project": project,
                "policy": policy or {}}
        assert admin.post("/v1/instances", json=body).status_code == 201


def wait_job(c: As, job_id: str) -> dict[str, Any]:
    for _ in range(2000):  # 10 s or more: a busy machine runs the job slowly
        job: dict[str, Any] = c.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return job
        c.portal.call(asyncio.sleep, 0.005)
    raise AssertionError(f"job {job_id} did not finish")


def test_actions_run_as_jobs_with_roles_projects_and_safety(world: Any) -> None:
    app, _inbox, cloud = world
    with clients(app, "admin", "project:p1", "viewer", "operator") as (admin, p1, viewer,
                                                                         operator):
        seed(admin)
        r = p1.post("/v1/instances/a1/actions", json={"action": "restart"})
        assert r.status_code == 202, r.text
        assert r.json()["kind"] == "action"
        done = wait_job(admin, r.json()["id"])
        assert done["state"] == "done" and done["reason"] == "restarted on h1"
        # the project reads the job its action started, and finds it in its list
        assert p1.get(f"/v1/jobs/{done['id']}").json() == done
        assert [j["id"] for j in p1.get("/v1/jobs").json()["items"]] == [done["id"]]
        assert ("stop", "a1", "h1") in cloud.calls and ("start", "a1", "h1") in cloud.calls
        types = [e["type"] for e in admin.get("/v1/events", params={"since": 0}).json()["items"]]
        assert {"job.started", "job.step", "job.done", "instance.restarted"} <= set(types)
        # and the project follows its job to the end in its own events
        mine = [(e["type"], e["subject"]) for e in
                p1.get("/v1/events", params={"since": 0, "type": "job.*"}).json()["items"]]
        assert ("job.done", done["id"]) in mine and ("job.started", done["id"]) in mine

        # projects and roles
        assert p1.post("/v1/instances/b1/actions", json={"action": "stop"}).status_code == 404
        assert viewer.post("/v1/instances/a1/actions",
                           json={"action": "stop"}).status_code == 403
        bad = operator.post("/v1/instances/a1/actions", json={"action": "explode"})
        assert bad.status_code == 422

        # safety: no evacuation off a host that is not fenced; no rebuild here
        ev = operator.post("/v1/instances/a1/actions", json={"action": "evacuate"})
        assert ev.status_code == 409
        assert "h1 of instance a1 is up and not fenced" in ev.json()["detail"]
        rb = operator.post("/v1/instances/a1/actions", json={"action": "rebuild"})
        assert rb.status_code == 409
        assert "rebuild needs the OpenStack adapter" in rb.json()["detail"]
        assert cloud.count("start", "a1") == 1  # nothing else started it


def test_evacuate_after_fence_moves_the_instance(world: Any, store: Store) -> None:
    app, _inbox, cloud = world
    with clients(app, "admin") as (admin,):
        seed(admin)
        h1 = store.get_host("h1")
        store.update_host(replace(h1, state=HostState.FENCED))  # as a recovery job leaves it
        r = admin.post("/v1/instances/a1/actions", json={"action": "evacuate", "host": "h2"})
        assert r.status_code == 202, r.text
        assert wait_job(admin, r.json()["id"])["state"] == "done"
        inst = admin.get("/v1/instances/a1").json()
        assert inst["host"] == "h2" and inst["state"] == "running"
        assert cloud.running["a1"] == {"h2"}


def decision_token(admin: As) -> str:
    events = admin.get("/v1/events", params={"type": "decision.requested"}).json()["items"]
    return str(events[-1]["payload"]["token"])


def test_decisions_answered_in_time_late_and_by_others(world: Any, clock: ManualClock) -> None:
    app, inbox, cloud = world
    policy = {"guest": "custom", "custom_deadline_s": 60}
    with clients(app, "admin", "project:p1", "project:p2", "viewer") as (admin, p1, p2,
                                                                           viewer):
        seed(admin, policy)
        admin.portal.call(inbox.ask, InstanceEvent("a1", "crashed", "test"))
        token = decision_token(admin)
        assert token.startswith("job-") and "." in token
        ans = {"action": "restart"}
        assert p2.post(f"/v1/decisions/{token}", json=ans).status_code == 404
        assert viewer.post(f"/v1/decisions/{token}", json=ans).status_code == 403
        assert p1.post("/v1/decisions/job-000001.wrong", json=ans).status_code == 404
        assert p1.post(f"/v1/decisions/{token}",
                       json={"action": "evacuate"}).status_code == 422
        ok = p1.post(f"/v1/decisions/{token}", json=ans)
        assert ok.status_code == 202, ok.text
        assert ok.json()["decision"]["state"] == "done"
        decision_id = ok.json()["decision"]["id"]
        assert p1.get(f"/v1/jobs/{decision_id}").json()["state"] == "done"
        assert p2.get(f"/v1/jobs/{decision_id}").status_code == 404
        assert wait_job(admin, ok.json()["job"]["id"])["reason"] == "restarted on h1"
        again = p1.post(f"/v1/decisions/{token}", json={"action": "stop"})
        assert again.status_code == 409 and "already answered" in again.json()["detail"]

        # a second crash, answered after the deadline: 409 and the fallback ran
        admin.portal.call(inbox.ask, InstanceEvent("a1", "crashed", "again"))
        late_token = decision_token(admin)
        clock.t += 61
        late = p1.post(f"/v1/decisions/{late_token}", json={"action": "stop"})
        assert late.status_code == 409
        detail = late.json()["detail"]
        assert "timed out before this answer" in detail and "'restart' was done" in detail
        types = [e["type"] for e in admin.get("/v1/events").json()["items"]]
        assert "decision.timed_out" in types
        # the fallback's restart runs as an action job of its own: once it ended,
        fallback = admin.get(f"/v1/jobs/{late_token.split('.')[0]}").json()["data"]
        assert wait_job(admin, fallback["action_job"])["state"] == "done"
        assert cloud.count("stop", "a1") == 2  # two restarts (stop + start), never a stop action
