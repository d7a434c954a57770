"""Start, wait for and stop the lab cloud's root-namespace services.

`up(lab_dir)` (after the lab bridge exists): ensures the venv, writes the
configuration, resets the `vmha_*` databases and the vhost (from the
bootstrap cache, or bootstraps and fills the cache), then starts Keystone,
Placement, the Nova API, Glance (gunicorn, on the bridge), nova-conductor,
nova-scheduler and the Neutron stub + AMQP relay, and waits until each
answers. Returns the plain record that lab.json keeps under `openstack`.
`compute_command` is what a lab host's PID 1 runs beside the agent, so
the host's power, network and fencing act on its nova-compute too.

`down(record)` stops what `up` started: SIGTERM, then SIGKILL after a
grace period, to every process whose environment carries this lab's mark
(gunicorn and oslo workers included); drops the databases and the vhost.
Called by `vmha.lab.lab` and `vmha.lab.faults`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vmha.lab import net
from vmha.lab.openstack import confs, install, provision
from vmha.lab.openstack import layout as L
from vmha.lab.openstack.layout import Paths, Secrets
from vmha.lab.openstack.rest import wait_http

RUNTIME = Path(__file__).parent / "runtime"
WSGI = {  # service -> (gunicorn factory, configuration variable, probe path)
    "keystone": ("keystone", "OS_KEYSTONE_CONFIG_DIR", "/v3"),
    "placement": ("placement", "OS_PLACEMENT_CONFIG_DIR", "/"),
    "nova-api": ("nova", "OS_NOVA_CONFIG_DIR", "/"),
    "glance": ("glance", "OS_GLANCE_CONFIG_DIR", "/versions"),
    "aodh-api": ("aodh", "VMHA_AODH_CONF", "/"),
}
CONF_DIR = {"keystone": "keystone", "placement": "placement", "nova-api": "nova",
            "glance": "glance", "aodh-api": "aodh/aodh.conf"}
TELEMETRY = ("ceilometer-agent-notification", "aodh-listener", "aodh-notifier")
START_TIMEOUT_S = 90.0
STOP_GRACE_S = 5.0


def _env(lab_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, L.ENV_MARK: str(lab_dir), **(extra or {})}


def _spawn(lab_dir: Path, p: Paths, name: str, cmd: list[str],
           extra: dict[str, str] | None = None) -> int:
    """Start one service detached, its output in logs/<name>.log."""
    p.logs.mkdir(parents=True, exist_ok=True)
    return net.spawn_detached(cmd, p.logs / f"{name}.log", _env(lab_dir, extra))


def _gunicorn(venv: Path, name: str) -> list[str]:
    factory = WSGI[name][0]
    return [str(venv / "bin" / "gunicorn"), "--no-control-socket", "--bind",
            f"{L.ADDR}:{L.PORTS[name]}", "--workers", "1", "--threads", "8",
            "--timeout", "120", "--name", f"vmha-os-{name}", "--pythonpath", str(RUNTIME),
            f"vmha_os_apps:{factory}()"]


def start_api(lab_dir: Path, p: Paths, venv: Path, name: str) -> int:
    var = WSGI[name][1]
    return _spawn(lab_dir, p, name, _gunicorn(venv, name), {var: str(p.etc / CONF_DIR[name])})


def wait_api(p: Paths, name: str, timeout_s: float = START_TIMEOUT_S) -> None:
    if not wait_http(L.url(name, WSGI[name][2]), timeout_s):
        raise net.LabCommandFailed(f"OpenStack {name} did not answer within {timeout_s:g} s; "
                                   f"see {p.logs}/{name}.log")


def start_daemons(lab_dir: Path, p: Paths, venv: Path, conf: Path) -> dict[str, int]:
    pids = {}
    for name in ("nova-conductor", "nova-scheduler"):
        pids[name] = _spawn(lab_dir, p, name, [str(venv / "bin" / name), "--config-file",
                                               str(conf)])
    relay = f"{L.ADDR}:{L.PORTS['amqp-relay']}={L.AMQP_LOCAL[0]}:{L.AMQP_LOCAL[1]}"
    pids["stubs"] = _spawn(lab_dir, p, "stubs", [
        sys.executable, "-m", "vmha.lab.openstack.stubs",
        "--neutron", f"{L.ADDR}:{L.PORTS['neutron-stub']}", "--relay", relay,
        "--mark", str(lab_dir)])
    return pids


def start_telemetry(lab_dir: Path, p: Paths, venv: Path,
                    files: dict[str, Path]) -> dict[str, int]:
    """Ceilometer's notification agent and Aodh (API, listener, notifier)."""
    pids = {"aodh-api": start_api(lab_dir, p, venv, "aodh-api")}
    for name in TELEMETRY:
        conf = files["ceilometer" if name.startswith("ceilometer") else "aodh"]
        pids[name] = _spawn(lab_dir, p, name, [str(venv / "bin" / name), "--config-file",
                                               str(conf)])
    return pids


def _prepare(lab_dir: Path, p: Paths, venv: Path) -> tuple[Secrets, dict[str, Path], bool]:
    """Configuration, databases and vhost; whether the cloud must still be
    bootstrapped. The vhost (rabbitmqctl is slow) is reset meanwhile."""
    for folder in (p.etc, p.logs, p.state):
        folder.mkdir(parents=True, exist_ok=True)
    p.root.chmod(0o700)
    fresh = not provision.cached()
    sec = Secrets.generate() if fresh else Secrets.load(provision.cache_dir() / "secrets.json")
    files = confs.write_all(p, sec, venv)
    with ThreadPoolExecutor(max_workers=1) as pool:
        vhost = pool.submit(provision.reset_vhost, sec)
        if fresh:
            provision.reset_databases(sec)
        else:
            provision.load_cache(p)
        vhost.result()
    return sec, files, fresh


def up(lab_dir: Path, record: dict[str, Any], save: Any,
       telemetry: bool = False) -> dict[str, Any]:
    """Start the root-namespace cloud; `record` (lab.json's `openstack`) is
    filled as things start and `save()` called, so `down` finds them.
    From the cache every service starts at once; a bootstrap needs
    Keystone first (the others' users and endpoints are made through it)."""
    started = time.monotonic()
    timings: dict[str, float] = {}
    venv, _ = install.ensure_venv()
    p = Paths(lab_dir / "openstack")
    record.update({"dir": str(p.root), "venv": str(venv), "pids": {}, "timings": timings})
    save()
    sec, files, fresh = _prepare(lab_dir, p, venv)
    record["secrets"] = {"admin": sec.admin}
    timings["prepare_s"] = round(time.monotonic() - started, 1)
    if fresh:
        provision.sync_schemas(venv, p, files, sec)
        timings["bootstrap_s"] = round(time.monotonic() - started, 1)
    record["pids"]["keystone"] = start_api(lab_dir, p, venv, "keystone")
    save()
    if fresh:
        wait_api(p, "keystone")
        provision.register_identity(sec)
    for name in ("placement", "nova-api", "glance"):
        record["pids"][name] = start_api(lab_dir, p, venv, name)
    record["pids"].update(start_daemons(lab_dir, p, venv, files["nova"]))
    if telemetry:
        record["pids"].update(start_telemetry(lab_dir, p, venv, files))
    save()
    for name in ("keystone", "placement", "nova-api", "glance",
                 *(("aodh-api",) if telemetry else ())):
        wait_api(p, name)
    _wait_stub(p)
    timings["apis_s"] = round(time.monotonic() - started, 1)
    if fresh:
        provision.create_flavors_and_image(sec)
        provision.save_cache(p, sec)
    record["bootstrapped"] = fresh
    record["start_s"] = round(time.monotonic() - started, 1)
    save()
    return record


def _wait_stub(p: Paths) -> None:
    if not wait_http(L.url("neutron-stub", "/"), 10.0):
        raise net.LabCommandFailed(f"the Neutron stub did not start; see {p.logs}/stubs.log")


def secrets_of(record: dict[str, Any]) -> Secrets:
    del record
    return Secrets.load(provision.cache_dir() / "secrets.json")


def compute_command(record: dict[str, Any], host: str, address: str,
                    host_dir: Path) -> list[str]:
    """The nova-compute a lab host's PID 1 starts (and starts again at power-on)."""
    p = Paths(Path(record["dir"]))
    extra = confs.compute(p, host, address, host_dir)
    (host_dir / "nova").mkdir(parents=True, exist_ok=True)
    return [str(Path(record["venv"]) / "bin" / "nova-compute"),
            "--config-file", str(p.conf("nova", "compute.conf")), "--config-file", str(extra)]


# -- stopping --------------------------------------------------------------------


def marked_pids(lab_dir: Path) -> list[int]:
    """Every process carrying this lab's mark in its environment (gunicorn
    rewrites its own, so its processes are found by `_tree` instead)."""
    want = f"{L.ENV_MARK}={lab_dir}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if want in env.split(b"\0") and net.alive(int(entry)):
            found.append(int(entry))
    return found


def mark_of(lab_dir: Path, name: str) -> str:
    """What a recorded service's command line still shows (gunicorn names itself)."""
    if name in WSGI:
        return f"vmha-os-{name}"
    if name.startswith(("nova-", "aodh-", "ceilometer-")):
        return name.split("-")[0]  # oslo and cotyledon rename their processes
    return str(lab_dir)


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(net.children(current))
    return out


def ours(lab_dir: Path, record: dict[str, Any]) -> list[int]:
    """Recorded services still running (with their workers) and marked ones."""
    pids = set(marked_pids(lab_dir))
    for name, pid in (record.get("pids") or {}).items():
        if net.alive(pid) and net.owned_by_lab(pid, mark_of(lab_dir, name)):
            pids.update(_tree(pid))
    return sorted(pids)


def stop(lab_dir: Path, record: dict[str, Any]) -> list[int]:
    """SIGTERM every process of the lab cloud, SIGKILL what is left after a grace."""
    pids = killed = ours(lab_dir, record)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if net.wait_gone(pids, STOP_GRACE_S):
            break
        pids = [p for p in pids if net.alive(p)]
    return killed


def stop_api(lab_dir: Path, record: dict[str, Any], name: str) -> list[int]:
    """Stop one API service (a fault for tests: "Nova's API is down")."""
    pid = record["pids"].get(name)
    if not pid or not net.alive(pid) or not net.owned_by_lab(pid, mark_of(lab_dir, name)):
        return []
    pids = _tree(pid)
    for one in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(one, signal.SIGKILL)
    net.wait_gone(pids, STOP_GRACE_S)
    return pids


def start_again(lab_dir: Path, record: dict[str, Any], name: str) -> int:
    """Start a stopped API service again and wait until it answers."""
    p = Paths(Path(record["dir"]))
    record["pids"][name] = start_api(lab_dir, p, Path(record["venv"]), name)
    wait_api(p, name)
    return int(record["pids"][name])


def down(lab_dir: Path, record: dict[str, Any]) -> list[int]:
    killed = stop(lab_dir, record)
    if record.get("dir"):
        provision.drop_databases()
        provision.delete_vhost()
    return killed
