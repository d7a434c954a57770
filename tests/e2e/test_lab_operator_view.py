"""The operator's view of a real failure, end to end, on the lab.

One lab (3 hosts with BMC emulators, the controller in libvirt mode, three
QEMU guests on host1). Before anything fails, `POST /v1/whatif` predicts
where host1's guests go. A headless Chromium is logged in to the
dashboard; host1 is powered off. The page, never reloaded, shows host1
turn failed -> fenced (-> recovering -> recovered) and the guests appear
on their new hosts. Then:
- the placement done equals the placement predicted;
- `/metrics` has the recovery histograms filled;
- the job's timeline page shows its phases (force-down and app answering included).
Screenshots go to build/test-artifacts/web/ (lab-*.png).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vmha.lab import faults, state, vms
from vmha.lab import lab as lab_ops
from webkit import artifacts, chromium, require_chromium

pytestmark = pytest.mark.slow

POLICIES = [{"host": "auto", "priority": 900}, {"host": "auto", "priority": 500},
            {"host": "auto", "priority": 100}]
SETTINGS = lab_ops.LabSettings(
    hosts=3, heartbeat_interval_s=0.5, controller_port=8785, heartbeat_port=8786,
    controller={"host_return_healthy_s": 3.0, "verify_poll_s": 0.5, "job_poll_s": 0.5,
                "fence_poll_s": 0.5},
)
WARM_UP_S = 15.0  # heartbeat history for the detector (docs: LAB-NOTES, detector warm-up)
RECORD_STATES = """
window.__states = [];
window.__notReloaded = true;
const push = (st) => {
  if (st && window.__states[window.__states.length - 1] !== st) window.__states.push(st);
};
const card = () => document.querySelector('[data-host="host1"]');
// Several changes in one task reach the observer together: each attribute
// record's old value is the state before it, so none is lost.
new MutationObserver((records) => {
  for (const r of records) {
    if (r.type === "attributes" && r.target.dataset.host === "host1") push(r.oldValue);
  }
  push(card() && card().dataset.state);
}).observe(document.body, {subtree: true, childList: true, attributes: true,
                           attributeOldValue: true, attributeFilter: ["data-state"]});
push(card().dataset.state);
"""

def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, lab_ready: None) -> Iterator[dict[str, Any]]:
    require_chromium()
    lab_dir = tmp_path_factory.mktemp("oplab")
    try:
        st = lab_ops.up(lab_dir, SETTINGS)
        started = time.monotonic()
        ctl = st["controller"]
        for policy in POLICIES:
            vms.create(lab_dir, 1, [policy], hosts=["host1"], wait=False)
        vms.wait_running(lab_dir, ["vm1", "vm2", "vm3"])
        time.sleep(max(0.0, WARM_UP_S - (time.monotonic() - started)))
        ids = {n: v["id"] for n, v in state.load(lab_dir)["vms"].items()}
        yield {"dir": lab_dir, "url": ctl["url"], "token": ctl["token"], "ids": ids}
    finally:
        faults.down(lab_dir)


def test_power_off_seen_live_predicted_by_whatif_and_measured(lab: dict[str, Any]) -> None:
    api = httpx.Client(base_url=lab["url"], timeout=10,
                       headers={"Authorization": f"Bearer {lab['token']}"})
    predicted = api.post("/v1/whatif", json={"fail": ["host1"]}).json()
    assert predicted["absorbed"], predicted
    expected = {o["name"]: o["target"] for o in predicted["instances"]}
    assert set(expected) == {"vm1", "vm2", "vm3"} and "host1" not in expected.values()

    with chromium() as browser:
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.goto(lab["url"] + "/")
        page.get_by_label("API token").fill(lab["token"])
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(lab["url"] + "/")
        for host in ("host1", "host2", "host3"):
            assert page.locator(f'[data-host="{host}"]').get_attribute("data-state") == "up"
        page.wait_for_selector("[data-live-status]:has-text('Live')")
        page.evaluate(RECORD_STATES)
        page.screenshot(path=str(artifacts() / "lab-before.png"), full_page=True)

        faults.fail(lab["dir"], "host1", "power-off")
        page.wait_for_selector('[data-host="host1"][data-state="fenced"], '
                               '[data-host="host1"][data-state="recovering"], '
                               '[data-host="host1"][data-state="recovered"]', timeout=120_000)
        page.screenshot(path=str(artifacts() / "lab-failure.png"), full_page=True)
        for name, target in expected.items():  # the guests appear on their new hosts
            page.wait_for_selector(f'[data-host="{target}"] [data-instance="{name}"]',
                                   timeout=180_000)
        page.wait_for_selector('[data-host="host1"][data-state="recovered"]', timeout=120_000)
        states = page.evaluate("window.__states")
        assert page.evaluate("window.__notReloaded") is True
        assert "failed" in states and "fenced" in states, states
        assert states.index("failed") < states.index("fenced"), states
        page.screenshot(path=str(artifacts() / "lab-recovered.png"), full_page=True)

        actual = {n: api.get(f"/v1/instances/{iid}").json()["host"]
                  for n, iid in lab["ids"].items()}
        assert actual == expected  # what-if agreed with what happened

        job = api.get("/v1/jobs", params={"kind": "host_recovery", "subject": "host1"}).json()
        job_id = job["items"][0]["id"]
        page.goto(f"{lab['url']}/ui/jobs/{job_id}")
        # the lab's guests have a health URL: the libvirt cloud's "running" waits for
        # the app, so their verify steps are the app answering phase
        for phase in ("detect", "fence", "force_down", "dispatch", "app_answering"):
            assert page.locator(f'[data-phase="{phase}"]').count() == 1, phase
        page.screenshot(path=str(artifacts() / "lab-job-timeline.png"), full_page=True)

    def histograms() -> dict[str, float] | None:
        text = api.get("/metrics").text
        got = {s.name: s.value for f in text_string_to_metric_families(text)
               for s in f.samples if not s.labels}
        counts = [got.get(f"vmha_recovery_{p}_seconds_count", 0)
                  for p in ("detect", "fence", "dispatch", "verify", "total")]
        return got if all(c >= 1 for c in counts) else None

    got = wait_for(histograms, 60, "recovery histograms in /metrics")
    # seconds, not ms: the one recovery ended within this test's waits (how
    # fast it is: bench/mttr_lab.py)
    assert 0 < got["vmha_recovery_total_seconds_sum"] < 600
