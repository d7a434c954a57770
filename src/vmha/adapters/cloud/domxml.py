"""Render a libvirt domain XML for a vmha guest (pure: no I/O, stdlib only).

Called by the libvirt cloud driver and the lab to define the small TCG
guests of `vmha.lab.image`: direct kernel boot, virtio net on a bridge, an
i6300esb watchdog, a pvpanic device and the QEMU guest agent channel. It
must not talk to libvirt, touch files or read settings; it validates its
inputs (`ValidationError` naming the field) and escapes every value
(ElementTree does the escaping).

Crash handling: `<on_crash>preserve</on_crash>`. With pvpanic, a kernel
panic makes libvirt emit the CRASHED (PANICKED) lifecycle event at once and
leaves the domain in state CRASHED (paused, QEMU still there) so vmha sees
both the event and the state, then decides what to do (destroy + start, or
move it). The guest never reboots itself (`panic=0`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from vmha.domain.errors import ValidationError
from vmha.domain.spec import GUEST_AGENT_CHANNEL

__all__ = ["WATCHDOG_ACTIONS", "DomainSpec", "guest_cmdline", "mac_for", "render_domain"]

#: i6300esb actions vmha uses (libvirt also knows shutdown, dump, inject-nmi).
WATCHDOG_ACTIONS = ("reset", "poweroff", "pause", "none")

_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_GUEST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class DomainSpec:
    """What a vmha guest domain looks like; `render_domain` turns it into XML."""

    uuid: str
    name: str
    kernel: str
    initrd: str
    cmdline: str = ""
    vcpus: int = 1
    memory_mb: int = 128
    bridge: str | None = "br0"
    mac: str | None = None  # None: mac_for(uuid)
    watchdog_action: str = "reset"  # reset | poweroff | pause | none
    panic: bool = True  # <panic model='isa'/>: pvpanic -> CRASHED event at once
    guest_agent: bool = True  # virtio-serial channel org.qemu.guest_agent.0
    tb_cache_mb: int = 32
    console_log: str | None = None  # serial console to this file, else a pty


def mac_for(uuid: str) -> str:
    """A stable MAC 52:54:00:xx:xx:xx (locally administered) derived from `uuid`."""
    canonical = _uuid(uuid)
    digest = hashlib.sha256(canonical.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def guest_cmdline(
    name: str, address: str, gateway: str | None = None, watchdog_s: int = 3
) -> str:
    """The kernel command line for a `vmha.lab.image` guest.

    Format: ``console=ttyS0 panic=0 quiet vmha.name=NAME vmha.ip=ADDR/PREFIX
    [vmha.gw=ADDR] vmha.wdt=SECONDS``.
    """
    if not _GUEST_NAME.match(name):
        raise ValidationError("name", f"{name!r} is not a guest name "
                              "(letters, digits, '.', '_', '-'; at most 63)")
    try:
        iface = ipaddress.ip_interface(address)
    except ValueError as exc:
        raise ValidationError("address", f"{address!r} is not ADDR/PREFIX") from exc
    if "/" not in address or iface.version != 4:
        raise ValidationError("address", f"{address!r} must be an IPv4 ADDR/PREFIX")
    parts = ["console=ttyS0", "panic=0", "quiet", f"vmha.name={name}", f"vmha.ip={iface}"]
    if gateway is not None:
        try:
            parts.append(f"vmha.gw={ipaddress.IPv4Address(gateway)}")
        except ValueError as exc:
            raise ValidationError("gateway", f"{gateway!r} is not an IPv4 address") from exc
    if not 1 <= watchdog_s <= 2046:  # the i6300esb heartbeat range
        raise ValidationError("watchdog_s", f"{watchdog_s} is outside 1..2046 seconds")
    parts.append(f"vmha.wdt={watchdog_s}")
    return " ".join(parts)


def render_domain(spec: DomainSpec) -> str:
    """The domain XML (type 'qemu', TCG) for `spec`; raises ValidationError."""
    _validate(spec)
    dom = ET.Element("domain", type="qemu")
    ET.SubElement(dom, "name").text = spec.name
    ET.SubElement(dom, "uuid").text = _uuid(spec.uuid)
    ET.SubElement(dom, "memory", unit="MiB").text = str(spec.memory_mb)
    ET.SubElement(dom, "vcpu").text = str(spec.vcpus)
    _os(dom, spec)
    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")
    tcg = ET.SubElement(features, "tcg")
    ET.SubElement(tcg, "tb-cache", unit="MiB").text = str(spec.tb_cache_mb)
    ET.SubElement(dom, "on_poweroff").text = "destroy"
    ET.SubElement(dom, "on_reboot").text = "restart"
    ET.SubElement(dom, "on_crash").text = "preserve"
    _devices(dom, spec)
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"


def _os(dom: ET.Element, spec: DomainSpec) -> None:
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_el, "kernel").text = spec.kernel
    ET.SubElement(os_el, "initrd").text = spec.initrd
    if spec.cmdline:
        ET.SubElement(os_el, "cmdline").text = spec.cmdline


def _devices(dom: ET.Element, spec: DomainSpec) -> None:
    devices = ET.SubElement(dom, "devices")
    if spec.bridge is not None:
        nic = ET.SubElement(devices, "interface", type="bridge")
        ET.SubElement(nic, "source", bridge=spec.bridge)
        ET.SubElement(nic, "mac", address=(spec.mac or mac_for(spec.uuid)).lower())
        ET.SubElement(nic, "model", type="virtio")
    _console(devices, spec.console_log)
    if spec.guest_agent:
        chan = ET.SubElement(devices, "channel", type="unix")
        ET.SubElement(chan, "target", type="virtio", name=GUEST_AGENT_CHANNEL)
    ET.SubElement(devices, "watchdog", model="i6300esb", action=spec.watchdog_action)
    if spec.panic:
        ET.SubElement(devices, "panic", model="isa")
    # Nothing the guest does not use: no USB, balloon or graphics (less RSS, faster boot).
    ET.SubElement(devices, "controller", type="usb", model="none")
    ET.SubElement(devices, "memballoon", model="none")


def _console(devices: ET.Element, log: str | None) -> None:
    kind = "file" if log is not None else "pty"
    serial = ET.SubElement(devices, "serial", type=kind)
    if log is not None:
        ET.SubElement(serial, "source", path=log)
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type=kind)
    if log is not None:
        ET.SubElement(console, "source", path=log)
    ET.SubElement(console, "target", type="serial", port="0")


def _uuid(value: str) -> str:
    try:
        return str(uuidlib.UUID(value))
    except (ValueError, AttributeError, TypeError) as exc:
        raise ValidationError("uuid", f"{value!r} is not a UUID") from exc


def _validate(spec: DomainSpec) -> None:
    _uuid(spec.uuid)
    if not spec.name or len(spec.name) > 200 or "/" in spec.name:
        raise ValidationError("name", f"{spec.name!r} is not a domain name (1-200, no '/')")
    for field, path in (("kernel", spec.kernel), ("initrd", spec.initrd),
                        ("console_log", spec.console_log)):
        if path is not None and not path.startswith("/"):
            raise ValidationError(field, f"{path!r} must be an absolute path")
    if "\n" in spec.cmdline or "\x00" in spec.cmdline:
        raise ValidationError("cmdline", "must be one line")
    if not 1 <= spec.vcpus <= 64:
        raise ValidationError("vcpus", f"{spec.vcpus} is outside 1..64")
    if spec.memory_mb < 64:
        raise ValidationError("memory_mb", f"{spec.memory_mb} MiB is below the 64 MiB minimum")
    if spec.bridge is not None and not _IFNAME.match(spec.bridge):
        raise ValidationError("bridge", f"{spec.bridge!r} is not an interface name")
    if spec.mac is not None and not _MAC.match(spec.mac.lower()):
        raise ValidationError("mac", f"{spec.mac!r} is not a MAC address like 52:54:00:12:34:56")
    if spec.watchdog_action not in WATCHDOG_ACTIONS:
        raise ValidationError("watchdog_action", f"{spec.watchdog_action!r} is not one of "
                              + ", ".join(WATCHDOG_ACTIONS))
    if not 1 <= spec.tb_cache_mb <= 4096:
        raise ValidationError("tb_cache_mb", f"{spec.tb_cache_mb} is outside 1..4096 MiB")
