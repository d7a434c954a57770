"""What Nova knows, read in one go: compute hosts and servers of all projects.

`read_snapshot(nova, images)` lists the `nova-compute` services (a host
per service, its segment from the first host aggregate holding it when
asked), and every server of every project with a host: id, name, project,
host, status, task state, the flavor's resources and extra specs (embedded
in the server since microversion 2.47), the server's metadata and its
image's properties (one Glance read per image and snapshot), and the
server's Nova server group when that group's policy is `anti-affinity`
(every project's groups, microversion 2.64). Plain values out; the caller
turns them into vmha's instances (policies through
`vmha.domain.cloudpolicy`).

Which server groups count: `anti-affinity` only, as vmha's planner keeps
groups strictly apart. `soft-anti-affinity` is Nova's preference, not a
rule: read as a strict group it could leave a server unplaced that Nova
would place, so it is left to Nova's weighers. An `anti-affinity` group
whose rule `max_server_per_host` allows more than one member per host is
left to Nova's filter for the same reason. A group is named
`nova:<uuid>`: the `nova:` prefix keeps Nova's groups apart from groups
set through vmha's API, and the uuid from any other group's name.

Synchronous (run it in a thread); errors are the Nova client's (vmha's
error tree). It never writes anything.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vmha.adapters.cloud.openstack import Nova, host_of, task_of
from vmha.domain.cloudpolicy import Layers
from vmha.domain.commands import CLOUD_GROUP_PREFIX
from vmha.domain.errors import PermissionDenied
from vmha.domain.model import NAME_MAX
from vmha.domain.recovery import HOLD_REASON_PREFIX

log = logging.getLogger("vmha.cloud.openstack")

MV_INVENTORY = "2.47"  # servers embed their flavor (with extra specs for admins)
MV_GROUPS = "2.64"  # server groups with one `policy` and its `rules`
PAGE = 1000


@dataclass(frozen=True)
class NovaHost:
    name: str
    aggregates: tuple[str, ...] = ()
    up: bool = True
    disabled: bool = False
    forced_down: bool = False
    held: bool = False  # disabled by a recovery job of vmha (its disabled_reason)


@dataclass(frozen=True)
class NovaServer:
    id: str
    name: str
    host: str
    project: str
    status: str
    task_state: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    layers: Layers = field(default_factory=lambda: Layers({}, {}, {}))
    group: str | None = None  # its anti-affinity server group (nova:<uuid>)


@dataclass(frozen=True)
class Snapshot:
    hosts: tuple[NovaHost, ...]
    servers: tuple[NovaServer, ...]
    read_at: float | None = None  # wall clock when the reading began


def vmha_name(name: str, server_id: str) -> str:
    """A Nova server name as a vmha instance name (letters, digits, -_.)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:NAME_MAX]
    return clean or f"server-{server_id[:8]}"


def _hosts(nova: Nova) -> tuple[NovaHost, ...]:
    services = nova.call("GET", "/os-services?binary=nova-compute", "2.53")["services"]
    aggs: dict[str, list[str]] = {}
    for agg in nova.call("GET", "/os-aggregates", "2.53").get("aggregates", []):
        for host in agg.get("hosts") or []:
            aggs.setdefault(host, []).append(str(agg["name"]))
    return tuple(NovaHost(name=s["host"], aggregates=tuple(sorted(aggs.get(s["host"], []))),
                          up=s.get("state") == "up", disabled=s.get("status") == "disabled",
                          forced_down=bool(s.get("forced_down")), held=_held(s))
                 for s in services)


def _held(service: dict[str, Any]) -> bool:
    """Out of scheduling by a recovery job of vmha: disabled, with the
    reason the job gave (an operator's disable, even through vmha, is not)."""
    reason = str(service.get("disabled_reason") or "")
    return service.get("status") == "disabled" and reason.startswith(HOLD_REASON_PREFIX)


def _servers(nova: Nova) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    marker = ""
    while True:
        page = nova.call("GET", f"/servers/detail?all_tenants=1&limit={PAGE}"
                         + (f"&marker={marker}" if marker else ""), MV_INVENTORY)["servers"]
        found.extend(page)
        if len(page) < PAGE:
            return found
        marker = page[-1]["id"]


def _pages(nova: Nova, path: str, key: str, mv: str) -> list[dict[str, Any]]:
    """Every item of a list Nova pages by `limit` and `offset`."""
    found: list[dict[str, Any]] = []
    while True:
        page = nova.call("GET", f"{path}&limit={PAGE}&offset={len(found)}", mv)[key]
        found.extend(page)
        if len(page) < PAGE:
            return found


def anti_affinity_groups(nova: Nova) -> dict[str, str]:
    """Server id -> `nova:<uuid>` of its server group, for the members of
    every project's strict `anti-affinity` groups (see the module's
    docstring). A cloud whose policy refuses vmha the list (403) gives none:
    Nova's own filter still keeps those groups apart."""
    try:
        groups = _pages(nova, "/os-server-groups?all_projects=True", "server_groups",
                        MV_GROUPS)
    except PermissionDenied as exc:
        log.warning("openstack inventory: %s; server groups are not read (Nova's filters "
                    "alone keep anti-affinity)", exc.detail)
        return {}
    members: dict[str, str] = {}
    for group in groups:
        per_host = (group.get("rules") or {}).get("max_server_per_host", 1)
        if group.get("policy") != "anti-affinity" or int(per_host) > 1:
            continue
        for server_id in group.get("members") or []:
            members[str(server_id)] = CLOUD_GROUP_PREFIX + str(group["id"])
    return members


def _strings(data: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (data or {}).items()}


def to_server(raw: Mapping[str, Any], image_props: Mapping[str, str],
              group: str | None = None) -> NovaServer:
    flavor = raw.get("flavor") or {}
    return NovaServer(
        id=str(raw["id"]), name=vmha_name(str(raw.get("name") or ""), str(raw["id"])),
        host=host_of(dict(raw)), project=str(raw.get("tenant_id") or ""),
        status=str(raw.get("status") or ""), task_state=task_of(dict(raw)),
        vcpus=int(flavor.get("vcpus") or 0), ram_mb=int(flavor.get("ram") or 0),
        disk_gb=int(flavor.get("disk") or 0),
        layers=Layers(_strings(raw.get("metadata")), dict(image_props),
                      _strings(flavor.get("extra_specs"))), group=group)


def read_snapshot(nova: Nova, image_props: Callable[[str], Mapping[str, str]]) -> Snapshot:
    """Hosts and servers (those placed on a host) as Nova records them now,
    with the time the reading began."""
    read_at = time.time()
    hosts = _hosts(nova)
    raws = _servers(nova)
    groups = anti_affinity_groups(nova)  # after the servers: a listed server's group is in it
    cache: dict[str, Mapping[str, str]] = {}
    servers = []
    for raw in raws:
        if not host_of(raw):
            continue  # not placed yet (or never): nothing to protect
        image = raw.get("image") or {}
        image_id = str(image.get("id") or "") if isinstance(image, dict) else ""
        if image_id and image_id not in cache:
            cache[image_id] = image_props(image_id)
        servers.append(to_server(raw, cache.get(image_id, {}), groups.get(str(raw["id"]))))
    return Snapshot(hosts, tuple(servers), read_at)
