"""The agent against a real embedded libvirt and real QEMU (TCG).

Diskless domains (QEMU sits in the BIOS) are enough for the lifecycle.
Roots live under /var/tmp/vmha-tests/libvirt and are kept between runs (the
QEMU capability probe is cached there); every test removes its domains and
the root's run state. Run under the lab lock:
`flock /tmp/vmha-lab.lock .venv/bin/pytest tests/agent/test_hypervisor.py`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentkit import free_port
from receiver import Receiver

from tiers import require_tier
from vmha.agent.domains import DomainEvent
from vmha.errors import Conflict, NotFound, ValidationError

ROOTS = Path("/var/tmp/vmha-tests/libvirt")
PREFIX = "vmha-t-"
TOKEN = "agent-api-token"


def _missing() -> str | None:
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "libvirt-python is not installed"
    if not shutil.which("qemu-system-x86_64"):
        return "qemu-system-x86_64 is not installed"
    if os.geteuid() != 0:
        return "needs root (QEMU runs as root in the embedded root)"
    return None


@pytest.fixture(scope="module", autouse=True)
def _libvirt_ready() -> None:
    require_tier("hypervisor", _missing())


def domain_xml(uuid: str, memory_mb: int = 64) -> str:
    return f"""<domain type='qemu'><name>{PREFIX}{uuid[:8]}</name><uuid>{uuid}</uuid>
<memory unit='MiB'>{memory_mb}</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os>
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
<video><model type='none'/></video><memballoon model='none'/></devices></domain>"""


def new_uuid() -> str:
    return str(uuidlib.uuid4())


def wipe_run(root: Path) -> None:
    shutil.rmtree(root / "run", ignore_errors=True)


@pytest.fixture
def root() -> Iterator[Path]:
    path = ROOTS / "inproc"
    wipe_run(path)
    yield path
    wipe_run(path)


async def until(check: Callable[[], bool], timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def run_with_hypervisor(root: Path, body: Callable[[Any, list[DomainEvent]],
                                                   Awaitable[None]]) -> None:
    from vmha.agent.hypervisor import LibvirtHypervisor

    async def main() -> None:
        events: list[DomainEvent] = []
        hv = LibvirtHypervisor(f"qemu:///embed?root={root}", events.append)
        await hv.open()
        assert hv.connected
        try:
            await body(hv, events)
        finally:
            for view in await hv.inventory():
                if view.name.startswith(PREFIX):
                    await hv.undefine(view.uuid)
            await hv.close()

    asyncio.run(main())


def test_operations_are_idempotent_and_keyed_by_uuid(root: Path) -> None:
    async def body(hv: Any, events: list[DomainEvent]) -> None:
        u = new_uuid()
        assert (await hv.state(u)).state == "absent"
        assert (await hv.destroy(u)).state == "absent"  # no-op when absent
        assert (await hv.undefine(u)).state == "absent"
        with pytest.raises(NotFound):
            await hv.start(u)
        view = await hv.define(domain_xml(u))
        assert (view.uuid, view.name, view.state) == (u, PREFIX + u[:8], "shutoff")
        with pytest.raises(Conflict, match="start it first"):
            await hv.reset(u)
        assert (await hv.start(u)).state == "running"
        assert (await hv.start(u)).state == "running"  # no-op when running
        again = await hv.define(domain_xml(u, memory_mb=96))  # redefine: keeps running
        assert again.state == "running"
        assert u in [v.uuid for v in await hv.inventory()]
        assert (await hv.reset(u)).state == "running"
        view = await hv.destroy(u)
        assert (view.state, view.reason) == ("shutoff", "destroyed")
        assert (await hv.destroy(u)).state == "shutoff"  # no-op when shut off
        assert (await hv.start(u)).state == "running"
        assert (await hv.undefine(u)).state == "absent"  # destroys first
        assert (await hv.undefine(u)).state == "absent"
        with pytest.raises(ValidationError):
            await hv.define("<domain><name>x</name></domain>")  # no uuid
        with pytest.raises(ValidationError, match="libvirt refused"):
            await hv.define(f"<domain type='nonsense'><name>{PREFIX}bad</name>"
                            f"<uuid>{new_uuid()}</uuid></domain>")

    run_with_hypervisor(root, body)


def qemu_pid(root: Path, name: str) -> int:
    pid = int((root / "run" / "qemu" / f"{name}.pid").read_text())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert f"guest={name}".encode() in cmdline and str(root).encode() in cmdline
    return pid


def test_events_say_what_happened_and_whether_it_was_asked_for(root: Path) -> None:
    async def body(hv: Any, events: list[DomainEvent]) -> None:
        u = new_uuid()
        await hv.define(domain_xml(u))

        def seen(kind: str) -> list[DomainEvent]:
            return [e for e in events if e.uuid == u and e.kind == kind]

        await hv.start(u)
        await until(lambda: len(seen("started")) == 1)
        assert seen("started")[0].requested and seen("started")[0].detail == "booted"
        assert not seen("resumed")  # the resume of a boot is not reported
        await hv.reset(u)
        await until(lambda: len(seen("rebooted")) >= 1)
        assert seen("rebooted")[0].requested
        await hv.destroy(u)
        await until(lambda: len(seen("stopped")) == 1)
        stop = seen("stopped")[0]
        assert (stop.detail, stop.requested, stop.name) == ("destroyed", True, PREFIX + u[:8])
        assert abs(stop.time - time.time()) < 5
        await hv.start(u)
        await until(lambda: len(seen("started")) == 2)
        os.kill(qemu_pid(root, PREFIX + u[:8]), signal.SIGKILL)  # a QEMU crash
        await until(lambda: len(seen("stopped")) == 2)
        crash = seen("stopped")[1]
        assert (crash.detail, crash.requested) == ("failed", False)
        assert (await hv.state(u)).state == "shutoff"

    run_with_hypervisor(root, body)


def test_stop_all_destroys_every_running_domain(root: Path) -> None:
    async def body(hv: Any, events: list[DomainEvent]) -> None:
        a, b = new_uuid(), new_uuid()
        for u in (a, b):
            await hv.define(domain_xml(u))
        await hv.start(a)
        await hv.stop_all()
        assert (await hv.state(a)).state == "shutoff"
        assert (await hv.state(b)).state == "shutoff"
        await until(lambda: any(e.kind == "stopped" and e.uuid == a for e in events))
        assert [e.requested for e in events if e.kind == "stopped"] == [False]

    run_with_hypervisor(root, body)


# -- the real agent process: HTTP domain API and reports to the controller -------

def agent_config(tmp_path: Path, root: Path, api_port: int, rx_port: int) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f"""host = "host1"
segment = "lab"
state_dir = "{tmp_path / 'state'}"
secret = "{'s' * 32}"
[controller]
heartbeat = ["127.0.0.1:{free_port()}"]
url = "http://127.0.0.1:{rx_port}"
token = "controller-token"
[api]
listen = "127.0.0.1:{api_port}"
token = "{TOKEN}"
[isolation]
action = "none"
[hypervisor]
uri = "qemu:///embed?root={root}"
""")
    return path


def cleanup_root(root: Path) -> None:
    """Undefine every test domain of `root` (in a process of its own) and wipe run/."""
    script = f"""
import asyncio
from vmha.agent.hypervisor import LibvirtHypervisor
async def main():
    hv = LibvirtHypervisor({str(f"qemu:///embed?root={root}")!r}, lambda e: None)
    await hv.open()
    for v in await hv.inventory():
        if v.name.startswith({PREFIX!r}):
            await hv.undefine(v.uuid)
    await hv.close()
asyncio.run(main())
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    wipe_run(root)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    root = ROOTS / "agent"
    wipe_run(root)
    api_port, rx_port = free_port(), free_port()
    cfg = agent_config(tmp_path, root, api_port, rx_port)
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "vmha.agent", "--config", str(cfg)],
                            stdout=log, stderr=log)
    try:
        yield api_port, rx_port, tmp_path / "agent.log"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
        cleanup_root(root)


async def wait_api(client: httpx.AsyncClient, base: str, log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            resp = await client.get(base + "/v1/health")
            return dict(resp.json())
        except httpx.HTTPError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"agent did not answer: {log.read_text()[-2000:]}")


def test_agent_process_serves_the_domain_api_and_reports_events(
        agent: tuple[int, int, Path]) -> None:
    api_port, rx_port, log = agent

    async def main() -> None:
        rx = Receiver(rx_port)
        await rx.start()
        base = f"http://127.0.0.1:{api_port}"
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"},
                                     timeout=60) as client:
            try:
                await exercise(client, base, rx, log)
            finally:
                await rx.stop()

    asyncio.run(main())


async def exercise(client: httpx.AsyncClient, base: str, rx: Receiver, log: Path) -> None:
    health = await wait_api(client, base, log)
    assert health["hypervisor"]["connected"] is True
    assert health["hypervisor"]["uri"].startswith("qemu:///embed")
    await rx.wait_for(lambda: len(rx.inventories()) >= 1)  # sent after connecting
    inv = rx.inventories()[0]
    assert inv.path == "/v1/agents/host1/inventory"
    assert inv.headers["authorization"] == "Bearer controller-token"
    u, other = new_uuid(), new_uuid()
    resp = await client.put(f"{base}/v1/domains/{u}", json={"xml": domain_xml(other)})
    assert resp.status_code == 422 and "differs" in resp.json()["detail"]
    resp = await client.put(f"{base}/v1/domains/{u}", json={"xml": "<network/>"})
    assert resp.status_code == 422 and "<domain>" in resp.json()["detail"]
    resp = await client.get(f"{base}/v1/domains/{u}")
    assert resp.json() == {"uuid": u, "name": "", "state": "absent", "reason": ""}
    resp = await client.put(f"{base}/v1/domains/{u}", json={"xml": domain_xml(u), "start": True})
    assert resp.status_code == 200 and resp.json()["state"] == "running"
    await rx.wait_for(lambda: any(e["kind"] == "started" for e in rx.events()))
    started = next(e for e in rx.events() if e["kind"] == "started")
    assert (started["instance"], started["requested"]) == (u, True)
    latency = rx.requests[-1].at - started["time"]
    print(f"libvirt event -> controller POST: {latency * 1000:.1f} ms")
    assert latency < 2.0  # pushed at once, not at the next poll (a loaded machine adds some)
    domains = (await client.get(f"{base}/v1/domains")).json()["domains"]
    assert [d["state"] for d in domains if d["uuid"] == u] == ["running"]
    assert (await client.get(f"{base}/v1/health")).json()["hypervisor"]["domains"] >= 1
    await act(client, base, u, "destroy", 200, "shutoff")
    await rx.wait_for(lambda: any(e["kind"] == "stopped" for e in rx.events()))
    stopped = next(e for e in rx.events() if e["kind"] == "stopped")
    assert (stopped["detail"], stopped["requested"]) == ("destroyed", True)
    conflict = await act(client, base, u, "reset", 409, None)
    assert "shutoff" in conflict["detail"] and "start it first" in conflict["detail"]
    bad = await act(client, base, u, "explode", 422, None)
    assert "inject-nmi" in bad["detail"]
    await act(client, base, u, "undefine", 200, "absent")
    await act(client, base, u, "undefine", 200, "absent")
    missing = await act(client, base, u, "reboot", 404, None)
    assert u in missing["detail"]
    assert (await client.get(f"{base}/v1/domains/not-a-uuid")).status_code == 422


async def act(client: httpx.AsyncClient, base: str, u: str, action: str, status: int,
              state: str | None) -> dict[str, Any]:
    resp = await client.post(f"{base}/v1/domains/{u}/actions", json={"action": action})
    assert resp.status_code == status, resp.text
    data: dict[str, Any] = resp.json()
    if state is not None:
        assert data["state"] == state
    else:
        assert resp.headers["content-type"] == "application/problem+json"
    return data
