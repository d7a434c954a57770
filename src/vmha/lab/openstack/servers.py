"""The lab cloud's servers and what the lab tells about the cloud.

- `controller_cloud(record)`: the `[cloud]`/`[openstack]` part of the lab
  controller's configuration (the lab cloud's admin, password in a file).
- `wait_computes(st, hosts)`: until each host's nova-compute reports up in
  Nova and its node is mapped to the cell (Nova can schedule onto it).
- `create(lab_dir, count, ...)`: Nova servers `vm1`..`vmM` (flavor
  `vmha.tiny`, the lab image, `networks: none`), spread over the hosts with
  microversion 2.74's `host`, their HA policy as `vmha:*` metadata; waits
  until they are ACTIVE and known to vmha's controller.
- `status(st)`: `openstack` (the admin's credentials) and, per server,
  `server_id`, Nova's host and status and vmha's record.

Called by `vmha.lab.lab` and tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vmha.errors import Conflict, ValidationError
from vmha.lab import net, state
from vmha.lab.controller import api_request
from vmha.lab.openstack import layout as L
from vmha.lab.openstack.rest import ApiError, Session
from vmha.lab.openstack.services import secrets_of

FLAVOR = "vmha.tiny"
COMPUTE_TIMEOUT_S = 90.0
ACTIVE_TIMEOUT_S = 60.0
DEFAULT_METADATA: Mapping[str, str] = {"vmha:host": "auto"}


def credentials(record: Mapping[str, Any]) -> dict[str, str]:
    """The lab cloud's admin, for `lab status --json` and clients."""
    return {"auth_url": L.auth_url(), "username": L.ADMIN_USER,
            "password": str(record.get("secrets", {}).get("admin", "")),
            "project_name": L.ADMIN_PROJECT, "user_domain_name": L.DOMAIN,
            "project_domain_name": L.DOMAIN, "region_name": L.REGION}


def controller_cloud(record: Mapping[str, Any] | None, segment: str = "lab",
                     telemetry: bool = False) -> str:
    """TOML for the lab controller's cloud (empty without a lab cloud); with
    `telemetry`, its events go to the lab cloud's bus where Ceilometer reads
    them (host events in the admin project, whose alarms Aodh then fires)."""
    if not record or not record.get("dir"):
        return ""
    cred = credentials(record)
    pw_file = Path(record["dir"]) / "admin.password"
    pw_file.write_text(cred["password"] + "\n")
    pw_file.chmod(0o600)
    q = json.dumps
    bus = L.transport_url(secrets_of(record))
    text = ('[cloud]\nadapter = "openstack"\n[openstack]\n'
            f"auth_url = {q(cred['auth_url'])}\nusername = {q(cred['username'])}\n"
            f"password_file = {q(str(pw_file))}\nproject_name = {q(cred['project_name'])}\n"
            f"user_domain_name = {q(L.DOMAIN)}\nproject_domain_name = {q(L.DOMAIN)}\n"
            f"region_name = {q(L.REGION)}\ndefault_segment = {q(segment)}\n"
            f"inventory_interval_s = 10.0\nnotifications_url = {q(bus)}\n")
    if telemetry:
        admin = admin_project_id(record)
        text += (f"[events]\namqp_url = {q(bus)}\namqp_exchange = {q(L.VMHA_EXCHANGE)}\n"
                 f"amqp_topic = {q(L.VMHA_TOPIC)}\namqp_project_id = {q(admin)}\n"
                 'amqp_priorities = "ceilometer"\n')
    return text


def admin_project_id(record: Mapping[str, Any]) -> str:
    s = Session(L.ADMIN_USER, secrets_of(record).admin, L.ADMIN_PROJECT)
    found = s.call("GET", "identity", f"/projects?name={L.ADMIN_PROJECT}")["projects"]
    return str(found[0]["id"])


def session(st: Mapping[str, Any]) -> Session:
    return Session(L.ADMIN_USER, secrets_of(st["openstack"]).admin, L.ADMIN_PROJECT)


def compute_services(s: Session) -> dict[str, dict[str, Any]]:
    found = s.call("GET", "compute", "/os-services?binary=nova-compute")["services"]
    return {svc["host"]: svc for svc in found}


def wait_computes(st: Mapping[str, Any], hosts: Sequence[str],
                  timeout_s: float = COMPUTE_TIMEOUT_S) -> None:
    """Until every host's nova-compute is up and has a compute node."""
    s = session(st)
    deadline = time.monotonic() + timeout_s
    pending = set(hosts)
    while pending and time.monotonic() < deadline:
        services = compute_services(s)
        nodes = {h["hypervisor_hostname"] for h in s.call(
            "GET", "compute", "/os-hypervisors")["hypervisors"]}
        pending = {h for h in pending
                   if services.get(h, {}).get("state") != "up" or h not in nodes}
        if pending:
            time.sleep(0.5)
    if pending:
        raise net.LabCommandFailed(f"nova-compute of {sorted(pending)} did not come up within "
                                   f"{timeout_s:g} s; see hosts/HOST/nova-compute.log")


def _ids(s: Session) -> tuple[str, str]:
    flavors = s.call("GET", "compute", "/flavors")["flavors"]
    flavor = next(f["id"] for f in flavors if f["name"] == FLAVOR)
    images = s.call("GET", "image", f"/v2/images?name={L.IMAGE}")["images"]
    return flavor, images[0]["id"]


def boot(s: Session, name: str, host: str, metadata: Mapping[str, str],
         flavor: str, image: str, timeout_s: float = 30.0,
         hints: Mapping[str, str] | None = None) -> str:
    """Create one server on `host` (with scheduler `hints`, e.g. a server
    group); its id. Retries while the scheduler has not mapped a fresh
    compute to the cell yet (Nova answers 400 then)."""
    body: dict[str, Any] = {"server": {
        "name": name, "flavorRef": flavor, "imageRef": image, "networks": "none",
        "host": host, "metadata": dict(metadata)}}
    if hints:
        body["os:scheduler_hints"] = dict(hints)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return str(s.call("POST", "compute", "/servers", body)["server"]["id"])
        except ApiError as exc:
            if exc.status != 400 or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def wait_active(s: Session, ids: Sequence[str], timeout_s: float = ACTIVE_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for sid in sorted(pending):
            server = s.call("GET", "compute", f"/servers/{sid}")["server"]
            if server["status"] == "ERROR":
                raise net.LabCommandFailed(f"server {server['name']} went to ERROR: "
                                           f"{server.get('fault', {}).get('message', '')}")
            if server["status"] == "ACTIVE":
                pending.discard(sid)
        if pending:
            time.sleep(0.5)
    if pending:
        raise net.LabCommandFailed(f"servers {sorted(pending)} not ACTIVE after {timeout_s:g} s")


def create(lab_dir: Path, count: int, metadata: Sequence[Mapping[str, str]] = (),
           hosts: Sequence[str] | None = None) -> dict[str, Any]:
    """`count` servers (metadata i from `metadata`, else `vmha:host=auto`)
    spread over `hosts` round robin; waits until vmha knows each of them."""
    if not 0 <= count <= 100:
        raise ValidationError("vms", f"{count} is not in 0..100")
    st = state.load(lab_dir)
    if not (st.get("openstack") or {}).get("dir"):
        raise Conflict("this lab has no OpenStack cloud; use `vmha lab up --cloud openstack`")
    s = session(st)
    unlimited(s, admin_project_id(st["openstack"]))
    flavor, image = _ids(s)
    names = list(hosts or st["hosts"])
    servers = st.setdefault("servers", {})
    first = len(servers) + 1
    made = []
    for offset in range(count):
        name = f"vm{first + offset}"
        meta = metadata[offset] if offset < len(metadata) else DEFAULT_METADATA
        sid = boot(s, name, names[offset % len(names)], meta, flavor, image)
        servers[name] = {"server_id": sid, "index": first + offset}
        state.save(lab_dir, st)
        made.append(sid)
    wait_active(s, made)
    wait_known(st, made)
    return status(st)


def unlimited(s: Session, project_id: str) -> None:
    """No compute quota for the lab's project: Nova's defaults (10
    instances, 20 cores, 50 GiB) would refuse the 11th server of a lab
    (`--vms` goes up to 100)."""
    s.call("PUT", "compute", f"/os-quota-sets/{project_id}",
           {"quota_set": {"instances": -1, "cores": -1, "ram": -1}})


def wait_known(st: Mapping[str, Any], ids: Sequence[str], timeout_s: float = 60.0) -> None:
    """Until vmha's controller lists every server (its inventory sync)."""
    ctl = st["controller"]
    if not ctl.get("url"):
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        known = {i["id"] for i in api_request(ctl["url"], ctl["token"], "GET",
                                              "/v1/instances?limit=1000")["items"]}
        if set(ids) <= known:
            return
        time.sleep(0.5)
    raise net.LabCommandFailed(f"vmha did not learn of servers {sorted(ids)} within "
                               f"{timeout_s:g} s; see controller/serve.log")


def status(st: Mapping[str, Any]) -> dict[str, Any]:
    record = st.get("openstack") or {}
    if not record.get("dir"):
        return {}
    out: dict[str, Any] = {"openstack": credentials(record)}
    servers = st.get("servers") or {}
    if not servers:
        return out
    try:
        nova = {x["id"]: x for x in session(st).call(
            "GET", "compute", "/servers/detail?all_tenants=1")["servers"]}
    except (ApiError, OSError):
        nova = {}
    ctl = st["controller"]
    try:
        recorded = {i["id"]: i for i in api_request(
            ctl["url"], ctl["token"], "GET", "/v1/instances?limit=1000")["items"]}
    except (OSError, ValueError, TypeError):
        recorded = {}
    out["instances"] = {name: {
        "id": vm["server_id"], "server_id": vm["server_id"],
        "host": recorded.get(vm["server_id"], {}).get("host"),
        "state": recorded.get(vm["server_id"], {}).get("state", "unknown"),
        "nova_host": nova.get(vm["server_id"], {}).get("OS-EXT-SRV-ATTR:host"),
        "nova_status": nova.get(vm["server_id"], {}).get("status")}
        for name, vm in servers.items()}
    return out
