"""The lab guest image booted by real QEMU (TCG) under libvirt's embedded driver.

One guest on a test-only bridge `vmhatb0` (198.18.3.1/24, guest 198.18.3.10),
domain XML from `vmha.adapters.cloud.domxml` with watchdog action 'none' (the
guest stays up, the WATCHDOG event is what we look for). Checked from the host:
/health, guest-agent ping, and every failure control with its libvirt event.
Run under the lab lock: flock /tmp/vmha-lab.lock .venv/bin/pytest tests/lab/test_guest_image.py
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tiers import require_tier
from vmha.adapters.cloud.domxml import DomainSpec, guest_cmdline, render_domain
from vmha.errors import ConfigError
from vmha.lab import image as image_mod
from vmha.lab.image import GuestImage, ensure_image, image_info

pytestmark = [pytest.mark.slow, pytest.mark.own_process]

BRIDGE, HOST_IP, GUEST_IP, WDT = "vmhatb0", "198.18.3.1", "198.18.3.10", 3
UUID = "6f1d3a52-8c47-4e0b-9a1e-3b5c7d9e0f21"
# Kept between runs for QEMU's capability cache (first domain +4 s); run/ is wiped.
EMBED_ROOT = Path("/var/tmp/vmha-tests/guest-image-embed")


def _need(ok: bool, reason: str) -> None:
    require_tier("guest-image", None if ok else reason)


@pytest.fixture(scope="module")
def libvirt_mod() -> Any:
    _need(os.geteuid() == 0, "needs root (bridge, taps, QEMU as libvirt-qemu)")
    _need(shutil.which("qemu-system-x86_64") is not None,
          "qemu-system-x86_64 missing: apt-get install qemu-system-x86")
    try:
        import libvirt
    except ImportError:
        _need(False, "libvirt-python missing: pip install libvirt-python")
    return libvirt


def test_build_is_cached_forced_and_world_readable(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    img, built = ensure_image(tmp_path)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    again, built_again = ensure_image(tmp_path)
    cached = time.perf_counter() - t0
    assert built and not built_again and again == img
    _, forced = ensure_image(tmp_path, force=True)
    assert forced
    for f in (img.kernel, img.initrd, tmp_path / "image.json", tmp_path / "vmlinuz"):
        assert f.stat().st_mode & 0o044 == 0o044, f"{f} is not world-readable"
    names = _cpio_names(img.initrd)
    assert {"init", "bin/busybox", "bin/sh", "www/cgi-bin/fail", "lib/modules/i6300esb.ko",
            "lib/modules/virtio_net.ko", "lib/modules/pvpanic_mmio.ko"} <= names
    info = image_info(tmp_path)
    assert info["key"] == img.key and info["qemu_ga"] == ("usr/sbin/qemu-ga" in names)
    size = img.initrd.stat().st_size
    assert size < 8 * 2**20
    print(f"\nimage: cold build {cold:.2f} s, cached {cached:.3f} s, initrd {size / 2**20:.1f} MiB,"
          f" kernel {img.kernel.name} {img.kernel.stat().st_size / 2**20:.1f} MiB")
    assert cached < 2.0


def test_image_without_qemu_ga_and_a_clear_error_without_busybox(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_mod, "QEMU_GA", tmp_path / "no-qemu-ga")
    img, built = ensure_image(tmp_path / "a")
    assert built and "usr/sbin/qemu-ga" not in _cpio_names(img.initrd)
    assert image_info(tmp_path / "a")["qemu_ga"] is False
    monkeypatch.setattr(image_mod, "BUSYBOX", tmp_path / "no-busybox")
    with pytest.raises(ConfigError, match="busybox-static"):
        ensure_image(tmp_path / "b")


def test_cli_builds_then_reports_cached(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vmha.cli.lab import app

    runner = CliRunner()
    first = runner.invoke(app, ["image", "build", "--dir", str(tmp_path), "--json"])
    assert first.exit_code == 0, first.output
    info = json.loads(first.output)
    assert info["built"] is True and Path(info["kernel"]).is_file()
    second = runner.invoke(app, ["image", "build", "--dir", str(tmp_path)])
    assert second.exit_code == 0 and "up to date (cached)" in second.output
    assert info["key"] in second.output


def _cpio_names(initrd: Path) -> set[str]:
    out = subprocess.run(["cpio", "-t", "--quiet"], input=gzip.decompress(initrd.read_bytes()),
                         capture_output=True, check=True).stdout
    return set(out.decode().split())


# --- booted guest -------------------------------------------------------------------------


@dataclass
class Events:
    """Lifecycle and watchdog events of the domain, with arrival times."""

    got: list[tuple[float, str, int, int]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def add(self, kind: str, event: int, detail: int) -> None:
        with self.cond:
            self.got.append((time.monotonic(), kind, event, detail))
            self.cond.notify_all()

    def wait(self, pred: Callable[[tuple[float, str, int, int]], bool], since: float,
             timeout_s: float) -> tuple[float, str, int, int] | None:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                for e in self.got:
                    if e[0] >= since and pred(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def since(self, t: float) -> list[tuple[float, str, int, int]]:
        with self.cond:
            return [e for e in self.got if e[0] >= t]


@pytest.fixture(scope="module")
def bridge(libvirt_mod: Any) -> Iterator[str]:
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
    try:
        subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", f"{HOST_IP}/24", "dev", BRIDGE], check=True)
        subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
        yield BRIDGE
    finally:
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)


@pytest.fixture(scope="module")
def conn(libvirt_mod: Any) -> Iterator[Any]:
    libvirt = libvirt_mod
    shutil.rmtree(EMBED_ROOT / "run", ignore_errors=True)
    (EMBED_ROOT / "etc").mkdir(parents=True, exist_ok=True)
    for d in (EMBED_ROOT.parent, EMBED_ROOT):
        d.chmod(0o755)
    libvirt.registerErrorHandler(lambda *_: None, None)  # errors arrive as exceptions
    (EMBED_ROOT / "etc" / "qemu.conf").write_text('stdio_handler = "file"\nremember_owner = 0\n')
    libvirt.virEventRegisterDefaultImpl()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            libvirt.virEventRunDefaultImpl()

    tick = libvirt.virEventAddTimeout(100, lambda *_: None, None)  # wakes the loop to stop
    threading.Thread(target=loop, daemon=True, name="libvirt-events").start()
    c = libvirt.open(f"qemu:///embed?root={EMBED_ROOT}")
    try:
        yield c
    finally:
        c.close()
        stop.set()
        time.sleep(0.2)
        libvirt.virEventRemoveTimeout(tick)
        shutil.rmtree(EMBED_ROOT / "run", ignore_errors=True)


@dataclass
class Guest:
    dom: Any
    events: Events
    console: Path
    image: GuestImage
    boot_s: float = 0.0


@pytest.fixture(scope="module")
def guest(libvirt_mod: Any, conn: Any, bridge: str) -> Iterator[Guest]:
    libvirt = libvirt_mod
    # Not under pytest's tmp dirs: they are 0700 and QEMU runs as libvirt-qemu.
    img = ensure_image(EMBED_ROOT / "image")[0]
    console = EMBED_ROOT / "vm1-console.log"
    console.unlink(missing_ok=True)
    spec = DomainSpec(uuid=UUID, name="vmha-test-vm1", kernel=str(img.kernel),
                      initrd=str(img.initrd), bridge=bridge, watchdog_action="none",
                      cmdline=guest_cmdline("vm1", f"{GUEST_IP}/24", HOST_IP, WDT),
                      console_log=str(console))
    _remove_stale(conn, libvirt, spec.name)
    dom = conn.defineXML(render_domain(spec))
    events = Events()
    cbs = [
        conn.domainEventRegisterAny(dom, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                    lambda _c, _d, ev, det, _o: events.add("lifecycle", ev, det),
                                    None),
        conn.domainEventRegisterAny(dom, libvirt.VIR_DOMAIN_EVENT_ID_WATCHDOG,
                                    lambda _c, _d, action, _o: events.add("watchdog", action, 0),
                                    None),
    ]
    try:
        yield Guest(dom, events, console, img)
    finally:
        for cb in cbs:
            conn.domainEventDeregisterAny(cb)
        _remove_stale(conn, libvirt, spec.name)


def _remove_stale(conn: Any, libvirt: Any, name: str) -> None:
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    if dom.isActive():
        dom.destroy()
    dom.undefine()


def _get(path: str, timeout: float = 5.0) -> tuple[int, str]:
    c = http.client.HTTPConnection(GUEST_IP, 8080, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def _health() -> tuple[int, str] | None:
    try:
        return _get("/health", 2.0)  # (a TCG guest on a busy machine answers late)
    except OSError:
        return None


BOOT_S = 120  # a TCG boot on a busy machine has taken over 30 s (the lab's launch waits 90)


def _boot(g: Guest) -> float:
    """(Re)start the domain; seconds from start to /health answering."""
    if g.dom.isActive():
        g.dom.destroy()
    t0 = time.monotonic()
    g.dom.create()
    while time.monotonic() - t0 < BOOT_S:
        if _health() is not None:
            return time.monotonic() - t0
        time.sleep(0.1)
    pytest.fail(f"guest did not answer /health within {BOOT_S} s; console:\n{_console(g)}")


def _console(g: Guest) -> str:
    try:
        return g.console.read_text(errors="replace")[-3000:]
    except OSError:
        return "(no console log)"


def _qemu_rss_mib(g: Guest) -> float:
    pid = next(iter(EMBED_ROOT.glob("run/**/vmha-test-vm1.pid"))).read_text().strip()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_guest_boots_answers_health_and_the_guest_agent(libvirt_mod: Any, guest: Guest) -> None:
    import libvirt_qemu

    boot_s = _boot(guest)
    assert _health() == (200, "ok vm1\n")
    ready = f"vmha-guest: ready name=vm1 ip={GUEST_IP}"
    deadline = time.monotonic() + 30
    while ready not in _console(guest) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready in _console(guest)
    if image_info(guest.image.initrd.parent)["qemu_ga"]:
        t0 = time.monotonic()
        reply = None
        while reply is None and time.monotonic() - t0 < 60:
            try:
                reply = libvirt_qemu.qemuAgentCommand(guest.dom, '{"execute":"guest-ping"}', 2, 0)
            except libvirt_mod.libvirtError:
                time.sleep(0.3)
        assert reply == '{"return":{}}', _console(guest)
    print(f"\nboot to /health {boot_s:.1f} s, QEMU RSS {_qemu_rss_mib(guest):.0f} MiB")


def _fail(mode: str) -> float:
    status, body = _get(f"/cgi-bin/fail?mode={mode}")
    assert (status, body) == (202, f"fail {mode} accepted by vm1\n")
    return time.monotonic()


def test_unknown_mode_is_refused(guest: Guest) -> None:
    if _health() is None:
        _boot(guest)
    status, body = _get("/cgi-bin/fail?mode=explode")
    assert status == 400 and "unknown mode explode on vm1" in body


def test_stop_watchdog_fires_the_watchdog_then_app_kill_is_silent(
        libvirt_mod: Any, guest: Guest) -> None:
    if _health() is None:
        _boot(guest)
    t = _fail("stop-watchdog")
    ev = guest.events.wait(lambda e: e[1] == "watchdog", t, WDT + 30)
    assert ev is not None, f"no WATCHDOG event; console:\n{_console(guest)}"
    assert ev[2] == libvirt_mod.VIR_DOMAIN_EVENT_WATCHDOG_NONE
    assert _health() == (200, "ok vm1\n")  # only the feeder died
    print(f"\nstop-watchdog -> WATCHDOG event after {ev[0] - t:.2f} s")
    t = _fail("app-kill")
    deadline = time.monotonic() + 30
    while _health() is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _health() is None
    time.sleep(1.0)
    assert [e for e in guest.events.since(t) if e[1] == "lifecycle"] == []
    assert guest.dom.state()[0] == libvirt_mod.VIR_DOMAIN_RUNNING


def test_panic_is_a_crashed_event_and_state(libvirt_mod: Any, guest: Guest) -> None:
    _boot(guest)
    t = _fail("panic")
    ev = guest.events.wait(lambda e: e[1] == "lifecycle"
                           and e[2] == libvirt_mod.VIR_DOMAIN_EVENT_CRASHED, t, 30.0)
    assert ev is not None, f"no CRASHED event; console:\n{_console(guest)}"
    assert ev[3] == libvirt_mod.VIR_DOMAIN_EVENT_CRASHED_PANICKED
    assert guest.dom.state()[0] == libvirt_mod.VIR_DOMAIN_CRASHED
    print(f"\npanic -> CRASHED event after {ev[0] - t:.2f} s (incl. the 0.2 s delay)")


def test_hang_stops_everything_and_fires_the_watchdog(guest: Guest) -> None:
    _boot(guest)
    t = _fail("hang")
    ev = guest.events.wait(lambda e: e[1] == "watchdog", t, WDT + 30)
    assert ev is not None, f"no WATCHDOG event after hang; console:\n{_console(guest)}"
    assert _health() is None
    print(f"\nhang -> WATCHDOG event after {ev[0] - t:.2f} s")
