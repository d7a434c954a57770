"""`vmha demo`: the main job. By default the real lab (`vmha.cli.labdemo`):
QEMU guests on namespaced hosts, a host powered off, guests failing, every
recovery narrated. `--simulated` is the lighter demo below.

`vmha demo --simulated`: a working controller with an example cluster.

Writes a throw-away config (SQLite, a random admin token) under a demo
directory, starts `vmha serve` as a child process, registers an example
segment, hosts, a named policy and instances through the REST API, shows
`vmha host list` and `vmha instance list` as an operator would see them, and
prints where the API, the docs and the token are. Then it runs the HA brain
in the simulator on a packaged scenario (a host losing power, a guest
panic, a guest hang) and prints what the controller decided and when.
Interactive runs keep the
controller up until Ctrl-C; non-interactive runs (CI, pipes) tear it down
at the end unless `--hold` is given.

Only the child process this command started is ever stopped (by PID).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console

from vmha.errors import VmhaError
from vmha.sim.runner import run_scenario
from vmha.sim.scenario import load_scenario

console = Console()

EXAMPLE_POLICIES = {
    "gold": {
        "description": "critical: recover first, restart guests, report app failures",
        "policy": {"host": "auto+notify", "guest": "auto", "app": "notify", "priority": 900,
                   "max_restarts": 3, "window_s": 600, "watchdog_action": "reset"},
    },
    "observe": {
        "description": "custom recovery: only notify, the user acts",
        "policy": {"host": "notify", "guest": "notify", "app": "notify", "priority": 100,
                   "watchdog_action": "notify"},
    },
}
EXAMPLE_INSTANCES = [
    ("vm1", "host1", "demo", "gold", 2, 2048),
    ("vm2", "host1", "demo", None, 1, 1024),
    ("vm3", "host2", "demo", "observe", 1, 1024),
    ("vm4", "host3", "other", "gold", 2, 4096),
]


def free_port(preferred: int, kind: int = socket.SOCK_STREAM) -> int:
    """`preferred` when it is free on 127.0.0.1, else any free port."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free TCP port on 127.0.0.1")


def write_config(directory: Path, port: int, token: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "vmha.db"
    for leftover in (db, db.with_suffix(".db-wal"), db.with_suffix(".db-shm")):
        leftover.unlink(missing_ok=True)
    path = directory / "vmha.toml"
    path.write_text(
        f'[api]\nlisten = "127.0.0.1:{port}"\n\n'
        f'[[api.tokens]]\ntoken = "{token}"\nrole = "admin"\nname = "demo-admin"\n\n'
        f'[store]\nurl = "sqlite:///{db}"\n\n'
        f'[heartbeat]\nlisten = "127.0.0.1:{free_port(port + 1, socket.SOCK_DGRAM)}"\n'
    )
    path.chmod(0o600)
    return path


def start_controller(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    vmha = shutil.which("vmha") or str(Path(sys.executable).with_name("vmha"))
    log = log_path.open("wb")
    return subprocess.Popen(
        [vmha, "serve", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C in the terminal reaches us, not the child
    )


def wait_ready(client: httpx.Client, proc: subprocess.Popen[bytes], log: Path) -> float:
    started = time.monotonic()
    while time.monotonic() - started < 30:
        if proc.poll() is not None:
            raise RuntimeError(f"vmha serve exited with {proc.returncode}; see {log}")
        try:
            if client.get("/readyz").status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"vmha serve was not ready within 30 s; see {log}")


def post(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    if response.status_code >= 400:
        raise RuntimeError(f"POST {path} failed: {response.status_code} {response.text}")
    result: dict[str, Any] = response.json()
    return result


def populate(client: httpx.Client) -> None:
    for name, spec in EXAMPLE_POLICIES.items():
        post(client, "/v1/policies", {"name": name, **spec})
    post(client, "/v1/segments", {"name": "demo", "recovery_method": "auto",
                                  "description": "example failure domain",
                                  "default_policy": "gold"})
    for i in (1, 2, 3):
        post(client, "/v1/hosts", {
            "name": f"host{i}", "segment": "demo", "address": f"198.18.0.{10 + i}",
            "capacity": {"vcpus": 8, "ram_mb": 16384, "disk_gb": 200},
            "reserved": i == 3,
            "fence_levels": [["redfish"], ["ipmi"], ["agent_watchdog"]],
        })
    for name, host, project, policy, vcpus, ram in EXAMPLE_INSTANCES:
        body: dict[str, Any] = {"name": name, "host": host, "project": project,
                                "resources": {"vcpus": vcpus, "ram_mb": ram, "disk_gb": 10}}
        if policy:
            body["policy_name"] = policy
        post(client, "/v1/instances", body)
    client.post("/v1/hosts/host2/maintenance", json={"enabled": True, "reason": "demo"})
    client.post("/v1/hosts/host2/maintenance", json={"enabled": False, "reason": "demo"})


def show(url: str, token: str, *args: str) -> None:
    console.print(f"[bold]$ vmha {' '.join(args)}[/bold]")
    env = {**os.environ, "VMHA_URL": url, "VMHA_TOKEN": token}
    vmha = shutil.which("vmha") or str(Path(sys.executable).with_name("vmha"))
    subprocess.run([vmha, *args], env=env, check=False)


DEMO_SCENARIO = Path(__file__).parents[1] / "sim" / "examples" / "demo.yaml"


def simulate_failures() -> None:
    """The same controller logic, in the simulator: a host loses power, a
    guest panics, another hangs; the log a subscriber would see."""
    console.print(
        "\n[bold]The HA brain at work[/bold] (simulator, virtual time: the controller's "
        f"real engine against simulated hosts, BMCs and VMs; {DEMO_SCENARIO.name})"
    )
    result = run_scenario(load_scenario(DEMO_SCENARIO), until=140)
    for line in result.lines:
        style = "dim" if ": world " in line else ("bold" if ": inject " in line else "")
        console.print(line, style=style, soft_wrap=True, highlight=False)
    report = result.report
    metrics = report.get("metrics", {})
    detect = ", ".join(f"{h} {s:.1f} s" for h, s in metrics.get("detect_s", {}).items())
    recover = ", ".join(f"{v} {s:.1f} s" for v, s in metrics.get("recover_s", {}).items())
    safe = all(report.get("invariants", {}).values())
    console.print(f"detected: {detect or '-'}; recovered: {recover or '-'}; "
                  f"safety invariants {'held' if safe else 'BROKEN'}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def demo(
    directory: Path = typer.Option(Path(".demo"), "--dir", help="Where the demo keeps its files."),
    port: int = typer.Option(8790, help="Preferred API port (another free one if taken)."),
    hold: bool | None = typer.Option(
        None, "--hold/--no-hold",
        help="--simulated: keep the controller running until Ctrl-C "
             "(default: only when interactive).",
    ),
    keep: bool = typer.Option(False, "--keep", help="Leave the lab running at the end."),
    simulated: bool = typer.Option(
        False, "--simulated",
        help="No lab: a controller with an example cluster, failures in the simulator."),
    cloud: str = typer.Option(
        "libvirt", "--cloud",
        help="libvirt (QEMU guests) or openstack (a real Keystone/Nova; servers evacuated)."),
) -> None:
    """Keep my VMs running: a real lab with QEMU guests, a host powered off, a guest
    panicked and hung, each recovered (needs root). --simulated needs nothing."""
    if simulated:
        simulated_demo(directory, port, hold)
        return
    if os.geteuid() != 0:
        console.print("[red]vmha demo needs root[/red] (network namespaces, QEMU guests); "
                      "run it with sudo, or use `vmha demo --simulated`")
        raise typer.Exit(2)
    if cloud not in ("libvirt", "openstack"):
        console.print(f"[red]--cloud {cloud!r}[/red]: use libvirt or openstack")
        raise typer.Exit(2)
    from vmha.cli import labdemo, osdemo  # the lab is only imported when it runs
    from vmha.lab.lock import lab_lock

    try:
        with lab_lock():  # one lab per machine (a --keep lab outlives it: `vmha lab down`)
            (osdemo if cloud == "openstack" else labdemo).run((directory / "lab").resolve(),
                                                               keep)
    except VmhaError as exc:
        console.print(f"[red]demo failed:[/red] {exc.detail}")
        raise typer.Exit(1) from None


def simulated_demo(directory: Path, port: int, hold: bool | None) -> None:
    """Start a controller with an example cluster and show it through the CLI."""
    token = secrets.token_urlsafe(24)
    port = free_port(port)
    url = f"http://127.0.0.1:{port}"
    config = write_config(directory.resolve(), port, token)
    log = directory.resolve() / "serve.log"
    console.print(f"[bold]vmha demo[/bold]: starting a controller on {url} (log: {log})")
    proc = start_controller(config, log)
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          timeout=10) as client:
            took = wait_ready(client, proc, log)
            console.print(f"controller ready in {took:.1f} s; registering an example cluster")
            populate(client)
        show(url, token, "host", "list")
        show(url, token, "instance", "list")
        show(url, token, "event", "list")
        simulate_failures()
        console.print(f"\n[bold]dashboard[/bold] {url}/   [bold]API[/bold] {url}/v1   "
                      f"[bold]docs[/bold] {url}/docs")
        console.print(f"export VMHA_URL={url} VMHA_TOKEN={token}\n", soft_wrap=True)
        if hold is None:
            hold = sys.stdin.isatty()
        if hold:
            console.print("controller running; press Ctrl-C to stop it")
            while proc.poll() is None:
                time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("\nstopping")
    except RuntimeError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        stop(proc)
    console.print("demo controller stopped")
