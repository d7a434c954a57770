"""The dashboard in a real headless Chromium against a real `vmha serve`:
log in, see the cluster, follow changes live without reloading, see a
paused segment, act with a confirmation, and a project token seeing only
its own instances. Screenshots go to build/test-artifacts/web/.

(The lab e2e, tests/e2e/test_lab_operator_view.py, watches a real host
power-off in the same browser.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from vmha.adapters.store import open_store
from vmha.domain.model import Event, HostState, Severity, SubjectKind
from webkit import Serve, artifacts, chromium, require_chromium

# how long a page may take to show a change: the engine behind it may still be
# taking the lead after a restart, and CI machines are loaded
WAIT_MS = 30_000

TOKENS = {"admin": "web-admin-token-1", "operator": "web-operator-token-1",
          "viewer": "web-viewer-token-1", "project:p1": "web-p1-token-1",
          "agent": "web-agent-token-1"}


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    require_chromium()
    server = Serve(tmp_path_factory.mktemp("web"), TOKENS)
    server.start()
    api = httpx.Client(base_url=server.url,
                       headers={"Authorization": f"Bearer {TOKENS['admin']}"})
    cap = {"vcpus": 8, "ram_mb": 8192, "disk_gb": 50}
    for path, body in [
        ("/v1/segments", {"name": "rack1"}), ("/v1/segments", {"name": "rack2"}),
        ("/v1/hosts", {"name": "cn1", "segment": "rack1", "capacity": cap}),
        ("/v1/hosts", {"name": "cn2", "segment": "rack1", "capacity": cap}),
        ("/v1/hosts", {"name": "cn3", "segment": "rack2", "capacity": cap}),
        ("/v1/instances", {"id": "web1", "name": "web1", "host": "cn1", "project": "p1",
                           "resources": {"vcpus": 1, "ram_mb": 1024},
                           "policy": {"priority": 800}}),
        ("/v1/instances", {"id": "db1", "name": "db1", "host": "cn2", "project": "p2",
                           "resources": {"vcpus": 2, "ram_mb": 2048}}),
    ]:
        assert api.post(path, json=body).status_code == 201
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(serve: Serve) -> Iterator[Any]:
    with chromium() as b:
        yield b


def login(browser: Any, serve: Serve, role: str) -> Any:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(serve.url + "/")
    assert "/ui/login" in page.url
    page.get_by_label("API token").fill(TOKENS[role])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(serve.url + "/")
    return page


def test_login_keeps_the_token_in_session_storage_only(browser: Any, serve: Serve) -> None:
    page = login(browser, serve, "viewer")
    assert TOKENS["viewer"] not in page.url
    assert page.evaluate("sessionStorage.getItem('vmha.token')") == TOKENS["viewer"]
    cookies = page.context.cookies()
    assert all(TOKENS["viewer"] not in c["value"] for c in cookies)
    assert [c["httpOnly"] for c in cookies] == [True]
    page.screenshot(path=str(artifacts() / "login-cluster.png"), full_page=True)
    page.context.close()


def test_live_updates_without_reloading(browser: Any, serve: Serve, tmp_path: Path) -> None:
    page = login(browser, serve, "operator")
    page.evaluate("window.__notReloaded = true")
    page.wait_for_selector("[data-live-status]:has-text('Live')")
    assert page.locator('[data-host="cn1"]').get_attribute("data-state") == "up"
    api = httpx.Client(base_url=serve.url, headers={"Authorization":
                                                    f"Bearer {TOKENS['admin']}"})
    api.post("/v1/hosts/cn1/maintenance", json={"enabled": True, "reason": "firmware"})
    page.wait_for_selector('[data-host="cn1"][data-state="maintenance"]', timeout=WAIT_MS)
    assert page.evaluate("window.__notReloaded") is True
    assert "host.maintenance_on cn1" in page.locator("[data-live-status]").inner_text()

    store = open_store(f"sqlite:///{serve.db}")
    store.append_events([Event(type="segment.recovery_paused", subject="rack1", time=1.0,
                               subject_kind=SubjectKind.SEGMENT, severity=Severity.CRITICAL,
                               payload={"segment": "rack1",
                                        "reason": "2 of 2 hosts of segment rack1 failed"})])
    store.close()
    banner = page.get_by_role("alert").filter(has_text="Recovery paused in segment rack1")
    banner.wait_for(timeout=WAIT_MS)
    assert page.get_by_role("button", name="Resume recovery in rack1").is_visible()
    assert page.evaluate("window.__notReloaded") is True
    page.screenshot(path=str(artifacts() / "paused-segment.png"), full_page=True)
    api.post("/v1/hosts/cn1/maintenance", json={"enabled": False})
    page.context.close()


def test_actions_ask_for_confirmation_and_report_refusals(browser: Any, serve: Serve) -> None:
    page = login(browser, serve, "operator")
    page.goto(serve.url + "/ui/instances/web1")
    dialogs: list[str] = []

    def answer(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss() if len(dialogs) == 1 else dialog.accept()

    page.on("dialog", answer)
    page.get_by_role("button", name="Evacuate").click()  # dismissed: nothing sent
    page.get_by_role("button", name="Evacuate").click()  # accepted: sent, refused (host up)
    status = page.locator("[data-live-status]")
    status.filter(has_text="Refused (409)").wait_for(timeout=WAIT_MS)
    assert dialogs == ["evacuate instance web1?"] * 2
    assert "not fenced" in status.inner_text() or "fenced" in status.inner_text()
    page.screenshot(path=str(artifacts() / "instance-page.png"), full_page=True)
    page.context.close()


def test_a_project_token_sees_only_its_instances(browser: Any, serve: Serve) -> None:
    page = login(browser, serve, "project:p1")
    body = page.locator("main").inner_text()
    assert "web1" in body and "db1" not in body and "cn3" not in body
    page.goto(serve.url + "/ui/instances/db1")
    assert "does not exist" in page.locator("main").inner_text()
    page.screenshot(path=str(artifacts() / "project-view.png"), full_page=True)
    page.context.close()


def test_an_agent_token_cannot_log_in(browser: Any, serve: Serve) -> None:
    page = browser.new_page()
    page.goto(serve.url + "/ui/login")
    page.get_by_label("API token").fill(TOKENS["agent"])
    page.get_by_role("button", name="Log in").click()
    assert "not valid for the dashboard" in page.get_by_role("alert").inner_text()
    page.close()


def test_resume_a_paused_segment(browser: Any, serve: Serve) -> None:
    """A real pause (two of rack1's two hosts failed, the guard's event),
    restored by the engine at start; the operator resumes it from the
    banner and the banner goes away without a reload. Runs last: it leaves
    rack1's hosts failed."""
    serve.stop()
    store = open_store(f"sqlite:///{serve.db}")
    for name in ("cn1", "cn2"):
        host = store.get_host(name)
        store.update_host(replace(host, state=HostState.FAILED, state_reason="test"))
    store.append_events([Event(type="segment.recovery_paused", subject="rack1", time=2.0,
                               subject_kind=SubjectKind.SEGMENT, severity=Severity.CRITICAL,
                               payload={"segment": "rack1",
                                        "reason": "2 of 2 hosts of segment rack1 failed"})])
    store.close()
    serve.start()
    page = login(browser, serve, "operator")
    page.evaluate("window.__notReloaded = true")
    page.wait_for_selector("[data-live-status]:has-text('Live')")
    page.on("dialog", lambda dialog: dialog.accept())
    # every text the status line shows: the events that follow the resume
    # (the failed hosts' jobs) may replace "resumed" before a poll sees it
    page.evaluate("""() => {
      const el = document.querySelector("[data-live-status]");
      window.__said = [];
      new MutationObserver(() => window.__said.push(el.textContent))
        .observe(el, {childList: true, characterData: true, subtree: true});
    }""")
    page.get_by_role("button", name="Resume recovery in rack1").click()
    said = "() => window.__said.some(t => t.includes('resumed'))"  # no eval under the CSP
    deadline = time.monotonic() + WAIT_MS / 1000
    while not page.evaluate(said):
        assert time.monotonic() < deadline, f"never said resumed: {page.evaluate('window.__said')}"
        page.wait_for_timeout(100)
    page.get_by_role("alert").filter(has_text="Recovery paused").wait_for(
        state="detached", timeout=WAIT_MS)
    assert page.evaluate("window.__notReloaded") is True
    events = httpx.get(f"{serve.url}/v1/events", params={"type": "segment.recovery_resumed"},
                       headers={"Authorization": f"Bearer {TOKENS['viewer']}"}).json()
    assert events["items"][-1]["payload"]["reason"] == "resumed by operator operator-user"
    page.context.close()
