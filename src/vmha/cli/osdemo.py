"""`vmha demo --cloud openstack`: the same story as `vmha demo`, on a real Nova.

Brings up a lab of 3 hosts (each with its agent, its BMC emulators and a
nova-compute), a real Keystone, Nova, Placement and Glance, and a
controller with `[cloud] adapter = "openstack"`; boots 4 Nova servers whose
HA policies are `vmha:*` metadata; then:
1. powers off host1 and narrates, from vmha's events and Nova's own
   records, the host detected -> fenced -> its compute service forced down
   -> each protected server evacuated and ACTIVE (or SHUTOFF) on a survivor,
   while the `notify` server stays where it was and is published
   (`instance.host_failed`);
2. powers host1 on again and shows Nova's service re-enabled;
3. prints the summary table of `vmha demo` (per server: detected,
   fenced, evacuated, settled per Nova) and tears everything down (`--keep` leaves it
   running and prints the URLs, the token and the cloud's credentials).
Called by `vmha demo`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from vmha.cli.labdemo import Failure, Narrator, _follow, _say, _summary, console
from vmha.lab import faults, state
from vmha.lab import lab as lab_ops
from vmha.lab.openstack import servers
from vmha.lab.openstack.rest import Session

# server name -> (host, vmha metadata): host1 carries three and is powered off.
DEMO_SERVERS: Mapping[str, tuple[str, Mapping[str, str]]] = {
    "vm1": ("host1", {"vmha:host": "auto", "vmha:priority": "900"}),
    "vm2": ("host1", {"vmha:host": "auto", "vmha:evacuate_to_stopped": "true"}),
    "vm3": ("host1", {"vmha:host": "notify"}),
    "vm4": ("host2", {"vmha:host": "auto", "vmha:priority": "100"}),
}
CONTROLLER = {"host_return_healthy_s": 5.0, "verify_poll_s": 0.5, "fence_poll_s": 0.5,
              "job_poll_s": 0.5}


def _nova_view(nova: Session, ids: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    found = nova.call("GET", "compute", "/servers/detail?all_tenants=1")["servers"]
    by_id = {s["id"]: s for s in found}
    return {name: (by_id[sid]["OS-EXT-SRV-ATTR:host"],
                   by_id[sid]["status"] + (f"/{t}" if (t := by_id[sid]["OS-EXT-STS:task_state"])
                                           else ""))
            for name, sid in ids.items()}


def _power_off(lab_dir: Path, nova: Session, narrator: Narrator,
               ids: Mapping[str, str]) -> list[Failure]:
    """Power off host1 and narrate until every protected server settled on
    a survivor per Nova and vmha's job is done; a Failure for the host and
    one per server."""
    names = {sid: name for name, sid in ids.items()}
    on_host1 = [n for n, (h, _) in DEMO_SERVERS.items() if h == "host1"]
    protected = [n for n in on_host1 if DEMO_SERVERS[n][1].get("vmha:host") != "notify"]
    console.print(f"\n[bold]1. Power off host1[/bold] (it runs {', '.join(on_host1)}; "
                  f"{', '.join(sorted(set(on_host1) - set(protected)))} notify only)")
    host = Failure("host power-off", "host1", faults.fail(lab_dir, "host1", "power-off")["at"])
    per_server = {n: Failure("host power-off", n, host.injected) for n in on_host1}

    def settled() -> bool:
        view = _nova_view(nova, ids)
        now = time.time() - host.injected
        for name in protected:
            where, status = view[name]
            if where != "host1" and "/" not in status and "recovered" not in per_server[name].times:
                per_server[name].times["recovered"] = now
                _say(now, f"[green]Nova: {name} {status} on {where}[/green]")
        return all("recovered" in per_server[n].times for n in protected) \
            and "job.done" in host.times

    _follow(narrator, host, names, settled, 180, per_server)
    for f in per_server.values():
        f.times.update({k: v for k, v in host.times.items() if k.startswith("host.")})
    recovered = [f.times["recovered"] for f in per_server.values() if "recovered" in f.times]
    if recovered:
        host.times["recovered"] = max(recovered)  # the last server settled in Nova
    svc = servers.compute_services(nova)["host1"]
    view = _nova_view(nova, ids)
    console.print(f"  Nova: host1's compute service {svc['status']}, forced_down="
                  f"{svc['forced_down']} ({svc['disabled_reason']})")
    for name in on_host1:
        where, status = view[name]
        console.print(f"  {name}: now {status} on {where}"
                      + ("  (notify: left where it was; a subscriber got "
                         "instance.host_failed)" if name not in protected else ""))
    return [host, *per_server.values()]


def _power_on(lab_dir: Path, nova: Session) -> None:
    console.print("\n[bold]2. Power host1 on again[/bold]")
    t0 = time.time()
    faults.power_on(lab_dir, "host1")
    deadline = time.time() + 180
    while time.time() < deadline:
        svc = servers.compute_services(nova)["host1"]
        if svc["status"] == "enabled" and not svc["forced_down"] and svc["state"] == "up":
            _say(time.time() - t0, "Nova: host1's compute service up, enabled, no longer "
                                   "forced down (vmha re-enabled it)")
            return
        time.sleep(0.5)
    console.print("  [red]host1 was not re-enabled within 180 s[/red]")


def run(lab_dir: Path, keep: bool) -> None:
    started = time.time()
    console.print("[bold]vmha demo --cloud openstack[/bold]: 3 hosts with BMCs and nova-compute, "
                  f"a real Keystone/Nova/Placement/Glance and a controller, in {lab_dir}")
    faults.down(lab_dir)
    try:
        status = lab_ops.up(lab_dir, lab_ops.LabSettings(
            hosts=3, heartbeat_interval_s=0.5, controller=CONTROLLER, cloud="openstack"))
        url, token = status["controller"]["url"], status["controller"]["token"]
        console.print(f"lab and cloud up in {time.time() - started:.1f} s; booting 4 servers")
        for host, meta in DEMO_SERVERS.values():
            servers.create(lab_dir, 1, [meta], hosts=[host])
        st = state.load(lab_dir)
        ids = {n: v["server_id"] for n, v in st["servers"].items()}
        nova = servers.session(st)
        for name, (host, status_) in _nova_view(nova, ids).items():
            console.print(f"  {name} {status_} on {host}: {dict(DEMO_SERVERS[name][1])}")
        narrator = Narrator(url, token)
        failures = _power_off(lab_dir, nova, narrator, ids)
        _power_on(lab_dir, nova)
        console.print("\n(The guest layer — a panicked or hung guest — is Nova's own on "
                      "OpenStack: the lab's nova-computes run Nova's fake driver, no guest "
                      "boots; `vmha demo` shows it with QEMU guests.)")
        _summary(failures, last="ACTIVE per Nova")
        console.print(f"demo took {time.time() - started:.0f} s")
        if keep:
            cloud = lab_ops.status(lab_dir)["openstack"]
            console.print(f"\nlab kept running. dashboard {url}/  API {url}/v1\n"
                          f"export VMHA_URL={url} VMHA_TOKEN={token}\n"
                          f"cloud: OS_AUTH_URL={cloud['auth_url']} OS_USERNAME="
                          f"{cloud['username']} OS_PASSWORD={cloud['password']} "
                          f"OS_PROJECT_NAME={cloud['project_name']}\n"
                          f"tear down with: vmha lab down --dir {lab_dir}", soft_wrap=True)
    finally:
        if not keep:
            faults.down(lab_dir)
            console.print("lab torn down")
