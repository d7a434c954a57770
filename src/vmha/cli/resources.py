"""`vmha segment|host|instance|policy ...`: CRUD through the REST API.

Each resource gets `list`, `show`, `create`, `update`, `delete` (plus
`host maintenance|power-status|fence-ack` and `instance policy`). Tables by default, `--json` for
the raw answer. Talks only to the API (`vmha.cli.client`), never to the
store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from vmha.cli.client import DEFAULT_URL, AsJson, CliError, Token, Url, cli_errors, connect
from vmha.cli.client import read_data_file as read_policy_file
from vmha.cli.output import Column, field, print_json, print_page, print_record

Limit = Annotated[int, typer.Option("--limit", help="Page size.")]
Marker = Annotated[str | None, typer.Option("--marker", help="Start after this key.")]
Sort = Annotated[str | None, typer.Option("--sort", help="Field to sort by.")]
Desc = Annotated[bool, typer.Option("--desc", help="Sort in descending order.")]
PolicyFile = Annotated[
    Path | None, typer.Option("--policy-file", help="HA policy as a JSON or YAML mapping.")
]


def _path(collection: str, key: str, suffix: str = "") -> str:
    return f"/v1/{collection}/{quote(key, safe='')}{suffix}"


def _shown(data: Any, as_json: bool) -> None:
    if as_json:
        print_json(data)
    else:
        print_record(data)


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _add_show_delete(app: typer.Typer, collection: str, singular: str, key_name: str) -> None:
    """`show KEY` and `delete KEY`, the same for every resource."""

    @app.command("show")
    @cli_errors
    def show(
        key: str = typer.Argument(..., help=f"The {singular}'s {key_name}."),
        url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
    ) -> None:
        """Show one."""
        with connect(url, token) as api:
            _shown(api.get(_path(collection, key)), as_json)

    @app.command("delete")
    @cli_errors
    def delete(
        key: str = typer.Argument(..., help=f"The {singular}'s {key_name}."),
        url: Url = DEFAULT_URL, token: Token = None,
    ) -> None:
        """Delete one."""
        with connect(url, token) as api:
            api.delete(_path(collection, key))
        typer.echo(f"deleted {singular} {key}")


def _list(
    url: str, token: str | None, collection: str, columns: Sequence[Column], as_json: bool,
    params: dict[str, Any],
) -> None:
    with connect(url, token) as api:
        print_page(api.get(f"/v1/{collection}", params), columns, as_json)


# -- segments ------------------------------------------------------------------

segment_app = typer.Typer(help="Segments: failure domains of hosts.", no_args_is_help=True)
SEGMENT_COLUMNS: list[Column] = [
    ("NAME", field("name")), ("RECOVERY", field("recovery_method")),
    ("ENABLED", field("enabled")), ("DEFAULT POLICY", field("default_policy")),
    ("MASS FAILURE", field("mass_failure_threshold")), ("DESCRIPTION", field("description")),
]
_add_show_delete(segment_app, "segments", "segment", "name")


@segment_app.command("list")
@cli_errors
def segment_list(
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
    limit: Limit = 100, marker: Marker = None, sort: Sort = None, desc: Desc = False,
) -> None:
    """List segments."""
    _list(url, token, "segments", SEGMENT_COLUMNS, as_json,
          {"limit": limit, "marker": marker, "sort": sort, "desc": desc or None})


SegmentOpts = dict[str, Any]


def _segment_body(
    recovery_method: str | None, description: str | None, default_policy: str | None,
    threshold: float | None, enabled: bool | None, hold: bool | None,
) -> SegmentOpts:
    return _given(recovery_method=recovery_method, description=description,
                  default_policy=default_policy, mass_failure_threshold=threshold,
                  enabled=enabled, hold_recovered_hosts=hold)


RecoveryOpt = Annotated[str | None, typer.Option(
    "--recovery-method", help="auto | reserved_host | auto_priority | rh_priority")]
DescriptionOpt = Annotated[str | None, typer.Option("--description")]
DefaultPolicyOpt = Annotated[str | None, typer.Option(
    "--default-policy", help="Stored policy for instances without one.")]
ThresholdOpt = Annotated[float | None, typer.Option(
    "--mass-failure-threshold", help="Share of suspect hosts that stops automatic recovery.")]
EnabledOpt = Annotated[bool | None, typer.Option("--enabled/--disabled", show_default=False)]
HoldOpt = Annotated[bool | None, typer.Option(
    "--hold-recovered-hosts/--no-hold-recovered-hosts", show_default=False)]


@segment_app.command("create")
@cli_errors
def segment_create(
    name: str, recovery_method: RecoveryOpt = None, description: DescriptionOpt = None,
    default_policy: DefaultPolicyOpt = None, mass_failure_threshold: ThresholdOpt = None,
    enabled: EnabledOpt = None, hold_recovered_hosts: HoldOpt = None,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Create a segment."""
    body = _segment_body(recovery_method, description, default_policy,
                         mass_failure_threshold, enabled, hold_recovered_hosts)
    with connect(url, token) as api:
        _shown(api.post("/v1/segments", {"name": name, **body}), as_json)


@segment_app.command("update")
@cli_errors
def segment_update(
    name: str, recovery_method: RecoveryOpt = None, description: DescriptionOpt = None,
    default_policy: DefaultPolicyOpt = None, mass_failure_threshold: ThresholdOpt = None,
    enabled: EnabledOpt = None, hold_recovered_hosts: HoldOpt = None,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Change the given fields of a segment."""
    body = _segment_body(recovery_method, description, default_policy,
                         mass_failure_threshold, enabled, hold_recovered_hosts)
    if not body:
        raise CliError("nothing to change; give at least one option (see --help)")
    with connect(url, token) as api:
        _shown(api.patch(_path("segments", name), body), as_json)


@segment_app.command("resume")
@cli_errors
def segment_resume(
    name: str, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Resume automatic fencing and recovery in a segment the mass-failure
    guard paused.

    Check first that its failed hosts are really down, not just cut off from
    the controller: once resumed, they are fenced (powered off)."""
    with connect(url, token) as api:
        result = api.post(_path("segments", name, "/resume"), {})
    if as_json:
        print_json(result)
    else:
        typer.echo(f"segment {result['segment']}: automatic recovery resumed by "
                   f"{result['resumed_by']}")


# -- hosts ---------------------------------------------------------------------

host_app = typer.Typer(help="Hosts: hypervisors.", no_args_is_help=True)
def _number(key: str, unit: str = "") -> Callable[[dict[str, Any]], str]:
    def show(item: dict[str, Any]) -> str:
        value = item.get(key)
        return "-" if value is None else f"{value:.1f}{unit}"

    return show


HOST_COLUMNS: list[Column] = [
    ("NAME", field("name")), ("SEGMENT", field("segment")), ("STATE", field("state")),
    ("ADDRESS", field("address")), ("HEARTBEAT", _number("heartbeat_age_s", " s ago")),
    ("PHI", _number("phi")), ("MAINTENANCE", field("maintenance")),
    ("RESERVED", field("reserved")),
]
_add_show_delete(host_app, "hosts", "host", "name")

SegmentOpt = Annotated[str | None, typer.Option("--segment")]
AddressOpt = Annotated[str | None, typer.Option("--address")]
VcpusOpt = Annotated[int | None, typer.Option("--vcpus", min=0)]
RamOpt = Annotated[int | None, typer.Option("--ram-mb", min=0)]
DiskOpt = Annotated[int | None, typer.Option("--disk-gb", min=0)]
ReservedOpt = Annotated[bool | None, typer.Option("--reserved/--not-reserved", show_default=False)]
BmcOpt = Annotated[str | None, typer.Option("--bmc", help="Reference to the host's BMC.")]
FenceOpt = Annotated[list[str] | None, typer.Option(
    "--fence-level", help="A fence level, e.g. 'redfish' or 'ipmi,agent_watchdog'; repeatable.")]


@host_app.command("list")
@cli_errors
def host_list(
    segment: SegmentOpt = None,
    state: Annotated[str | None, typer.Option("--state")] = None,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
    limit: Limit = 100, marker: Marker = None, sort: Sort = None, desc: Desc = False,
) -> None:
    """List hosts."""
    _list(url, token, "hosts", HOST_COLUMNS, as_json,
          {"segment": segment, "state": state, "limit": limit, "marker": marker,
           "sort": sort, "desc": desc or None})


def _capacity(current: dict[str, Any], vcpus: int | None, ram: int | None,
              disk: int | None) -> dict[str, Any] | None:
    if vcpus is None and ram is None and disk is None:
        return None
    return {**current, **_given(vcpus=vcpus, ram_mb=ram, disk_gb=disk)}


def _fence_levels(levels: list[str] | None) -> list[list[str]] | None:
    if not levels:
        return None
    return [[m.strip() for m in level.split(",") if m.strip()] for level in levels]


@host_app.command("create")
@cli_errors
def host_create(
    name: str, segment: Annotated[str, typer.Option("--segment")],
    address: AddressOpt = None, vcpus: VcpusOpt = None, ram_mb: RamOpt = None,
    disk_gb: DiskOpt = None, reserved: ReservedOpt = None, bmc: BmcOpt = None,
    fence_level: FenceOpt = None,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Register a host in a segment."""
    body = _given(name=name, segment=segment, address=address, reserved=reserved, bmc=bmc,
                  capacity=_capacity({}, vcpus, ram_mb, disk_gb),
                  fence_levels=_fence_levels(fence_level))
    with connect(url, token) as api:
        _shown(api.post("/v1/hosts", body), as_json)


@host_app.command("update")
@cli_errors
def host_update(
    name: str, segment: SegmentOpt = None, address: AddressOpt = None,
    vcpus: VcpusOpt = None, ram_mb: RamOpt = None, disk_gb: DiskOpt = None,
    reserved: ReservedOpt = None, bmc: BmcOpt = None, fence_level: FenceOpt = None,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Change the given fields of a host (not its state: see `maintenance`)."""
    with connect(url, token) as api:
        body = _given(segment=segment, address=address, reserved=reserved, bmc=bmc,
                      fence_levels=_fence_levels(fence_level))
        if vcpus is not None or ram_mb is not None or disk_gb is not None:
            current = api.get(_path("hosts", name))["capacity"]
            body["capacity"] = _capacity(current, vcpus, ram_mb, disk_gb)
        if not body:
            raise CliError("nothing to change; give at least one option (see --help)")
        _shown(api.patch(_path("hosts", name), body), as_json)


@host_app.command("maintenance")
@cli_errors
def host_maintenance(
    name: str,
    on: Annotated[bool, typer.Option("--on/--off", help="Enter or leave maintenance.")],
    reason: Annotated[str, typer.Option("--reason")] = "",
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Put a host into maintenance (--on) or take it out (--off)."""
    with connect(url, token) as api:
        host = api.post(_path("hosts", name, "/maintenance"), {"enabled": on, "reason": reason})
    if as_json:
        print_json(host)
    else:
        typer.echo(f"host {host['name']}: state {host['state']}, "
                   f"maintenance {'on' if host['maintenance'] else 'off'}")


@host_app.command("power-status")
@cli_errors
def host_power_status(
    name: str, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Read a host's power through each configured BMC method (operator)."""
    with connect(url, token) as api:
        result = api.get(_path("hosts", name, "/power-status"))
    if as_json:
        print_json(result)
        return
    for method, reading in result["methods"].items():
        typer.echo(f"{name} {method}: {reading}")


@host_app.command("fence-ack")
@cli_errors
def host_fence_ack(
    name: str,
    force: Annotated[bool, typer.Option(
        "--force", help="Even if its heartbeats are current or peers reach it (audited).")] = False,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Confirm that a failed host is powered off (the `manual` fence level).

    Only do this after checking the host is really off: its instances will be
    started elsewhere. Refused while the host still answers, unless --force."""
    with connect(url, token) as api:
        result = api.post(_path("hosts", name, "/fence-ack"), {"force": force})
    if as_json:
        print_json(result)
    else:
        forced = " (forced)" if result.get("forced") else ""
        typer.echo(f"host {result['host']}: fence acknowledged by "
                   f"{result['acknowledged_by']}{forced}")


FENCE_END = {"fenced", "evacuating", "verifying", "done", "failed", "paused"}


@host_app.command("fence")
@cli_errors
def host_fence(
    name: str,
    method: Annotated[str | None, typer.Option(
        "--method", help="Only this power method: ipmi, redfish or fence_agent.")] = None,
    wait: Annotated[float, typer.Option(
        "--wait", help="Seconds to wait for the outcome (0: do not wait).")] = 60.0,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Power a host off through its BMC (operator). Its instances are then
    recovered elsewhere, like after a host failure."""
    with connect(url, token) as api:
        started = api.post(_path("hosts", name, "/fence"), {"method": method})
        job = _wait_fence(api, started["job"], wait)
    if as_json:
        print_json({**started, "job_state": job["state"], "steps": job["steps"]})
        return
    typer.echo(f"host {name}: fence requested by {started['requested_by']}, "
               f"job {started['job']}")
    for step in job["steps"]:
        if step["name"].startswith("fence:"):
            took = "" if step["duration_s"] is None else f" {step['duration_s']:.2f} s"
            typer.echo(f"  {step['name']}: {step['state']}{took} {step['detail']}")
    typer.echo(f"job {job['id']}: {job['state']} ({job['reason']})")
    if job["state"] in ("paused", "failed"):
        raise typer.Exit(1)


def _wait_fence(api: Any, job_id: str, wait: float) -> dict[str, Any]:
    import time  # the CLI's own wall clock, not the engine's

    deadline = time.monotonic() + wait
    while True:
        job: dict[str, Any] = api.get(_path("jobs", job_id))
        if job["state"] in FENCE_END or time.monotonic() >= deadline:
            return job
        time.sleep(0.5)


@host_app.command("bmc-set")
@cli_errors
def host_bmc_set(
    name: str,
    username: Annotated[str, typer.Option("--username")],
    password_file: Annotated[Path, typer.Option(
        "--password-file", help="File holding the BMC password (never on the command line).")],
    ipmi_address: Annotated[str, typer.Option("--ipmi-address")] = "",
    ipmi_port: Annotated[int, typer.Option("--ipmi-port")] = 623,
    redfish_url: Annotated[str, typer.Option("--redfish-url")] = "",
    redfish_system: Annotated[str, typer.Option("--redfish-system")] = "",
    fence_agent: Annotated[str, typer.Option("--fence-agent")] = "",
    option: Annotated[list[str] | None, typer.Option(
        "--option", help="fence agent option KEY=VALUE (repeatable)")] = None,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Store a host's BMC (admin); the password is kept encrypted, write-only."""
    try:
        password = password_file.read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read {password_file}: {exc.strerror}") from exc
    options = dict(o.split("=", 1) for o in option or [] if "=" in o)
    body = {"username": username, "password": password, "ipmi_address": ipmi_address,
            "ipmi_port": ipmi_port, "redfish_url": redfish_url,
            "redfish_system": redfish_system, "fence_agent": fence_agent,
            "fence_agent_options": options}
    with connect(url, token) as api:
        result = api.request("PUT", _path("hosts", name, "/bmc"), json=body)
    _show(result, as_json)


@host_app.command("bmc-show")
@cli_errors
def host_bmc_show(
    name: str, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Show a host's stored BMC (the password as ***)."""
    with connect(url, token) as api:
        result = api.get(_path("hosts", name, "/bmc"))
    _show(result, as_json)


def _show(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(result)
    else:
        print_record(result)


# -- instances -----------------------------------------------------------------

instance_app = typer.Typer(help="Instances: the VMs vmha protects.", no_args_is_help=True)


def _policy_label(row: Mapping[str, Any]) -> str:
    if row.get("policy") is not None:
        return "(inline)"
    return str(row.get("policy_name") or "-")


INSTANCE_COLUMNS: list[Column] = [
    ("ID", field("id")), ("NAME", field("name")), ("PROJECT", field("project")),
    ("HOST", field("host")), ("STATE", field("state")), ("POLICY", _policy_label),
]
_add_show_delete(instance_app, "instances", "instance", "id")

HostOpt = Annotated[str | None, typer.Option("--host")]
ProjectOpt = Annotated[str | None, typer.Option("--project")]
PolicyNameOpt = Annotated[str | None, typer.Option("--policy-name", help="A stored policy.")]
AntiAffinityOpt = Annotated[str | None, typer.Option("--anti-affinity-group")]


@instance_app.command("list")
@cli_errors
def instance_list(
    project: ProjectOpt = None, host: HostOpt = None, segment: SegmentOpt = None,
    state: Annotated[str | None, typer.Option("--state")] = None,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
    limit: Limit = 100, marker: Marker = None, sort: Sort = None, desc: Desc = False,
) -> None:
    """List instances."""
    _list(url, token, "instances", INSTANCE_COLUMNS, as_json,
          {"project": project, "host": host, "segment": segment, "state": state,
           "limit": limit, "marker": marker, "sort": sort, "desc": desc or None})


@instance_app.command("create")
@cli_errors
def instance_create(
    name: str, instance_id: Annotated[str | None, typer.Option("--id")] = None,
    host: HostOpt = None, project: ProjectOpt = None, vcpus: VcpusOpt = None,
    ram_mb: RamOpt = None, disk_gb: DiskOpt = None, policy_name: PolicyNameOpt = None,
    policy_file: PolicyFile = None, anti_affinity_group: AntiAffinityOpt = None,
    image: Annotated[str | None, typer.Option(
        "--image", help="libvirt mode: define it from this image (vmha starts it).")] = None,
    address: Annotated[str | None, typer.Option(
        "--address", help="libvirt mode: the guest's ADDRESS/PREFIX.")] = None,
    health_url: Annotated[str | None, typer.Option(
        "--health-url", help="libvirt mode: answers 200 when the application is up.")] = None,
    domain_xml: Annotated[Path | None, typer.Option(
        "--domain-xml", help="libvirt mode: a file with a whole libvirt <domain>.")] = None,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Protect an instance (the id is generated unless --id is given). With --image or
    --domain-xml (libvirt mode) vmha defines and starts it on --host (or picks one)."""
    body = _given(id=instance_id, name=name, host=host, project=project,
                  resources=_capacity({}, vcpus, ram_mb, disk_gb), policy_name=policy_name,
                  policy=read_policy_file(policy_file) if policy_file else None,
                  anti_affinity_group=anti_affinity_group,
                  spec=_spec(image, address, health_url, domain_xml))
    with connect(url, token) as api:
        _shown(api.post("/v1/instances", body), as_json)


def _spec(image: str | None, address: str | None, health_url: str | None,
          domain_xml: Path | None) -> dict[str, str] | None:
    """The instance's spec from the options, None when none was given."""
    if domain_xml is not None:
        if image or address:
            raise CliError("give --image (and --address) or --domain-xml, not both")
        try:
            return {"xml": domain_xml.read_text()}
        except OSError as exc:
            raise CliError(f"cannot read {domain_xml}: {exc.strerror}") from exc
    if image is None:
        if address or health_url:
            raise CliError("--address and --health-url need --image")
        return None
    return _given(image=image, address=address, health_url=health_url)


@instance_app.command("update")
@cli_errors
def instance_update(
    instance_id: str, name: Annotated[str | None, typer.Option("--name")] = None,
    host: HostOpt = None, project: ProjectOpt = None, vcpus: VcpusOpt = None,
    ram_mb: RamOpt = None, disk_gb: DiskOpt = None, policy_name: PolicyNameOpt = None,
    policy_file: PolicyFile = None,
    clear_policy: Annotated[bool, typer.Option(
        "--clear-policy", help="Remove the inline policy.")] = False,
    anti_affinity_group: AntiAffinityOpt = None,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Change the given fields of an instance."""
    with connect(url, token) as api:
        body = _given(name=name, host=host, project=project, policy_name=policy_name,
                      anti_affinity_group=anti_affinity_group,
                      policy=read_policy_file(policy_file) if policy_file else None)
        if clear_policy:
            body["policy"] = None
        if vcpus is not None or ram_mb is not None or disk_gb is not None:
            current = api.get(_path("instances", instance_id))["resources"]
            body["resources"] = _capacity(current, vcpus, ram_mb, disk_gb)
        if not body:
            raise CliError("nothing to change; give at least one option (see --help)")
        _shown(api.patch(_path("instances", instance_id), body), as_json)


@instance_app.command("policy")
@cli_errors
def instance_policy(
    instance_id: str, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Show the policy vmha applies to an instance, and where it comes from."""
    with connect(url, token) as api:
        _shown(api.get(_path("instances", instance_id, "/policy")), as_json)


# -- named policies ------------------------------------------------------------

policy_app = typer.Typer(help="Named HA policies.", no_args_is_help=True)


def _layer(name: str) -> Column:
    return (name.upper(), lambda row: row["policy"][name])


POLICY_COLUMNS: list[Column] = [
    ("NAME", field("name")), _layer("host"), _layer("guest"), _layer("app"),
    ("PRIORITY", lambda row: row["policy"]["priority"]),
    ("DESCRIPTION", field("description")),
]
_add_show_delete(policy_app, "policies", "policy", "name")


@policy_app.command("list")
@cli_errors
def policy_list(
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
    limit: Limit = 100, marker: Marker = None,
) -> None:
    """List named policies."""
    _list(url, token, "policies", POLICY_COLUMNS, as_json, {"limit": limit, "marker": marker})


@policy_app.command("create")
@cli_errors
def policy_create(
    name: str, policy_file: PolicyFile = None, description: DescriptionOpt = None,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Store a named policy (omitted keys take the built-in defaults)."""
    body = _given(name=name, description=description,
                  policy=read_policy_file(policy_file) if policy_file else None)
    with connect(url, token) as api:
        _shown(api.post("/v1/policies", body), as_json)


@policy_app.command("update")
@cli_errors
def policy_update(
    name: str, policy_file: PolicyFile = None, description: DescriptionOpt = None,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Replace a policy's settings (--policy-file) and/or its description."""
    body = _given(description=description,
                  policy=read_policy_file(policy_file) if policy_file else None)
    if not body:
        raise CliError("nothing to change; give --policy-file and/or --description")
    with connect(url, token) as api:
        _shown(api.patch(_path("policies", name), body), as_json)
