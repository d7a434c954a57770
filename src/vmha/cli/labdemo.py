"""`vmha demo` on the real lab: keep my VMs running, narrated.

Brings up a lab of 3 hosts (network + PID namespaces, each with its agent,
its own embedded libvirt and its IPMI/Redfish BMC emulators) and a
controller, starts 4 protected QEMU guests with different policies, then:
1. powers off the host carrying the most VMs and narrates, from the
   controller's events, each VM detected -> fenced -> restarted elsewhere
   -> its application answering again at the same address, with times;
2. panics one guest (pvpanic -> restart) and hangs another (watchdog ->
   reset, or only `instance.watchdog` for a `notify` policy);
3. prints a summary table of every failure and tears the lab down
   (`--keep` leaves it running and prints the dashboard and API URLs and
   the token).

Events are read from the API (`GET /v1/events?since=`), the applications
are probed over HTTP from the root namespace. Called by `vmha demo`.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from vmha.lab import faults, vms
from vmha.lab import lab as lab_ops
from vmha.lab.controller import api_request

console = Console(highlight=False)

# vm name -> (host, policy): host1 carries two VMs and is the one powered off.
DEMO_VMS: Mapping[str, tuple[str, Mapping[str, Any]]] = {
    "vm1": ("host1", {"host": "auto+notify", "guest": "auto", "priority": 900,
                      "watchdog_action": "reset"}),
    "vm2": ("host1", {"host": "auto", "guest": "auto", "priority": 500}),
    "vm3": ("host2", {"host": "auto", "guest": "notify", "priority": 300,
                      "watchdog_action": "notify"}),
    "vm4": ("host3", {"host": "auto", "guest": "auto", "priority": 100,
                      "watchdog_action": "reset"}),
}
LAB_CONTROLLER = {"restart_backoff_s": 2.0, "host_return_healthy_s": 5.0,
                  "verify_poll_s": 0.5, "fence_poll_s": 0.5, "job_poll_s": 0.5}
NARRATED = ("host.suspect", "host.failed", "host.fenced", "host.fence_failed",
            "instance.evacuating", "instance.evacuated", "instance.crashed",
            "instance.restarted", "instance.watchdog", "instance.recovery_failed",
            "instance.unplaceable", "instance.host_failed", "job.done", "job.failed")


@dataclass
class Failure:
    what: str
    target: str
    injected: float
    times: dict[str, float] = field(default_factory=dict)  # milestone -> seconds after


class Narrator:
    """Follows the controller's events and prints them with times."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.cursor = self._last_id()  # narrate only what happens from now on

    def _last_id(self) -> int:
        since = 0
        while True:
            page = api_request(self.url, self.token, "GET", f"/v1/events?since={since}&limit=500")
            if not page["items"]:
                return since
            since = page["next_since"]

    def poll(self, t0: float, on_event: Callable[[dict[str, Any], float], None]) -> None:
        page = api_request(self.url, self.token, "GET",
                           f"/v1/events?since={self.cursor}&limit=200")
        self.cursor = page["next_since"]
        for ev in page["items"]:
            if ev["type"] in NARRATED:
                on_event(ev, time.time() - t0)


def _app_answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:{vms.APP_PORT}/health",
                                    timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _say(t: float, text: str) -> None:
    console.print(f"  [cyan]t+{t:5.1f} s[/cyan]  {text}")


def _describe(ev: dict[str, Any], names: Mapping[str, str]) -> str:
    p = ev.get("payload", {})
    who = names.get(ev["subject"], p.get("name") or ev["subject"])
    reason = p.get("reason", "")
    return f"[bold]{ev['type']}[/bold] {who}: {reason}"


def _follow(narrator: Narrator, failure: Failure, names: Mapping[str, str],
            until: Callable[[], bool], timeout_s: float,
            per_subject: Mapping[str, Failure] | None = None) -> None:
    """Narrate events until `until()`; each event's time goes to the failure
    of its subject (an instance) when there is one, and to `failure`."""
    def on_event(ev: dict[str, Any], t: float) -> None:
        failure.times.setdefault(ev["type"], t)
        mine = (per_subject or {}).get(names.get(ev["subject"], ""))
        if mine is not None:
            mine.times.setdefault(ev["type"], t)
        _say(t, _describe(ev, names))

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        narrator.poll(failure.injected, on_event)
        if until():
            return
        time.sleep(0.2)
    console.print(f"  [red]gave up waiting after {timeout_s:g} s[/red]")


def _power_off(lab_dir: Path, narrator: Narrator, names: Mapping[str, str]) -> list[Failure]:
    st = lab_ops.status(lab_dir)
    load: dict[str, list[str]] = {}
    for vm, info in st["instances"].items():
        load.setdefault(info["host"], []).append(vm)
    victim = max(sorted(load), key=lambda h: len(load[h]))
    moved = sorted(load[victim])
    console.print(f"\n[bold]1. Power off {victim}[/bold] (it runs {', '.join(moved)})")
    host_failure = Failure("host power-off", victim, faults.fail(lab_dir, victim,
                                                                 "power-off")["at"])
    per_vm = {vm: Failure("host power-off", vm, host_failure.injected) for vm in moved}
    addresses = {vm: st["instances"][vm]["address"] for vm in moved}

    def all_back() -> bool:
        now = time.time() - host_failure.injected
        for vm in moved:
            if "app answering" not in per_vm[vm].times and _app_answers(addresses[vm]):
                per_vm[vm].times["app answering"] = now
                _say(now, f"[green]{vm} answers again at {addresses[vm]}[/green]")
        return (all("app answering" in f.times for f in per_vm.values())
                and "job.done" in host_failure.times)

    _follow(narrator, host_failure, names, all_back, 120, per_vm)
    for f in per_vm.values():
        f.times.update({k: v for k, v in host_failure.times.items() if k.startswith("host.")})
    answered = [f.times["app answering"] for f in per_vm.values() if "app answering" in f.times]
    if answered:
        host_failure.times["app answering"] = max(answered)  # the last VM back
    now = lab_ops.status(lab_dir)["instances"]
    for vm in moved:
        console.print(f"  {vm}: now on {now[vm]['host']} (running on "
                      f"{', '.join(now[vm]['running_on']) or 'no host'})")
    return [host_failure, *per_vm.values()]


def _guest_fault(lab_dir: Path, narrator: Narrator, names: Mapping[str, str], vm: str,
                 fault: str, expect: str) -> Failure:
    policy = ", ".join(f"{k} {v}" for k, v in DEMO_VMS[vm][1].items())
    console.print(f"\n[bold]{fault} in {vm}[/bold] (policy: {policy})")
    failure = Failure(fault, vm, vms.guest_fault(lab_dir, vm, fault)["at"])
    address = lab_ops.status(lab_dir)["instances"][vm]["address"]
    if expect == "notify":
        _follow(narrator, failure, names, lambda: "instance.watchdog" in failure.times, 30)
        alive = lab_ops.status(lab_dir)["instances"][vm]["running_on"]
        console.print(f"  {vm} left alone as its policy asks (domain running on "
                      f"{', '.join(alive) or 'no host'}); a subscriber got instance.watchdog")
        return failure

    def back() -> bool:
        if time.time() - failure.injected > 2 and _app_answers(address):
            t = time.time() - failure.injected
            failure.times["app answering"] = t
            _say(t, f"[green]{vm} answers again at {address}[/green]")
            return True
        return False

    _follow(narrator, failure, names, back, 90)
    return failure


def _summary(failures: list[Failure], last: str = "app answering") -> None:
    """The table of every failure; `last` names the final column (the
    OpenStack demo's is the server settled per Nova: its `recovered`)."""
    table = Table(title="What failed and how fast vmha reacted (seconds after the fault)")
    for col in ("failure", "subject", "detected", "fenced", "recovered", last):
        table.add_column(col)

    def cell(f: Failure, *keys: str) -> str:
        got = [f.times[k] for k in keys if k in f.times]
        return f"{min(got):.1f}" if got else "-"

    for f in failures:
        table.add_row(f.what, f.target,
                      cell(f, "host.failed", "instance.crashed", "instance.watchdog"),
                      cell(f, "host.fenced"),
                      cell(f, "instance.evacuated", "instance.restarted", "job.done"),
                      cell(f, "app answering" if last == "app answering" else "recovered"))
    console.print(table)


def run(lab_dir: Path, keep: bool) -> None:
    started = time.time()
    console.print(f"[bold]vmha demo[/bold]: a lab of 3 hosts with BMCs and a controller in "
                  f"{lab_dir}")
    faults.down(lab_dir)  # a previous demo's leftovers, if any
    try:
        status = lab_ops.up(lab_dir, lab_ops.LabSettings(
            hosts=3, heartbeat_interval_s=0.5, controller=LAB_CONTROLLER))
        url, token = status["controller"]["url"], status["controller"]["token"]
        console.print(f"lab up in {time.time() - started:.1f} s; starting 4 protected VMs")
        for host, policy in DEMO_VMS.values():
            vms.create(lab_dir, 1, [policy], hosts=[host], wait=False)
        vms.wait_running(lab_dir, list(DEMO_VMS))
        st = lab_ops.status(lab_dir)
        names = {i["id"]: vm for vm, i in st["instances"].items()}
        for vm, info in st["instances"].items():
            console.print(f"  {vm} on {info['host']} at {info['address']}, app answering")
        narrator = Narrator(url, token)
        failures = _power_off(lab_dir, narrator, names)
        failures.append(_guest_fault(lab_dir, narrator, names, "vm4", "guest-panic", "restart"))
        failures.append(_guest_fault(lab_dir, narrator, names, "vm3", "guest-hang", "notify"))
        failures.append(_guest_fault(lab_dir, narrator, names, "vm1", "guest-hang", "reset"))
        _summary(failures)
        console.print(f"demo took {time.time() - started:.0f} s")
        if keep:
            console.print(f"\nlab kept running. dashboard {url}/  API {url}/v1  "
                          f"docs {url}/docs\n"
                          f"log in to the dashboard with the token {token}\n"
                          f"export VMHA_URL={url} VMHA_TOKEN={token}\n"
                          f"tear down with: vmha lab down --dir {lab_dir}", soft_wrap=True)
    finally:
        if not keep:
            faults.down(lab_dir)
            console.print("lab torn down")
