#!/usr/bin/env python3
"""The dashboard screenshots in docs/images/, taken during `vmha demo`.

Runs `vmha demo --keep --dir DIR` (the real lab: 3 hosts with BMCs, 4 QEMU
guests, the host carrying the most VMs powered off), logs a headless
Debian chromium (driven by Playwright, as tests/web do) in to the demo's
dashboard as soon as its controller answers, and takes, without ever
reloading the cluster page:

- `demo-down.png`: the first moment the page shows the powered-off host
  down (usually `failed`: the demo's BMC fast path confirms the power-off
  at once);
- `dashboard-failure.png`: the host fenced and its VMs being moved
  (`recovering`; the first picture again if the page never showed it);
- `demo-recovered.png`: the host recovered, its VMs on their new hosts;
- `job-timeline.png`: that host recovery's timeline page, once the job is
  done.

Every picture goes to OUT/ (build/demo-screenshots/); with
`--docs`, `dashboard-failure.png` and `job-timeline.png` are also copied to
docs/images/. The lab is torn down at the end (`vmha lab down`), also on
failure. Needs root (the lab) and the lab lock, which `vmha demo` takes
itself; under `flock /tmp/vmha-lab.lock` set VMHA_LAB_LOCKED=1.

    sudo .venv/bin/python scripts/demo_screenshots.py --docs

Not a test: what it checks (the page, never reloaded, saw the host failed
and fenced) only decides whether the pictures are the ones asked for; it
exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]  # as tests/web/webkit.py: root, no GPU, no outside network
VIEWPORT: Any = {"width": 1400, "height": 1000}
ANY_HOST_IN = '[data-host][data-state="{}"]'


def controller(lab_dir: Path, demo: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    """The demo lab's controller URL and token, once its API answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if demo.poll() is not None:
            raise SystemExit(f"vmha demo ended (exit {demo.returncode}) before its "
                             "controller answered; see its log")
        try:
            ctl = json.loads((lab_dir / "lab.json").read_text())["controller"]
        except (FileNotFoundError, ValueError, KeyError):
            ctl = {}
        if ctl.get("url"):
            try:
                if httpx.get(ctl["url"] + "/readyz", timeout=2).status_code == 200:
                    return dict(ctl)
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    raise SystemExit(f"the demo's controller did not answer within {timeout_s:g} s")


def shoot(page: Any, out: Path, name: str) -> Path:
    path = out / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot {path}", flush=True)
    return path


def host_down(page: Any, states: tuple[str, ...], timeout_s: float) -> str:
    """Wait until some host card shows one of `states`; which host."""
    selector = ", ".join(ANY_HOST_IN.format(s) for s in states)
    found = page.wait_for_selector(selector, timeout=timeout_s * 1000)
    return str(found.get_attribute("data-host"))


# Every state each host card passed through, in order, as the page saw them
# (several changes in one task reach the observer together: each record's
# old value is the state before it, so none is lost).
RECORD_STATES = """
window.__states = {};
window.__notReloaded = true;
const push = (host, st) => {
  const seen = (window.__states[host] = window.__states[host] || []);
  if (st && seen[seen.length - 1] !== st) seen.push(st);
};
for (const card of document.querySelectorAll('[data-host]')) push(card.dataset.host,
                                                                  card.dataset.state);
new MutationObserver((records) => {
  const touched = new Set();
  for (const r of records) {
    if (r.type !== "attributes" || !r.target.dataset.host) continue;
    push(r.target.dataset.host, r.oldValue);
    touched.add(r.target);
  }
  for (const card of touched) push(card.dataset.host, card.dataset.state);
}).observe(document.body, {subtree: true, attributes: true, attributeOldValue: true,
                           attributeFilter: ["data-state"]});
"""
DOWN = ("failed", "fencing", "fenced", "recovering")


def take(url: str, token: str, out: Path) -> dict[str, Path]:
    from playwright.sync_api import sync_playwright

    shots: dict[str, Path] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.goto(url + "/")
            page.get_by_label("API token").fill(token)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(url + "/")
            page.wait_for_selector("[data-live-status]:has-text('Live')")
            page.evaluate(RECORD_STATES)
            late = {h: st[-1] for h, st in page.evaluate("window.__states").items()
                    if st[-1] in (*DOWN, "recovered")}
            if late:
                raise SystemExit(f"logged in too late: the demo's failure began ({late})")
            print("logged in to the dashboard; waiting for the power-off", flush=True)
            host = host_down(page, DOWN, 600)  # the VMs boot first
            shots["down"] = shoot(page, out, "demo-down.png")
            # then fenced and its VMs being moved (a few seconds with the lab's guests)
            page.wait_for_selector(f'[data-host="{host}"][data-state="recovering"], '
                                   f'[data-host="{host}"][data-state="recovered"]',
                                   timeout=120_000)
            if page.locator(f'[data-host="{host}"][data-state="recovering"]').count():
                shots["failure"] = shoot(page, out, "dashboard-failure.png")
            else:  # the moves ended before the page was looked at again
                shots["failure"] = Path(shutil.copy(shots["down"], out / "dashboard-failure.png"))
            page.wait_for_selector(f'[data-host="{host}"][data-state="recovered"]',
                                   timeout=120_000)
            shots["recovered"] = shoot(page, out, "demo-recovered.png")
            states = page.evaluate("window.__states")[host]
            print(f"{host} went {' -> '.join(states)} on the page", flush=True)
            if page.evaluate("window.__notReloaded") is not True:
                raise SystemExit("the cluster page was reloaded: the pictures are not live")
            if "failed" not in states or "fenced" not in states:
                raise SystemExit(f"{host} was not seen failed and fenced: {states}")
            shots["timeline"] = shoot_timeline(page, url, token, host, out)
        finally:
            browser.close()
    return shots


def shoot_timeline(page: Any, url: str, token: str, host: str, out: Path) -> Path:
    """The host recovery's job page, once the job is done."""
    api = httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {token}"})
    job = api.get("/v1/jobs", params={"kind": "host_recovery", "subject": host}).json()
    job = job["items"][0]
    for _ in range(120):
        if job["state"] == "done":
            break
        time.sleep(1)
        job = api.get(f"/v1/jobs/{job['id']}").json()
    page.goto(f"{url}/ui/jobs/{job['id']}")
    return shoot(page, out, "job-timeline.png")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=ROOT / "build" / "demo-screenshots" / "demo",
                    help="the demo's directory (its lab is DIR/lab)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "demo-screenshots")
    ap.add_argument("--docs", action="store_true",
                    help="also copy dashboard-failure.png and job-timeline.png to docs/images/")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    lab_dir = (args.dir / "lab").resolve()
    vmha = str(Path(sys.executable).parent / "vmha")
    log = open(args.out / "demo.log", "wb")  # noqa: SIM115 (the demo's whole run)
    demo = subprocess.Popen([vmha, "demo", "--keep", "--dir", str(args.dir)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        ctl = controller(lab_dir, demo, 600)
        print(f"demo controller at {ctl['url']}; waiting for its power-off", flush=True)
        shots = take(ctl["url"], ctl["token"], args.out)
        demo.wait(timeout=600)  # its guest faults and summary
    finally:
        if demo.poll() is None:
            demo.terminate()
            demo.wait(timeout=60)
        subprocess.run([vmha, "lab", "down", "--dir", str(lab_dir)], check=False)
        log.close()
    print(f"vmha demo exited {demo.returncode}; its output is in {args.out / 'demo.log'}")
    if args.docs:
        for key in ("failure", "timeline"):
            shutil.copy(shots[key], ROOT / "docs" / "images" / shots[key].name)
            print(f"copied {shots[key].name} to docs/images/")
    return demo.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
