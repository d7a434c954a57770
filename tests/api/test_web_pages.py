"""The dashboard's pages without a browser: login, sessions, role rules,
every page rendering from the store, security headers. The real browser
(Chromium, live updates, actions) is tests/web."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from vmha.domain.jobs import ActionData, HostRecoveryData, Move, MoveState
from vmha.domain.model import (
    Event,
    Job,
    JobKind,
    JobState,
    JobStep,
    Severity,
    StepState,
    SubjectKind,
)
from vmha.domain.timeline import APP_ANSWERS
from vmha.ports import Store
from vmha.web import install
from vmha.web.sessions import COOKIE

ClientFor = Callable[[str | None], TestClient]
TOKENS = {"admin": "tok-admin", "operator": "tok-operator", "viewer": "tok-viewer",
          "project:p1": "tok-p1", "agent": "tok-agent"}


@pytest.fixture
def web(app: FastAPI, request: pytest.FixtureRequest) -> FastAPI:
    install(app)  # before the first request builds the app's middleware and handlers
    request.getfixturevalue("seeded")
    return app


def browser(app: FastAPI, role: str | None = None) -> TestClient:
    """A cookie-keeping client, logged in with `role`'s token when given."""
    client = TestClient(app, base_url="http://vmha.test", follow_redirects=False)
    if role is not None:
        r = client.post("/ui/login", data={"token": TOKENS[role], "next": "/"},
                        headers={"Origin": "http://vmha.test"})
        assert r.status_code == 303 and r.headers["location"] == "/", r.text
    return client


def test_pages_need_a_login_and_never_take_a_token_in_the_url(web: FastAPI) -> None:
    anon = browser(web)
    r = anon.get("/ui/events?subject=h1")
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/login?next=%2Fui%2Fevents%3Fsubject%3Dh1"
    page = anon.get("/ui/login")
    assert page.status_code == 200 and 'type="password"' in page.text
    assert 'method="post"' in page.text  # the token goes in the body, not the URL
    assert anon.get("/?token=tok-admin").status_code == 303  # a token in a URL is ignored


def test_login_sets_an_httponly_strict_session_cookie_not_the_token(web: FastAPI) -> None:
    client = TestClient(web, base_url="http://vmha.test", follow_redirects=False)
    r = client.post("/ui/login", data={"token": "tok-viewer", "next": "/ui/events"},
                    headers={"Origin": "http://vmha.test"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/events"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "tok-viewer" not in cookie
    assert client.get("/").status_code == 200
    client.post("/ui/logout", headers={"Origin": "http://vmha.test"})
    assert client.get("/").status_code == 303  # the session is gone server-side


def test_bad_tokens_agent_tokens_other_sites_and_open_redirects(web: FastAPI) -> None:
    client = TestClient(web, base_url="http://vmha.test", follow_redirects=False)
    bad = client.post("/ui/login", data={"token": "nope"}, headers={"Origin": "http://vmha.test"})
    assert bad.status_code == 401 and "not valid" in bad.text and COOKIE not in bad.headers.get(
        "set-cookie", "")
    agent = client.post("/ui/login", data={"token": "tok-agent"},
                        headers={"Origin": "http://vmha.test"})
    assert agent.status_code == 401
    forged = client.post("/ui/login", data={"token": "tok-admin"},
                         headers={"Origin": "http://evil.example"})
    assert forged.status_code == 403 and "set-cookie" not in forged.headers
    away = client.post("/ui/login", data={"token": "tok-admin", "next": "//evil.example/x"},
                       headers={"Origin": "http://vmha.test"})
    assert away.headers["location"] == "/"


def test_cluster_grid_shows_segments_hosts_and_instances(web: FastAPI, store: Store) -> None:
    page = browser(web, "viewer").get("/")
    assert page.status_code == 200
    for text in ("Segment seg-a", "Segment seg-b", 'data-host="h1"', "vm-a1", "vm-b1",
                 "host auto · guest auto · app notify · priority 900", "What if h1 fails?"):
        assert text in page.text, text
    assert "Resume recovery" not in page.text and "data-fence-ack" not in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["cache-control"] == "no-store"


def test_a_paused_segment_is_impossible_to_miss(web: FastAPI, store: Store) -> None:
    store.append_events([Event(type="segment.recovery_paused", subject="seg-a", time=1.0,
                               subject_kind=SubjectKind.SEGMENT, severity=Severity.CRITICAL,
                               payload={"segment": "seg-a", "reason": "2 of 2 hosts failed"})])
    viewer = browser(web, "viewer").get("/").text
    assert 'role="alert"' in viewer and "Recovery paused in segment seg-a" in viewer
    assert "2 of 2 hosts failed" in viewer and "data-resume" not in viewer
    operator = browser(web, "operator").get("/").text
    assert 'data-resume="seg-a"' in operator


def test_a_project_token_sees_only_its_instances(web: FastAPI, store: Store) -> None:
    store.create_job(Job("host-job", JobKind.HOST_RECOVERY, "h1", JobState.DONE,
                         data=HostRecoveryData(host="h1", instances={"a1": Move()})))
    store.create_job(Job("their-job", JobKind.ACTION, "b1", JobState.DONE,
                         data=ActionData(instance="b1", action="stop", project="p2")))
    store.create_job(Job("my-job", JobKind.ACTION, "a1", JobState.DONE,
                         data=ActionData(instance="a1", action="stop", project="p1")))
    p1 = browser(web, "project:p1")
    page = p1.get("/").text
    assert "vm-a1" in page and "vm-a2" in page and "vm-b1" not in page
    assert "Segment" not in page  # no hosts or segments for tenants
    assert p1.get("/ui/instances/b1").status_code == 404  # another project's: not revealed
    assert p1.get("/ui/instances/a1").status_code == 200
    # its instances' jobs only (as GET /v1/jobs/{id}); the others as if missing
    assert p1.get("/ui/jobs/my-job").status_code == 200
    for hidden in ("host-job", "their-job", "whatever"):
        assert p1.get(f"/ui/jobs/{hidden}").status_code == 404
    assert p1.get("/ui/whatif?fail=h1").status_code == 403


def test_instance_page_policy_budget_events_and_actions(web: FastAPI, store: Store) -> None:
    store.append_events([Event(type="instance.restarted", subject="a1", time=1_800_000_000.0,
                               project="p1", payload={"reason": "guest crashed"})])
    page = browser(web, "operator").get("/ui/instances/a1").text
    assert "segment seg-a&#39;s default policy gold" in page
    assert "<strong>1 of 3</strong> restarts used" in page
    assert "guest crashed" in page and 'data-action="evacuate"' in page
    assert 'data-action="restart"' not in browser(web, "viewer").get("/ui/instances/a1").text


def test_job_timeline_from_the_recorded_steps(web: FastAPI, store: Store) -> None:
    t0 = 1000.0
    done = StepState.DONE
    steps = (JobStep("fence:0:ipmi:off", done, t0 + 4, t0 + 5),
             JobStep("fence:0:ipmi:confirm", done, t0 + 5, t0 + 5.5),
             JobStep("disable_compute", done, t0 + 5.5, t0 + 5.75),
             JobStep("evacuate:a1@h2#1", done, t0 + 6, t0 + 7),
             JobStep("evacuate:a2@h3#1", done, t0 + 6, t0 + 7.5),
             JobStep("verify:a1@h2#1", done, t0 + 7, t0 + 12, f"running on h2; {APP_ANSWERS}"),
             JobStep("verify:a2@h3#1", done, t0 + 7.5, t0 + 9.5, "running on h3"))
    store.create_job(Job(id="j1", kind=JobKind.HOST_RECOVERY, subject="h1", state=JobState.DONE,
                         steps=steps, created_at=t0 + 3.5, updated_at=t0 + 12,
                         reason="recovering 1 instances of failed host h1",
                         data=HostRecoveryData("h1", last_seen=t0, instances={
                             "a1": Move(MoveState.DONE, "h2")})))
    page = browser(web, "viewer").get("/ui/jobs/j1").text
    for phase, label, took in (("detect", "detect", "3.5 s"), ("fence", "fence", "1.5 s"),
                               ("force_down", "force-down", "0.2 s"),
                               ("dispatch", "dispatch", "1.5 s"),
                               ("running", "running", "2.0 s"),
                               ("app_answering", "app answering", "5.0 s")):
        row = page.split(f'data-phase="{phase}"')[1].split("</tr>")[0]
        assert f">{label}</th>" in row and took in row, (phase, row)
    assert page.count("data-phase=") == 6
    assert "12.0 s from the last heartbeat" in page
    assert 'href="/ui/jobs/j1"' in browser(web, "viewer").get("/").text


def test_event_feed_filters_and_whatif_page(web: FastAPI, store: Store) -> None:
    store.append_events([
        Event(type="host.failed", subject="h1", time=5.0, severity=Severity.ERROR,
              subject_kind=SubjectKind.HOST, payload={"reason": "BMC says off"}),
        Event(type="instance.evacuated", subject="a1", time=6.0, project="p1",
              payload={"reason": "now running on h2"})])
    viewer = browser(web, "viewer")
    hosts_only = viewer.get("/ui/events?type=host.*").text
    assert "BMC says off" in hosts_only and "now running on h2" not in hosts_only
    errors = viewer.get("/ui/events?severity=error").text
    assert "BMC says off" in errors and "now running on h2" not in errors
    mine = browser(web, "project:p1").get("/ui/events").text
    assert "now running on h2" in mine and "BMC says off" not in mine
    whatif = viewer.get("/ui/whatif?fail=h1").text
    assert 'data-absorbed="yes"' in whatif and "vm-a1" in whatif and ">h2<" in whatif
    assert viewer.get("/ui/whatif?fail=nope").status_code == 404


def test_the_api_keeps_its_problem_answers(web: FastAPI, client_for: ClientFor) -> None:
    r = client_for("viewer").get("/v1/instances/nope")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert browser(web).get("/ui/static/dashboard.js").status_code == 200
