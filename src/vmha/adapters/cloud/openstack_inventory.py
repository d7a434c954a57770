"""What Nova knows, read in one go: compute hosts and servers of all projects.

`read_snapshot(nova, images)` lists the `nova-compute` services (a host
per service, its segment from the first host aggregate holding it when
asked), and every server of every project with a host: id, name, project,
host, status, task state, the flavor's resources and extra specs (embedded
in the server since microversion 2.47), the server's metadata and its
image's properties (one Glance read per image and snapshot). Plain values
out; the caller turns them into vmha's instances (policies through
`vmha.domain.cloudpolicy`).

Synchronous (run it in a thread); errors are the Nova client's (vmha's
error tree). It never writes anything.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vmha.adapters.cloud.openstack import Nova, host_of, task_of
from vmha.domain.cloudpolicy import Layers
from vmha.domain.model import NAME_MAX
from vmha.domain.recovery import HOLD_REASON_PREFIX

MV_INVENTORY = "2.47"  # servers embed their flavor (with extra specs for admins)
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


def _strings(data: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (data or {}).items()}


def to_server(raw: Mapping[str, Any], image_props: Mapping[str, str]) -> NovaServer:
    flavor = raw.get("flavor") or {}
    return NovaServer(
        id=str(raw["id"]), name=vmha_name(str(raw.get("name") or ""), str(raw["id"])),
        host=host_of(dict(raw)), project=str(raw.get("tenant_id") or ""),
        status=str(raw.get("status") or ""), task_state=task_of(dict(raw)),
        vcpus=int(flavor.get("vcpus") or 0), ram_mb=int(flavor.get("ram") or 0),
        disk_gb=int(flavor.get("disk") or 0),
        layers=Layers(_strings(raw.get("metadata")), dict(image_props),
                      _strings(flavor.get("extra_specs"))))


def read_snapshot(nova: Nova, image_props: Callable[[str], Mapping[str, str]]) -> Snapshot:
    """Hosts and servers (those placed on a host) as Nova records them now,
    with the time the reading began."""
    read_at = time.time()
    hosts = _hosts(nova)
    cache: dict[str, Mapping[str, str]] = {}
    servers = []
    for raw in _servers(nova):
        if not host_of(raw):
            continue  # not placed yet (or never): nothing to protect
        image = raw.get("image") or {}
        image_id = str(image.get("id") or "") if isinstance(image, dict) else ""
        if image_id and image_id not in cache:
            cache[image_id] = image_props(image_id)
        servers.append(to_server(raw, cache.get(image_id, {})))
    return Snapshot(hosts, tuple(servers), read_at)
