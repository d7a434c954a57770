"""Probes on a real guest: the agent process, its embedded libvirt, the lab image.

One lab guest (QEMU, TCG) on a test-only bridge `vmhatp0` (198.18.4.1/24,
guest 198.18.4.10), defined through the agent's own domain API. A local
receiver stands in for the controller: it serves the probe document and
records the events. Checked: http and exec probes (through qemu-ga) report
an application killed and a hung one, the in-guest restart command
(`/etc/init.d/app restart` through `POST /v1/domains/{uuid}/exec`) brings
it back in the same QEMU process, a guest reboot goes through the guest
agent, and a hung guest makes the guest-agent pings report it unresponsive.
It uses `lab_ready`, so pytest holds the lab lock (vmha.lab.lock) while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentkit import free_port
from receiver import Receiver

from tiers import require_tier
from vmha.adapters.cloud.domxml import DomainSpec, guest_cmdline, render_domain
from vmha.lab.image import APP_COMMAND, ensure_image, image_info

pytestmark = pytest.mark.slow

ROOT = Path("/var/tmp/vmha-tests/libvirt/probes")  # kept: QEMU's capability cache
BRIDGE, HOST_IP, GUEST_IP = "vmhatp0", "198.18.4.1", "198.18.4.10"
UUID = "3c1e7a55-0d8e-4f64-9a2b-5b7e0c1d2f44"
TOKEN = "agent-api-token"
HEALTH = f"http://{GUEST_IP}:8080/health"


def _missing() -> str | None:
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "libvirt-python is not installed"
    if not shutil.which("qemu-system-x86_64"):
        return "qemu-system-x86_64 is not installed"
    if os.geteuid() != 0:
        return "needs root (bridge, QEMU)"
    return None


@pytest.fixture(scope="module")
def image(lab_ready: None) -> Path:
    """The lab guest image (lab_ready: pytest holds the lab lock for the run)."""
    require_tier("guest-image", _missing())
    folder = ROOT.parent / "image"
    ensure_image(folder)
    if not image_info(folder)["qemu_ga"]:
        require_tier("guest-image", "the guest image has no qemu-ga: "
                                    "apt-get install qemu-guest-agent")
    for d in (ROOT.parent.parent, ROOT.parent, folder):
        d.chmod(0o755)
    return folder


@pytest.fixture
def bridge() -> Iterator[str]:
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
    try:
        subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", f"{HOST_IP}/24", "dev", BRIDGE], check=True)
        subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
        yield BRIDGE
    finally:
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)


def _config(tmp_path: Path, api_port: int, rx_port: int) -> Path:
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
uri = "qemu:///embed?root={ROOT}"
[probes]
refresh_s = 0.5
""")
    return path


@pytest.fixture
def agent(tmp_path: Path, image: Path, bridge: str) -> Iterator[tuple[int, int, Path]]:
    shutil.rmtree(ROOT / "run", ignore_errors=True)
    api_port, rx_port = free_port(), free_port()
    log_path = tmp_path / "agent.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "vmha.agent", "--config",
                             str(_config(tmp_path, api_port, rx_port))], stdout=log, stderr=log)
    try:
        yield api_port, rx_port, log_path
    finally:
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as c, \
                contextlib.suppress(httpx.HTTPError):
            c.post(f"http://127.0.0.1:{api_port}/v1/domains/{UUID}/actions",
                   json={"action": "undefine"})
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(ROOT / "run", ignore_errors=True)


def _domain_xml(image: Path) -> str:
    kernel = next(k for k in (image / "vmlinux", image / "vmlinuz") if k.is_file())
    return render_domain(DomainSpec(
        uuid=UUID, name="vmha-probe-vm1", kernel=str(kernel), initrd=str(image / "initrd.img"),
        cmdline=guest_cmdline("vm1", f"{GUEST_IP}/24", HOST_IP, 3), bridge=BRIDGE,
        watchdog_action="none", console_log=str(ROOT / "vm1-console.log")))


def _document() -> dict[str, Any]:
    return {"instances": [{
        "domain": UUID, "instance": "id-vm1", "name": "vm1",
        "probes": [
            {"kind": "http", "target": HEALTH, "interval_s": 1, "timeout_s": 0.9,
             "failure_threshold": 2, "initial_delay_s": 15, "expect": "ok vm1"},
            {"kind": "exec", "target": f"{APP_COMMAND} status", "interval_s": 1,
             "timeout_s": 1, "failure_threshold": 2, "initial_delay_s": 15},
        ],
        "guest_ping": {"interval_s": 1, "failures": 3}}]}


def _health() -> bool:
    try:
        with urllib.request.urlopen(HEALTH, timeout=0.5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _fail(mode: str) -> float:
    with urllib.request.urlopen(f"http://{GUEST_IP}:8080/cgi-bin/fail?mode={mode}",
                                timeout=3) as resp:
        assert resp.status == 202
    return time.time()


def _qemu_pid() -> int:
    return int(next(iter(ROOT.glob("run/**/vmha-probe-vm1.pid"))).read_text())


def _console() -> str:
    try:
        return (ROOT / "vm1-console.log").read_text(errors="replace")[-3000:]
    except OSError:
        return "(no console)"


class Lab:
    def __init__(self, client: httpx.AsyncClient, base: str, rx: Receiver, log: Path) -> None:
        self.client, self.base, self.rx, self.log = client, base, rx, log

    def events(self, kind: str, since: float = 0.0) -> list[dict[str, Any]]:
        return [e for e in self.rx.events() if e["kind"] == kind and e["time"] >= since]

    async def wait_event(self, kind: str, since: float, timeout: float) -> dict[str, Any]:
        try:
            await self.rx.wait_for(lambda: self.events(kind, since), timeout)
        except AssertionError:
            raise AssertionError(f"no {kind} event in {timeout} s; agent log:\n"
                                 f"{self.log.read_text()[-3000:]}\nconsole:\n{_console()}"
                                 ) from None
        return self.events(kind, since)[0]

    async def wait_health(self, timeout: float = 60) -> float:
        t0 = time.monotonic()
        while not await asyncio.to_thread(_health):
            assert time.monotonic() - t0 < timeout, f"no /health; console:\n{_console()}"
            await asyncio.sleep(0.1)
        return time.monotonic() - t0

    async def exec(self, *argv: str) -> dict[str, Any]:
        resp = await self.client.post(f"{self.base}/v1/domains/{UUID}/exec",
                                      json={"command": list(argv), "timeout_s": 10})
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    async def act(self, action: str) -> None:
        resp = await self.client.post(f"{self.base}/v1/domains/{UUID}/actions",
                                      json={"action": action})
        assert resp.status_code == 200, resp.text


def test_probes_and_guest_agent_on_a_real_guest(agent: tuple[int, int, Path],
                                                image: Path) -> None:
    api_port, rx_port, log = agent

    async def main() -> None:
        rx = Receiver(rx_port)
        rx.documents["/v1/agents/host1/probes"] = _document()
        await rx.start()
        base = f"http://127.0.0.1:{api_port}"
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"},
                                     timeout=60) as client:
            try:
                await _exercise(Lab(client, base, rx, log), image)
            finally:
                await rx.stop()

    asyncio.run(main())


async def _exercise(lab: Lab, image: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            resp = await lab.client.put(f"{lab.base}/v1/domains/{UUID}",
                                        json={"xml": _domain_xml(image), "start": True})
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, lab.log.read_text()[-2000:]
            await asyncio.sleep(0.2)
    assert resp.status_code == 200, resp.text
    started = time.monotonic()
    boot_s = await lab.wait_health()
    await lab.wait_event("agent_connected", 0, 60)  # qemu-ga is up in the guest
    await asyncio.sleep(max(0.0, started + 16 - time.monotonic()))  # past the initial delay
    pid = _qemu_pid()
    await _kill_and_restart_in_guest(lab, pid)
    await _hang_and_restart_in_guest(lab, pid)
    rebooted = await _reboot_through_the_guest_agent(lab)
    await _hung_guest_is_unresponsive(lab, rebooted)
    health = (await lab.client.get(f"{lab.base}/v1/health")).json()["probes"]
    assert health["watched"] == 1
    print(f"\nboot to /health {boot_s:.1f} s")


async def _kill_and_restart_in_guest(lab: Lab, pid: int) -> None:
    assert lab.events("app_failed") == [], lab.log.read_text()[-2000:]  # healthy: nothing
    killed = await asyncio.to_thread(_fail, "app-kill")
    failed = await lab.wait_event("app_failed", killed, 10)
    assert failed["probe"] in (f"http {HEALTH}", f"exec {APP_COMMAND} status")
    assert failed["count"] == 2 and failed["detail"]
    t0 = time.monotonic()
    result = await lab.exec(APP_COMMAND, "restart")
    restart_s = time.monotonic() - t0
    assert result["exitcode"] == 0 and "answers on :8080" in result["stdout"], result
    assert await asyncio.to_thread(_health)
    recovered = await lab.wait_event("app_recovered", killed, 5)
    assert recovered["detail"] == ""
    assert _qemu_pid() == pid  # the same QEMU process: no reboot
    print(f"\napp-kill -> app_failed {failed['time'] - killed:.2f} s ({failed['probe']}); "
          f"restart in guest {restart_s:.2f} s; app_recovered "
          f"{recovered['time'] - killed:.2f} s after the kill")


async def _hang_and_restart_in_guest(lab: Lab, pid: int) -> None:
    hung = await asyncio.to_thread(_fail, "app-hang")
    failed = await lab.wait_event("app_failed", hung, 10)
    if failed["probe"].startswith("http"):
        assert failed["detail"] == "no answer within 0.9 s"
    result = await lab.exec(APP_COMMAND, "restart")
    assert result["exitcode"] == 0, result
    assert "stopped httpd" in result["stdout"]
    await lab.wait_event("app_recovered", hung, 5)
    assert _qemu_pid() == pid
    missing = await lab.client.post(f"{lab.base}/v1/domains/{UUID}/exec",
                                    json={"command": ["/no/such/command"]})
    assert missing.status_code == 409 and "No such file" in missing.json()["detail"]
    failing = await lab.exec("/bin/sh", "-c", "echo out; echo err >&2; exit 7")
    assert (failing["exitcode"], failing["stdout"], failing["stderr"]) == (7, "out\n", "err\n")


async def _reboot_through_the_guest_agent(lab: Lab) -> float:
    t0 = time.time()
    await lab.act("reboot")
    rebooted = await lab.wait_event("rebooted", t0, 20)
    assert rebooted["requested"] is True
    await lab.wait_health()
    assert "vmha-guest: reboot requested (" in _console()  # qemu-ga's guest-shutdown
    return t0


async def _hung_guest_is_unresponsive(lab: Lab, since: float) -> None:
    await lab.rx.wait_for(lambda: lab.events("agent_connected", since), 20)
    await asyncio.sleep(2)  # a few answered pings: the agent counts from here
    hung = await asyncio.to_thread(_fail, "hang")
    event = await lab.wait_event("guest_unresponsive", hung, 15)
    assert event["probe"] == "guest-ping" and event["count"] == 3
    print(f"\nguest hang -> guest_unresponsive {event['time'] - hung:.2f} s")
    t0 = time.time()
    await lab.act("reset")
    await lab.wait_event("guest_responsive", t0, 40)
