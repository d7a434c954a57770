"""What a tenant (a `project:<id>` token) may put in an instance: only what
the admin offers in `[tenants]` (STYLE.md habit 12: tenant input never
reaches a host path, a device, a bridge or an internal URL).

`check_instance(who, instance, before, tenants)` is called by the instances
routes for project tokens, on create (`before` is None) and on every PATCH
(only the fields the tenant changes are judged, so an admin's choices on a
tenant's instance stay editable around them). The rules:

- `host` (where it runs, and so which hosts exist) is for admins and
  operators: 403;
- `spec.xml` (a whole libvirt domain: any disk path, emulator, device) is
  for admins and operators: 403;
- `spec.image` must be one of `[tenants] images` (when set; else any image
  under `[cloud] image_dir`), `spec.bridge` the bridge of one of
  `[tenants] networks`, and `spec.address` / `spec.gateway` inside that
  network: else 422 naming the field and what is offered;
- `spec.health_url` and http probe targets must name an IP address that is
  public or inside an offered network, never a metadata address
  (`vmha.adapters.bus.urls.check_literal_url`, the webhooks' checker);
- an inline policy's `priority` is at most `[tenants] max_priority`;
- an `exec` probe (a command run inside the guest through its agent) must
  be one of `[tenants] exec_commands`, exactly, and so must the command of
  an `exec:` escalation step (`app_actions`, compared as argument lists):
  else 403;
- a tcp probe naming a host (the host agent connects to it) must name an
  address inside an offered network (a bare port means the instance's own).

Admins and operators are not limited here. No I/O.
"""

from __future__ import annotations

import ipaddress

from vmha.adapters.bus.urls import check_literal_url
from vmha.api.auth import Principal
from vmha.config import TenantNetwork, TenantsConfig
from vmha.domain.model import Instance
from vmha.domain.policy import HAPolicy, ProbeKind
from vmha.domain.probes import split_command, split_tcp
from vmha.domain.spec import InstanceSpec
from vmha.errors import PermissionDenied, ValidationError

STAFF_ONLY = "is for admins and operators"


def check_instance(who: Principal, instance: Instance, before: Instance | None,
                   tenants: TenantsConfig) -> None:
    """Nothing for admins and operators; for a project token, refuse what
    the admin does not offer (see the module docstring)."""
    if who.project is None:
        return
    if instance.host is not None and (before is None or instance.host != before.host):
        raise PermissionDenied(f"choosing the host (body.host) {STAFF_ONLY}; leave it out and "
                               "vmha places the instance")
    if instance.policy is not None and (before is None or instance.policy != before.policy):
        check_policy(instance.policy, tenants)
    if instance.spec is not None and (before is None or instance.spec != before.spec):
        check_spec(instance.spec, tenants)


def check_policy(policy: HAPolicy, tenants: TenantsConfig, field: str = "body.policy") -> None:
    if policy.priority > tenants.max_priority:
        raise ValidationError(f"{field}.priority", (
            f"{policy.priority} is above {tenants.max_priority}, the highest priority "
            "project tokens may give ([tenants] max_priority); ask an admin for a named "
            "policy with a higher one"))
    offered = networks(tenants)
    for index, probe in enumerate(policy.probes):
        where = f"{field}.probes[{index}].target"
        if probe.kind is ProbeKind.EXEC and probe.target not in tenants.exec_commands:
            raise PermissionDenied(_exec_refusal(where, "exec probes", tenants))
        if probe.kind is ProbeKind.HTTP:
            _url(where, probe.target, offered)
        if probe.kind is ProbeKind.TCP:
            _tcp(where, probe.target, offered)
    allowed = {split_command(c) for c in tenants.exec_commands}
    for index, step in enumerate(policy.app_actions):
        if step.kind == "exec" and step.command not in allowed:
            raise PermissionDenied(_exec_refusal(f"{field}.app_actions[{index}]", "exec steps",
                                                 tenants))


def _exec_refusal(where: str, what: str, tenants: TenantsConfig) -> str:
    return (f"{where}: {what} run commands inside the guest; project tokens may use only "
            f"the commands an admin offers ([tenants] exec_commands): "
            f"{', '.join(tenants.exec_commands) or 'none'}")


def _tcp(field: str, target: str, offered: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
         ) -> None:
    """A tcp probe's host (the host's agent connects to it) must be an offered
    address; a bare port is the instance's own address (its spec is checked)."""
    host = split_tcp(target)[0]
    if not host:
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValidationError(field, f"{host!r} is a name; a project token's tcp probe names "
                              "an address inside an offered network, or only a port") from None
    if not any(address in network for network in offered):
        raise ValidationError(field, f"{address} is outside the networks offered to tenants")


def check_spec(spec: InstanceSpec, tenants: TenantsConfig) -> None:
    if spec.xml:
        raise PermissionDenied(f"a raw domain XML (body.spec.xml) {STAFF_ONLY}; give an image "
                               "the admin offers instead")
    if tenants.images is not None and spec.image not in tenants.images:
        raise ValidationError("body.spec.image", f"{spec.image!r} is not offered to tenants; "
                              f"offered: {', '.join(tenants.images) or 'none'}")
    network = _network(spec.bridge, tenants.networks)
    for name in ("address", "gateway"):
        value = getattr(spec, name).split("/", 1)[0]
        if value and ipaddress.ip_address(value) not in network.network:
            raise ValidationError(f"body.spec.{name}", f"{value} is outside {network.cidr}, "
                                  f"the network offered on bridge {network.bridge}")
    if spec.health_url:
        _url("body.spec.health_url", spec.health_url, networks(tenants))


def networks(tenants: TenantsConfig) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [n.network for n in tenants.networks]


def _network(bridge: str, offered: tuple[TenantNetwork, ...]) -> TenantNetwork:
    for network in offered:
        if network.bridge == bridge:
            return network
    names = ", ".join(n.bridge for n in offered) or "none ([tenants] networks is empty)"
    raise ValidationError("body.spec.bridge", f"bridge {bridge!r} is not offered to tenants; "
                          f"offered: {names}")


def _url(field: str, url: str, offered: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
         ) -> None:
    try:
        check_literal_url(url, offered)
    except ValidationError as exc:
        raise ValidationError(field, exc.reason) from exc
