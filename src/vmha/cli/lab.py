"""`vmha lab ...`: a real cluster on this machine, and real faults.

Thin typer front of `vmha.lab` (see docs/lab.md): up, status, fail, heal,
power-on, restart-agent, probe, down; `image build` (the guest image).
Every command finds the lab through
`--dir` (default: the user's state dir). Errors print one line and exit
non-zero (2 when the machine lacks root or tools). Also runnable as
`python -m vmha.cli.lab`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from vmha.errors import ConfigError, VmhaError
from vmha.lab import faults
from vmha.lab import image as guest_image
from vmha.lab import lab as lab_ops
from vmha.lab.controllers import FAULTS as CONTROLLER_FAULTS
from vmha.lab.state import default_lab_dir
from vmha.lab.vms import GUEST_FAULTS

app = typer.Typer(help="A real local cluster: hosts in namespaces, real faults.",
                  no_args_is_help=True)

Dir = Annotated[Path | None, typer.Option("--dir", help="Lab directory (default: state dir).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Host = Annotated[str, typer.Argument(help="Lab host name, e.g. host1.")]
F = TypeVar("F", bound=Callable[..., Any])


def _errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VmhaError as exc:
            typer.echo(f"vmha lab: {exc.detail}", err=True)
            raise typer.Exit(2 if isinstance(exc, ConfigError) else 1) from None

    return wrapper  # type: ignore[return-value]


def _dir(directory: Path | None) -> Path:
    return (directory or default_lab_dir()).resolve()


def _print_status(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    ctl = data["controller"]
    typer.echo(f"lab in {data['dir']}; heartbeats to {data['heartbeat']}")
    typer.echo(f"controller: {ctl.get('url') or 'not started (' + ctl.get('skipped', '') + ')'}")
    for name, c in data.get("controllers", {}).items():
        typer.echo(f"  {name:12} {c['url']:26} {c['state']:12} "
                   f"{'leader' if c['leader'] else 'follower':8} pid={c['pid'] or '-'} "
                   f"faults={', '.join(c['faults']) or '-'}")
    if "etcd" in data:
        up_ = [n for n, m in data["etcd"]["members"].items() if m["running"]]
        typer.echo(f"etcd: {data['etcd']['url']} ({len(up_)} of "
                   f"{len(data['etcd']['members'])} members running)")
    for name, h in data["hosts"].items():
        faults_txt = ", ".join(h["faults"]) or "-"
        link = h.get("link", {})
        typer.echo(f"  {name:8} {h['address']:14} {h['state']:12} pids={len(h['pids'])} "
                   f"port={link.get('port', '?')} nic={link.get('nic', '?')} "
                   f"faults={faults_txt}")
    if "openstack" in data:
        cloud = data["openstack"]
        typer.echo(f"openstack: {cloud['auth_url']} as {cloud['username']} "
                   f"(project {cloud['project_name']}; password in `lab status --json`)")
    for name, vm in data.get("instances", {}).items():
        if "server_id" in vm:
            typer.echo(f"  {name:8} {vm['server_id']} {vm['state']:10} host={vm['host']} "
                       f"nova: {vm['nova_status']} on {vm['nova_host']}")
            continue
        typer.echo(f"  {name:8} {vm['address']:14} {vm['state']:12} host={vm['host']} "
                   f"running on {', '.join(vm['running_on']) or 'no host'}")


@app.command()
@_errors
def up(
    hosts: Annotated[int, typer.Option("--hosts", help="Number of hosts.")] = 3,
    directory: Dir = None,
    as_json: AsJson = False,
    controller_port: Annotated[int, typer.Option(help="Controller API port.")] = 8790,
    heartbeat_port: Annotated[int, typer.Option(help="Controller heartbeat port (UDP).")] = 8791,
    interval: Annotated[float, typer.Option(help="Heartbeat interval, seconds.")] = 1.0,
    isolation_timeout: Annotated[float, typer.Option(help="Agent isolation timeout, s.")] = 10.0,
    isolation_action: Annotated[str, typer.Option(help="stop-vms, reboot or none.")] = "reboot",
    watchdog_timeout: Annotated[float, typer.Option(help="Lab watchdog timeout, s.")] = 10.0,
    controller: Annotated[bool, typer.Option(help="Start `vmha serve` if available.")] = True,
    vms: Annotated[int, typer.Option(
        "--vms", help="Protected VMs vm1..vmN (QEMU guests, or Nova servers with --cloud "
                      "openstack).")] = 0,
    cloud: Annotated[str, typer.Option(
        "--cloud", help="libvirt (QEMU guests) or openstack (a real Keystone/Nova/...; "
                        "nova-compute in every host).")] = "libvirt",
    controllers: Annotated[int, typer.Option(
        "--controllers", help="Controllers (more than 1: each in its own network namespace, "
                              "on a 3-member etcd and PostgreSQL).")] = 1,
    lease: Annotated[float, typer.Option(
        "--lease", help="The leader's lease in etcd, seconds (several controllers).")] = 3.0,
) -> None:
    """Create the hosts (and the controller), then print where everything is."""
    settings = lab_ops.LabSettings(
        hosts=hosts, heartbeat_interval_s=interval, isolation_timeout_s=isolation_timeout,
        isolation_action=isolation_action, watchdog_timeout_s=watchdog_timeout,
        controller_port=controller_port, heartbeat_port=heartbeat_port,
        start_controller=controller, vms=vms, cloud=cloud, controllers=controllers,
        lease_s=lease,
    )
    _print_status(lab_ops.up(_dir(directory), settings), as_json)


@app.command()
@_errors
def status(directory: Dir = None, as_json: AsJson = False) -> None:
    """Show the hosts, their processes, faults and the controller."""
    _print_status(lab_ops.status(_dir(directory)), as_json)


@app.command()
@_errors
def fail(
    host: Host,
    fault: Annotated[str, typer.Argument(
        help=", ".join(lab_ops.FAULTS) + "; for a VM: " + ", ".join(GUEST_FAULTS)
        + "; for controllerN: " + ", ".join(CONTROLLER_FAULTS) + "; for etcdN: power-off")],
    percent: Annotated[float | None, typer.Argument(help="Loss percent (loss only).")] = None,
    only: Annotated[str | None, typer.Option(
        "--only", help="bmc-down: stop only this BMC (ipmi or redfish).")] = None,
    directory: Dir = None,
) -> None:
    """Inject a fault into a host (power-off, network-down, controller-link-down, loss P,
    agent-kill, bmc-down), a VM (guest-panic, guest-hang, guest-watchdog, app-kill,
    app-hang), a controller of `up --controllers N` (power-off, network-down,
    etcd-link-down, hosts-link-down) or one of its etcd members (etcdN power-off)."""
    typer.echo(json.dumps(faults.fail(_dir(directory), host, fault, percent, only)))


@app.command()
@_errors
def heal(host: Host, directory: Dir = None) -> None:
    """Undo the host's (or controllerN's) network faults (link down, iptables rules)."""
    typer.echo(json.dumps(faults.heal(_dir(directory), host)))


@app.command("power-on")
@_errors
def power_on(host: Host, directory: Dir = None) -> None:
    """Start a powered-off host (or controllerN, or etcd member etcdN) fresh."""
    typer.echo(json.dumps(faults.power_on(_dir(directory), host)))


@app.command("restart-agent")
@_errors
def restart_agent(host: Host, directory: Dir = None) -> None:
    """Start the host's agent again after agent-kill (the host kept running)."""
    typer.echo(json.dumps(faults.restart_agent(_dir(directory), host)))


@app.command()
@_errors
def probe(
    via: Host,
    targets: Annotated[list[str], typer.Argument(help="Peers to probe.")],
    timeout: Annotated[float, typer.Option(help="Seconds per target.")] = 1.0,
    directory: Dir = None,
) -> None:
    """Ask VIA's agent whether it reaches TARGETS (the confirmation step)."""
    typer.echo(json.dumps(lab_ops.probe_via(_dir(directory), via, targets, timeout)))


@app.command()
@_errors
def down(directory: Dir = None) -> None:
    """Remove every namespace, link, rule and process of the lab. Idempotent."""
    typer.echo(json.dumps(faults.down(_dir(directory))))


image_app = typer.Typer(help="The lab's tiny guest image (kernel + busybox initramfs).",
                        no_args_is_help=True)
app.add_typer(image_app, name="image")


@image_app.command("build")
@_errors
def image_build(
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="Image directory (default: /var/lib/vmha/guest-image).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if cached.")] = False,
    as_json: AsJson = False,
) -> None:
    """Build (or reuse) the guest image: vmlinux/vmlinuz, initrd.img, image.json."""
    out = (directory or guest_image.default_image_dir()).resolve()
    img, built = guest_image.ensure_image(out, force)
    info = {**guest_image.image_info(out), "built": built}
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    verb = "built" if built else "up to date (cached)"
    typer.echo(f"guest image {verb} in {out}: kernel {img.kernel.name}, initrd.img "
               f"{img.initrd.stat().st_size / 2**20:.1f} MiB, key {img.key}, "
               f"qemu-ga {'included' if info['qemu_ga'] else 'not installed, left out'}")


if __name__ == "__main__":
    app()
