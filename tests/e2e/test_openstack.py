"""vmha protects a real Nova cloud, end to end (issue 12).

One lab (3 hosts with BMC emulators; a real Keystone, Nova, Placement and
Glance on MariaDB and RabbitMQ; one nova-compute with the fake virt driver
inside each host's network and PID namespaces; a controller with `[cloud]
adapter = "openstack"`) runs the tests below in order. Nova's own records
(services, servers, /os-migrations) are the truth every test checks.

  vm1 host1  vmha:host=auto, priority 900
  vm2 host1  vmha:evacuate_to_stopped=true
  vm3 host1  vmha:host=notify
  vm4 host2  auto
  vm5 host1  vmha:priority=high (invalid: the segment default applies)

In order: bad metadata; `vmha serve` with a password Keystone refuses
(exit 2, one line); a controller-link cut (nothing forced down or
evacuated); host1 powered off right after every Keystone token of the
cloud's admin was revoked (vmha re-authenticates; force-down, evacuations,
vm2 `evacuate_to_stopped` ends SHUTOFF on its target, the `notify` vm3 not
moved but published, the Aodh alarm through Ceilometer); host1 back
(un-forced, enabled); the controller SIGKILLed mid-evacuation (no server
evacuated twice); Nova's API down for 20 s during a recovery (retried,
nothing lost); then every server replaced by a layout with room for one
more on the survivors: the higher priority of host1's two moves, the other
is `instance.unplaceable`; the members of a Nova anti-affinity server
group kept apart by vmha's planner; a new server known to vmha from Nova's
notifications alone (the periodic sync an hour apart); then the controller
restarted with `[openstack] target = "scheduler"`: Nova's scheduler picks
the hosts, vmha records them; then a project's token sees exactly its
servers, and the actions API stops, starts, restarts, resets and rebuilds
one through Nova; last, a server whose metadata gives its application the
escalation `rebuild` (`vmha:app_actions`) has its application fail: Nova
rebuilds it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from vmha.lab import controller as lab_controller
from vmha.lab import faults, state
from vmha.lab import lab as lab_ops
from vmha.lab.net import LabCommandFailed
from vmha.lab.openstack import layout, servers
from vmha.lab.openstack import services as os_services
from vmha.lab.openstack.rest import Session

# The first test also waits for the module's lab; the first lab cloud on a
# machine bootstraps (schemas, Keystone, cells: minutes under load).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

METADATA = [
    {"vmha:host": "auto", "vmha:priority": "900"},
    {"vmha:evacuate_to_stopped": "true"},
    {"vmha:host": "notify"},
    {"vmha:host": "auto"},
    {"vmha:priority": "high"},
]
PLACES = ["host1", "host1", "host1", "host2", "host1"]
SETTINGS = lab_ops.LabSettings(
    hosts=3, heartbeat_interval_s=0.5, watchdog_timeout_s=3.0, controller_port=8787,
    heartbeat_port=8788, cloud="openstack", telemetry=True,
    controller={"host_return_healthy_s": 3.0, "fence_rate_interval_s": 2.0,
                "verify_poll_s": 0.5, "job_poll_s": 0.5, "fence_poll_s": 0.5},
)


@dataclass
class Lab:
    dir: Path
    api: httpx.Client
    nova: Session
    ids: dict[str, str]  # vm name -> server id

    def server(self, name: str) -> dict[str, Any]:
        got: dict[str, Any] = self.nova.call("GET", "compute", f"/servers/{self.ids[name]}")
        return dict(got["server"])

    def service(self, host: str) -> dict[str, Any]:
        return dict(servers.compute_services(self.nova)[host])

    def evacuated(self, name: str) -> int:
        """How many times Nova evacuated it successfully (a refused or failed
        evacuation, e.g. NoValidHost, moved nothing)."""
        return sum(m["status"] in ("done", "completed") for m in self.migrations(name))

    def migrations(self, name: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.nova.call(
            "GET", "compute", f"/os-migrations?instance_uuid={self.ids[name]}"
            "&migration_type=evacuation")["migrations"]
        return found

    def relogin(self) -> None:
        self.nova = servers.session(state.load(self.dir))

    def where(self) -> dict[str, str]:
        return {name: self.server(name)["OS-EXT-SRV-ATTR:host"] for name in self.ids}

    def settled(self, names: list[str], away_from: str) -> bool:
        for name in names:
            srv = self.server(name)
            if srv["OS-EXT-SRV-ATTR:host"] in (None, away_from) or srv["OS-EXT-STS:task_state"] \
                    or srv["status"] not in ("ACTIVE", "SHUTOFF"):
                return False
        return True

    def cursor(self) -> int:
        since = 0
        while True:
            page = self.api.get("/v1/events", params={"since": since, "limit": 500}).json()
            if not page["items"]:
                return since
            since = page["next_since"]

    def events(self, etype: str, subject: str | None = None, since: int = 0) -> list[Any]:
        params: dict[str, Any] = {"type": etype, "since": since, "limit": 500}
        if subject:
            params["subject"] = subject
        items: list[Any] = self.api.get("/v1/events", params=params).json()["items"]
        return items


ALARMS: dict[str, str] = {}  # host -> the Aodh alarm on its vmha.host.failed


class Hook(BaseHTTPRequestHandler):
    """Aodh's webhook target: records every POST body."""

    received: list[Any] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Hook.received.append(json.loads(body or b"null"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def hook() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alarm"
    server.shutdown()


def save_part(lab_dir: Path, key: str, record: dict[str, Any]) -> None:
    """Write one part of lab.json back (the controller's or the cloud's
    record after a restart), under the lab's change lock: the rest of it
    may have changed meanwhile (faults, a BMC's power-off) and must stay."""
    with state.changing(lab_dir):
        st = state.load(lab_dir)
        st[key] = record
        state.save(lab_dir, st)


def nova_time(text: str) -> float:
    """Nova's timestamps are UTC without a zone."""
    return datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=UTC).timestamp()


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, openstack_ready: None) -> Iterator[Lab]:
    lab_dir = tmp_path_factory.mktemp("oslab")
    try:
        st = lab_ops.up(lab_dir, SETTINGS)
        ctl = st["controller"]
        client = httpx.Client(base_url=ctl["url"], timeout=10,
                              headers={"Authorization": f"Bearer {ctl['token']}"})
        for meta, host in zip(METADATA, PLACES, strict=True):
            servers.create(lab_dir, 1, [meta], hosts=[host])
        ids = {n: v["server_id"] for n, v in state.load(lab_dir)["servers"].items()}
        yield Lab(lab_dir, client, servers.session(state.load(lab_dir)), ids)
    finally:
        faults.down(lab_dir)


def test_bad_metadata_keeps_the_default_and_is_published(lab: Lab) -> None:
    iid = lab.ids["vm5"]
    found = wait_for(lambda: lab.events("instance.policy_invalid", iid), 30,
                     "instance.policy_invalid for vm5")
    assert found[0]["payload"]["key"] == "vmha:priority"
    assert found[0]["payload"]["value"] == "high"
    inst = lab.api.get(f"/v1/instances/{iid}").json()
    assert inst["policy"] is None  # the segment default applies
    good = lab.api.get(f"/v1/instances/{lab.ids['vm1']}").json()
    assert good["policy"]["priority"] == 900


def test_a_wrong_password_stops_serve_with_one_line(lab: Lab, tmp_path: Path) -> None:
    """`vmha serve` with the lab controller's settings but a password the
    real Keystone refuses: exit 2 before it serves, one error line naming
    `openstack.password_file`, neither password shown."""
    real = servers.credentials(state.load(lab.dir)["openstack"])["password"]
    wrong = tmp_path / "admin.password"
    wrong.write_text("not-the-admin-password\n")
    lines, section = [], ""
    for line in Path(state.load(lab.dir)["controller"]["config"]).read_text().splitlines():
        section = line if line.startswith("[") else section
        if section == "[openstack]" and line.startswith("password_file = "):
            line = f'password_file = "{wrong}"'
        elif section == "[store]" and line.startswith("data_dir = "):  # not the lab's store
            line = f'data_dir = "{tmp_path}"'
        lines.append(line + ("\nenabled = false" if line == "[heartbeat]" else ""))
    config = tmp_path / "vmha.toml"
    config.write_text("\n".join(lines) + "\n")
    script = lab_controller.vmha_script()
    assert script is not None
    done = subprocess.run([script, "serve", "--config", str(config), "--host", "127.0.0.1",
                           "--port", "0"], capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert errors == [f"error: openstack.password_file: Keystone refused the credentials of "
                      f"user '{layout.ADMIN_USER}' (HTTP 401); check them"], output
    assert "Traceback" not in output
    assert real not in output and "not-the-admin-password" not in output
    assert not list(tmp_path.glob("*.db")), "the store was opened before the login"


def test_controller_link_cut_forces_nothing_down(lab: Lab) -> None:
    faults.fail(lab.dir, "host2", "controller-link-down")
    try:
        wait_for(lambda: lab.api.get("/v1/hosts/host2").json()["state"] == "partitioned", 60,
                 "host2 partitioned (peers still reach it)")
        time.sleep(5)
        svc = lab.service("host2")
        assert svc["status"] == "enabled" and not svc["forced_down"]
        assert all(lab.migrations(n) == [] for n in lab.ids)
    finally:  # the next tests need it back, whatever happened here
        faults.heal(lab.dir, "host2")
    wait_for(lambda: lab.api.get("/v1/hosts/host2").json()["state"] == "up", 60, "host2 up")


def revoke_admin_tokens(lab: Lab) -> None:
    """Disabling a Keystone user revokes every token it has: the controller's
    next call gets a 401 and must log in again (with its unchanged password)."""
    users = lab.nova.call("GET", "identity", f"/users?name={layout.ADMIN_USER}")["users"]
    uid = users[0]["id"]
    lab.nova.call("PATCH", "identity", f"/users/{uid}", {"user": {"enabled": False}})
    # the lab's own token is revoked too: enable the user again as the service user
    svc = Session(layout.SERVICE_USER, os_services.secrets_of({}).service,
                  layout.SERVICE_PROJECT)
    svc.call("PATCH", "identity", f"/users/{uid}", {"user": {"enabled": True}})
    lab.relogin()


def test_power_off_forces_down_then_evacuates_every_protected_server(lab: Lab,
                                                                    hook: str) -> None:
    alarm = lab.nova.call("POST", "alarming", "/v2/alarms", {
        "name": "vmha-host1-failed", "type": "event", "alarm_actions": [hook],
        "event_rule": {"event_type": "vmha.host.failed", "query": [
            {"field": "traits.host", "op": "eq", "type": "string", "value": "host1"}]}})
    revoke_admin_tokens(lab)
    faults.fail(lab.dir, "host1", "power-off")
    moved = {"vm1": "ACTIVE", "vm2": "SHUTOFF", "vm5": "ACTIVE"}

    def landed() -> bool:
        for name, status in moved.items():
            srv = lab.server(name)
            if srv["OS-EXT-SRV-ATTR:host"] in (None, "host1") or srv["status"] != status \
                    or srv["OS-EXT-STS:task_state"]:
                return False
        return True

    wait_for(landed, 240, "vm1, vm2, vm5 evacuated by Nova")
    fenced = lab.events("host.fenced", "host1")
    assert fenced, "host1 was never fenced"
    fenced_at = fenced[0]["time"]
    svc = lab.service("host1")
    assert svc["forced_down"] is True and svc["status"] == "disabled"
    assert svc["disabled_reason"].startswith("vmha job ")
    assert nova_time(svc["updated_at"]) >= fenced_at - 1.0  # clocks: same machine, ms apart
    for name in moved:
        migs = lab.migrations(name)
        assert len(migs) == 1, f"{name} evacuated {len(migs)} times"
        assert migs[0]["source_compute"] == "host1"
        assert migs[0]["status"] in ("done", "completed")
        assert nova_time(migs[0]["created_at"]) >= nova_time(svc["updated_at"]) - 0.001
        nova_host = lab.server(name)["OS-EXT-SRV-ATTR:host"]
        wait_for(lambda n=name, h=nova_host: lab.api.get(
            f"/v1/instances/{lab.ids[n]}").json()["host"] == h, 60,
            f"vmha's record of {name} on {nova_host} (its move verified)")
    assert lab.server("vm3")["OS-EXT-SRV-ATTR:host"] == "host1"  # notify: not moved
    assert lab.migrations("vm3") == []
    told = lab.events("instance.host_failed", lab.ids["vm3"])  # ... and published
    assert len(told) == 1 and told[0]["time"] >= fenced_at
    assert "host policy notify: not moved" in told[0]["payload"]["reason"]
    assert not lab.events("instance.host_failed", lab.ids["vm1"])
    ALARMS["host1"] = alarm["alarm_id"]


def test_the_failure_fired_an_aodh_event_alarm_through_ceilometer(lab: Lab) -> None:
    """vmha.host.failed on the cloud's bus -> ceilometer-agent-notification
    (event definitions from etc/ceilometer) -> aodh-listener -> aodh-notifier
    -> the alarm's webhook."""
    alarm = ALARMS["host1"]
    fired = wait_for(lambda: [b for b in Hook.received if b and b.get("alarm_id") == alarm],
                     120, "Aodh's webhook for vmha.host.failed on host1")
    assert fired[0]["current"] == "alarm"
    assert fired[0]["reason_data"]["event"]["event_type"] == "vmha.host.failed"


def test_host_return_unforces_and_enables_the_service(lab: Lab) -> None:
    faults.power_on(lab.dir, "host1")
    wait_for(lambda: lab.api.get("/v1/hosts/host1").json()["state"] == "up", 150,
             "host1 up again in vmha")

    def enabled() -> bool:
        svc = lab.service("host1")
        return svc["status"] == "enabled" and not svc["forced_down"] and svc["state"] == "up"

    wait_for(enabled, 150, "host1's nova-compute enabled, not forced down, up")
    for name in ("vm1", "vm2", "vm5"):
        assert lab.migrations(name)[0]["status"] == "completed"


def back(lab: Lab, host: str) -> None:
    faults.heal(lab.dir, host)
    if lab_ops.status(lab.dir)["hosts"][host]["state"] == "powered-off":
        with contextlib.suppress(LabCommandFailed):  # an agent slow to start on a busy machine
            faults.power_on(lab.dir, host)
    wait_for(lambda: lab.service(host)["status"] == "enabled"
             and not lab.service(host)["forced_down"] and lab.service(host)["state"] == "up",
             120, f"{host} back and enabled in Nova")


def busiest(lab: Lab) -> tuple[str, list[str]]:
    where = lab.where()
    host = max(("host1", "host2", "host3"), key=lambda h: sum(v == h for v in where.values()))
    return host, [n for n, h in where.items() if h == host and n != "vm3"]


def test_controller_killed_mid_evacuation_evacuates_nothing_twice(lab: Lab) -> None:
    victim, moved = busiest(lab)
    before = {n: lab.evacuated(n) for n in moved}
    since = lab.cursor()
    faults.fail(lab.dir, victim, "power-off")
    try:
        wait_for(lambda: lab.events("instance.evacuating", None, since), 120,
                 "evacuation started")
        ctl = state.load(lab.dir)["controller"]
        assert lab_controller.kill_controller(ctl) is not None
        lab_controller.restart_controller(ctl)
        save_part(lab.dir, "controller", ctl)
        wait_for(lambda: lab.settled(moved, victim), 240, f"{moved} settled off {victim}")
        for name in moved:
            assert lab.evacuated(name) == before[name] + 1, f"{name}: {lab.migrations(name)}"
    finally:  # the next tests need it back, whatever happened here
        back(lab, victim)


def test_network_cut_host_is_fenced_before_any_evacuation_while_nova_api_is_down(
        lab: Lab) -> None:
    """The cut host is fenced through its BMC; Nova's API is down for 20 s
    right then: vmha retries, nothing is lost, nothing moves before the fence."""
    victim, moved = busiest(lab)
    cloud = state.load(lab.dir)["openstack"]
    since = lab.cursor()
    os_services.stop_api(lab.dir, cloud, "nova-api")
    try:
        try:
            faults.fail(lab.dir, victim, "network-down")
            fenced = wait_for(lambda: lab.events("host.fenced", victim, since), 120,
                              f"{victim} fenced")
            time.sleep(20)
        finally:
            os_services.start_again(lab.dir, cloud, "nova-api")
            save_part(lab.dir, "openstack", cloud)
        lab.relogin()
        wait_for(lambda: lab.settled(moved, victim), 240, f"{moved} settled off {victim}")
        assert lab_ops.status(lab.dir)["hosts"][victim]["state"] == "powered-off"  # the BMC
        svc = lab.service(victim)
        assert svc["forced_down"] and svc["status"] == "disabled"
        for name in moved:
            newest = max(lab.migrations(name), key=lambda m: m["created_at"])
            assert nova_time(newest["created_at"]) > fenced[0]["time"]
        assert not lab.events("instance.recovery_failed", None, since)
    finally:  # the next tests need it back, whatever happened here
        back(lab, victim)


# host -> the flavors of the servers that fill it: host2 keeps 0 MB free,
# host3 768 MB (4096 MB each): room for one vmha.small (512 MB) in all
FILLERS = {"host2": ["vmha.large", "vmha.large"],
           "host3": ["vmha.large", "vmha.small", "vmha.small", "vmha.tiny", "vmha.tiny"]}


def clear_servers(lab: Lab) -> None:
    """Delete every server, and wait until Nova and vmha know none."""
    for sid in lab.ids.values():
        lab.nova.call("DELETE", "compute", f"/servers/{sid}")
    wait_for(lambda: not lab.nova.call("GET", "compute", "/servers")["servers"], 60,
             "every server deleted in Nova")
    wait_for(lambda: not lab.api.get("/v1/instances").json()["items"], 60,
             "vmha forgot every server")
    lab.ids.clear()


def boot_as(lab: Lab, name: str, host: str, flavor: str, meta: dict[str, str],
            hints: dict[str, str] | None = None) -> None:
    flavors = {f["name"]: f["id"] for f in lab.nova.call("GET", "compute", "/flavors")["flavors"]}
    image = lab.nova.call("GET", "image", f"/v2/images?name={layout.IMAGE}")["images"][0]["id"]
    lab.ids[name] = servers.boot(lab.nova, name, host, meta, flavors[flavor], image,
                                 hints=hints)


def test_not_enough_capacity_highest_priority_first_the_rest_unplaceable(lab: Lab) -> None:
    """host1 fails with two protected servers (priority 900 and 100) while
    the survivors have room for one: the first moves, the other is
    `instance.unplaceable` (vmha never asks Nova to move it)."""
    clear_servers(lab)
    off = {"vmha:host": "off"}
    for host, flavors in FILLERS.items():
        for n, flavor in enumerate(flavors):
            boot_as(lab, f"fill-{host}-{n}", host, flavor, off)
    boot_as(lab, "cap-hi", "host1", "vmha.small", {"vmha:priority": "900"})
    boot_as(lab, "cap-lo", "host1", "vmha.small", {"vmha:priority": "100"})
    servers.wait_active(lab.nova, list(lab.ids.values()))
    servers.wait_known(state.load(lab.dir), list(lab.ids.values()))
    since = lab.cursor()
    faults.fail(lab.dir, "host1", "power-off")
    try:
        unplaceable = wait_for(lambda: lab.events("instance.unplaceable", lab.ids["cap-lo"],
                                                  since), 180, "cap-lo unplaceable")
        assert "no host with" in unplaceable[0]["payload"]["reason"]
        wait_for(lambda: lab.settled(["cap-hi"], "host1"), 120, "cap-hi moved off host1")
        assert lab.server("cap-hi")["OS-EXT-SRV-ATTR:host"] == "host3"
        assert lab.evacuated("cap-hi") == 1 and lab.migrations("cap-lo") == []
        assert lab.server("cap-lo")["OS-EXT-SRV-ATTR:host"] == "host1"
        assert not lab.events("instance.unplaceable", lab.ids["cap-hi"], since)
    finally:  # the next tests need it back, whatever happened here
        back(lab, "host1")


def test_novas_anti_affinity_group_members_stay_apart_after_a_recovery(lab: Lab) -> None:
    """A real Nova server group (policy anti-affinity) with aa-1 on host1
    and aa-2 on host2; host3 carries a filler, so host2 has the most room.
    host1 fails: vmha's planner sends aa-1 to host3, never next to aa-2 —
    one evacuation, no move Nova had to fail."""
    clear_servers(lab)
    group = lab.nova.call("POST", "compute", "/os-server-groups", {"server_group": {
        "name": "vmha-e2e-aa", "policy": "anti-affinity"}})["server_group"]["id"]
    hint = {"group": group}
    boot_as(lab, "aa-1", "host1", "vmha.tiny", {"vmha:host": "auto"}, hint)
    boot_as(lab, "aa-2", "host2", "vmha.tiny", {"vmha:host": "auto"}, hint)
    boot_as(lab, "aa-fill", "host3", "vmha.small", {"vmha:host": "off"})
    servers.wait_active(lab.nova, list(lab.ids.values()))
    servers.wait_known(state.load(lab.dir), list(lab.ids.values()))
    for name in ("aa-1", "aa-2"):
        wait_for(lambda n=name: lab.api.get(f"/v1/instances/{lab.ids[n]}").json()
                 ["anti_affinity_group"] == f"nova:{group}", 60, f"{name} in nova:{group}")
    since = lab.cursor()
    faults.fail(lab.dir, "host1", "power-off")
    try:
        wait_for(lambda: lab.settled(["aa-1"], "host1"), 180, "aa-1 moved off host1")
        assert lab.server("aa-1")["OS-EXT-SRV-ATTR:host"] == "host3"
        assert lab.server("aa-2")["OS-EXT-SRV-ATTR:host"] == "host2"
        assert [m["dest_compute"] for m in lab.migrations("aa-1")] == ["host3"]
        going = lab.events("instance.evacuating", lab.ids["aa-1"], since)
        assert [e["payload"]["reason"] for e in going] == ["moving from host1 to host3"]
    finally:  # the next tests need it back, whatever happened here
        back(lab, "host1")


def restart_with(lab: Lab, old: str, new: str,
                 while_down: Callable[[], object] = lambda: None) -> None:
    """Restart the lab's controller with `old` replaced by `new` in its
    config, calling `while_down` while it is stopped."""
    ctl = state.load(lab.dir)["controller"]
    config = Path(ctl["config"])
    text = config.read_text()
    assert old in text, f"{old!r} not in {config}"
    config.write_text(text.replace(old, new, 1))
    lab_controller.kill_controller(ctl)
    while_down()
    lab_controller.restart_controller(ctl)
    save_part(lab.dir, "controller", ctl)


def test_a_server_created_in_nova_is_known_from_novas_notifications(lab: Lab) -> None:
    """With the periodic sync an hour apart, only Nova's notifications can
    tell the controller of a new server. note-0 (booted while the
    controller is down) is known once its first sync after the restart has
    run; note-1, booted after that, must be known within seconds."""
    periodic, hourly = "inventory_interval_s = 10.0\n", "inventory_interval_s = 3600.0\n"
    try:
        restart_with(lab, periodic, hourly, lambda: boot_as(
            lab, "note-0", "host2", "vmha.tiny", {"vmha:host": "off"}))
        # the syncs run one after the other, the first at the start: once
        # one has seen note-0, the rest are woken by notifications only
        servers.wait_known(state.load(lab.dir), [lab.ids["note-0"]])
        boot_as(lab, "note-1", "host3", "vmha.tiny", {"vmha:host": "off"})
        booted = time.monotonic()
        known = wait_for(lambda: lab.api.get(f"/v1/instances/{lab.ids['note-1']}")
                         .status_code == 200 and time.monotonic(), 120,
                         "note-1 known to vmha from Nova's notifications")
        assert lab.api.get(f"/v1/instances/{lab.ids['note-1']}").json()["host"] == "host3"
        print(f"note-1 known {known - booted:.1f} s after Nova accepted its creation")
    finally:
        restart_with(lab, hourly, periodic)


def project_tokens(lab: Lab) -> dict[str, str]:
    """token -> Keystone project: the servers' own (the lab's admin project), another."""
    admin = servers.admin_project_id(state.load(lab.dir)["openstack"])
    return {"tok-own-project": admin, "tok-other-project": "0" * 32}


def test_with_target_scheduler_nova_picks_every_host(lab: Lab) -> None:
    """`[openstack] target = "scheduler"`: the controller (restarted with it)
    names no host; Nova's scheduler places each server, and vmha records
    where Nova put it."""
    ctl = state.load(lab.dir)["controller"]
    config = Path(ctl["config"])
    tokens = "".join(f'  {{ token = "{token}", role = "project:{project}", name = "{token}" }},\n'
                     for token, project in project_tokens(lab).items())
    config.write_text(config.read_text().replace(
        "[openstack]\n", '[openstack]\ntarget = "scheduler"\n', 1).replace(
        "tokens = [\n", "tokens = [\n" + tokens, 1))
    assert lab_controller.kill_controller(ctl) is not None
    lab_controller.restart_controller(ctl)
    save_part(lab.dir, "controller", ctl)
    clear_servers(lab)
    for name in ("sch-1", "sch-2"):
        boot_as(lab, name, "host1", "vmha.tiny", {"vmha:host": "auto"})
    servers.wait_active(lab.nova, list(lab.ids.values()))
    servers.wait_known(state.load(lab.dir), list(lab.ids.values()))
    since = lab.cursor()
    faults.fail(lab.dir, "host1", "power-off")
    wait_for(lambda: lab.settled(list(lab.ids), "host1"), 180, "both moved off host1 by Nova")
    for name, sid in lab.ids.items():
        going = lab.events("instance.evacuating", sid, since)
        assert "the host the cloud's scheduler picks" in going[0]["payload"]["reason"]
        nova_host = lab.server(name)["OS-EXT-SRV-ATTR:host"]
        assert lab.migrations(name)[0]["dest_compute"] == nova_host
        wait_for(lambda s=sid, h=nova_host: lab.api.get(f"/v1/instances/{s}").json()["host"]
                 == h, 60, f"vmha records {name} on {nova_host}, where Nova put it")
        done = lab.events("instance.evacuated", sid, since)
        assert done and done[0]["payload"]["reason"] == f"now running on {nova_host}"


def as_project(lab: Lab, token: str) -> httpx.Client:
    return httpx.Client(base_url=str(lab.api.base_url), timeout=10,
                        headers={"Authorization": f"Bearer {token}"})


def act(lab: Lab, client: httpx.Client, sid: str, action: str) -> dict[str, Any]:
    """Run an instance action through vmha's API with `client`'s token; its
    finished job (read by the admin: jobs are staff's)."""
    got = client.post(f"/v1/instances/{sid}/actions", json={"action": action})
    assert got.status_code == 202, got.text
    job = got.json()["id"]
    done: dict[str, Any] = wait_for(lambda: (j := lab.api.get(f"/v1/jobs/{job}").json())
                                    ["state"] in ("done", "failed") and j, 90,
                                    f"the {action} job of {sid}")
    assert done["state"] == "done", done
    return done


def test_project_tokens_see_their_servers_and_their_actions_call_nova(lab: Lab) -> None:
    """A Keystone project is a vmha project: its token sees exactly its
    servers (another project's sees none, and gets 404); the actions API's
    stop, start, restart, reset and rebuild reach Nova."""
    own, other = (as_project(lab, t) for t in ("tok-own-project", "tok-other-project"))
    seen = {i["id"] for i in own.get("/v1/instances").json()["items"]}
    assert seen == set(lab.ids.values())
    assert other.get("/v1/instances").json()["items"] == []
    sid = lab.ids["sch-1"]
    assert other.get(f"/v1/instances/{sid}").status_code == 404
    assert other.post(f"/v1/instances/{sid}/actions", json={"action": "stop"}
                      ).status_code == 404
    act(lab, own, sid, "stop")
    assert lab.server("sch-1")["status"] == "SHUTOFF"
    act(lab, own, sid, "start")
    assert lab.server("sch-1")["status"] == "ACTIVE"
    for action in ("restart", "reset", "rebuild"):
        act(lab, own, sid, action)
        wait_for(lambda: lab.server("sch-1")["status"] == "ACTIVE"
                 and not lab.server("sch-1")["OS-EXT-STS:task_state"], 60,
                 f"sch-1 ACTIVE after {action}")
    done = {a["action"] for a in lab.nova.call(
        "GET", "compute", f"/servers/{sid}/os-instance-actions")["instanceActions"]}
    assert {"stop", "start", "reboot", "rebuild"} <= done, done


def report_app(lab: Lab, host: str, sid: str, kind: str) -> None:
    """What `host`'s agent sends when its probe of the server's application
    changes verdict (docs/agent.md "Probes"). The lab's compute hosts run
    Nova's fake virt driver: no guest, nothing the agent could probe, so
    the test speaks for it, through the same API with the same body."""
    event = {"instance": sid, "name": "app-rb", "kind": kind, "time": time.time(),
             "probe": "http http://198.18.1.99:8080/health", "count": 3,
             "detail": "HTTP 503" if kind == "app_failed" else ""}
    got = lab.api.post(f"/v1/agents/{host}/events", json={"boot_id": "e2e", "events": [event]})
    assert got.status_code == 202, got.text
    assert got.json()["known"] == 1


def test_app_escalation_rebuild_from_metadata_has_nova_rebuild_the_server(lab: Lab) -> None:
    """`vmha:app=auto` and `vmha:app_actions=rebuild` in the server's
    metadata; its application fails: the recovery job's step asks Nova to
    rebuild the server from its image, Nova does (its instance action
    `rebuild` succeeds, the server is ACTIVE again on the same host), and
    once the application answers again the job is done."""
    host = next(h for h in ("host3", "host2") if lab.api.get(f"/v1/hosts/{h}").json()
                ["state"] == "up")
    boot_as(lab, "app-rb", host, "vmha.tiny", {"vmha:app": "auto", "vmha:app_actions": "rebuild"})
    sid = lab.ids["app-rb"]
    servers.wait_active(lab.nova, [sid])
    servers.wait_known(state.load(lab.dir), [sid])
    policy = wait_for(lambda: lab.api.get(f"/v1/instances/{sid}").json()["policy"], 60,
                      "vmha's policy of app-rb from its metadata")
    assert policy["app_actions"] == ["rebuild"] and policy["app"] == "auto"
    since, asked = lab.cursor(), time.time()
    report_app(lab, host, sid, "app_failed")

    def rebuilt() -> dict[str, Any] | None:
        # the action first: Nova records it with the server's task state in
        # the request that accepts the rebuild, so the server read after it
        # shows ACTIVE without a task only once the rebuild is over
        actions = lab.nova.call("GET", "compute",
                                f"/servers/{sid}/os-instance-actions")["instanceActions"]
        done = [a for a in actions if a["action"] == "rebuild"]
        srv = lab.server("app-rb")
        if done and srv["status"] == "ACTIVE" and not srv["OS-EXT-STS:task_state"]:
            return dict(done[0])
        return None

    action = wait_for(rebuilt, 120, "Nova's rebuild of app-rb done")
    # Nova's own record proves the rebuild (the REBUILD status lasts about a
    # second; on a busy machine one poll of two Nova calls can miss it)
    assert nova_time(action["start_time"]) >= asked - 1.0  # clocks: same machine
    detail = lab.nova.call("GET", "compute", f"/servers/{sid}/os-instance-actions/"
                           f"{action['request_id']}")["instanceAction"]
    assert [e["result"] for e in detail["events"]] == ["Success"] * len(detail["events"])
    assert detail["events"], detail
    assert lab.server("app-rb")["OS-EXT-SRV-ATTR:host"] == host  # rebuilt where it was
    jobs = wait_for(lambda: [j for j in lab.api.get("/v1/jobs", params={
        "kind": "instance_recovery", "subject": sid}).json()["items"]
        if j["steps"] and j["steps"][-1]["finished_at"]], 60, "the rebuild step finished")
    assert len(jobs) == 1 and [s["name"] for s in jobs[0]["steps"]] == ["rebuild"], jobs
    assert jobs[0]["steps"][0]["state"] == "done", jobs[0]
    report_app(lab, host, sid, "app_recovered")
    job = wait_for(lambda: (j := lab.api.get(f"/v1/jobs/{jobs[0]['id']}").json())["state"]
                   in ("done", "failed") and j, 60, "app-rb's recovery job finished")
    assert job["state"] == "done", job
    assert lab.events("instance.app_failed", sid, since)
    assert lab.events("instance.restarted", sid, since)
    assert not lab.events("instance.recovery_failed", sid, since)
