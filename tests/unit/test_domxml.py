"""The libvirt domain XML renderer: parse the XML back and check each part."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import pytest

from vmha.adapters.cloud.domxml import DomainSpec, guest_cmdline, mac_for, render_domain
from vmha.domain.errors import ValidationError

UUID = "4b1c8f9e-2d3a-4c5b-8e7f-0a1b2c3d4e5f"


def spec(**changes: object) -> DomainSpec:
    base = DomainSpec(uuid=UUID, name="vm1", kernel="/img/vmlinuz", initrd="/img/initrd.img",
                      cmdline=guest_cmdline("vm1", "198.18.1.11/24", "198.18.1.1"))
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def parse(s: DomainSpec) -> ET.Element:
    return ET.fromstring(render_domain(s))  # noqa: S314 (our own output)


def test_defaults_render_a_tcg_guest_with_every_device() -> None:
    dom = parse(spec())
    assert dom.get("type") == "qemu"
    assert dom.findtext("name") == "vm1"
    assert dom.findtext("uuid") == UUID
    assert (dom.find("memory").get("unit"), dom.findtext("memory")) == ("MiB", "128")  # type: ignore[union-attr]
    assert dom.findtext("vcpu") == "1"
    assert dom.findtext("os/kernel") == "/img/vmlinuz"
    assert dom.findtext("os/initrd") == "/img/initrd.img"
    assert "vmha.ip=198.18.1.11/24" in (dom.findtext("os/cmdline") or "")
    assert dom.findtext("features/tcg/tb-cache") == "32"
    assert (dom.findtext("on_poweroff"), dom.findtext("on_reboot"), dom.findtext("on_crash")) \
        == ("destroy", "restart", "preserve")
    nic = dom.find("devices/interface")
    assert nic is not None and nic.get("type") == "bridge"
    assert nic.find("source").get("bridge") == "br0"  # type: ignore[union-attr]
    assert nic.find("mac").get("address") == mac_for(UUID)  # type: ignore[union-attr]
    assert nic.find("model").get("type") == "virtio"  # type: ignore[union-attr]
    wdt = dom.find("devices/watchdog")
    assert wdt is not None and (wdt.get("model"), wdt.get("action")) == ("i6300esb", "reset")
    assert dom.find("devices/panic").get("model") == "isa"  # type: ignore[union-attr]
    chan = dom.find("devices/channel/target")
    assert chan is not None and chan.get("name") == "org.qemu.guest_agent.0"
    assert dom.find("devices/serial").get("type") == "pty"  # type: ignore[union-attr]


def test_options_turn_parts_off_or_change_them() -> None:
    dom = parse(spec(bridge=None, panic=False, guest_agent=False, watchdog_action="none",
                     console_log="/var/log/vm1.log", vcpus=2, memory_mb=256, tb_cache_mb=16,
                     mac="52:54:00:AA:BB:CC"))
    assert dom.find("devices/interface") is None
    assert dom.find("devices/panic") is None
    assert dom.find("devices/channel") is None
    assert dom.find("devices/watchdog").get("action") == "none"  # type: ignore[union-attr]
    serial = dom.find("devices/serial")
    assert serial is not None and serial.get("type") == "file"
    assert serial.find("source").get("path") == "/var/log/vm1.log"  # type: ignore[union-attr]
    assert (dom.findtext("vcpu"), dom.findtext("memory"), dom.findtext("features/tcg/tb-cache")) \
        == ("2", "256", "16")
    assert parse(spec(mac="52:54:00:AA:BB:CC")).find("devices/interface/mac").get(  # type: ignore[union-attr]
        "address") == "52:54:00:aa:bb:cc"


def test_every_value_is_escaped() -> None:
    text = render_domain(spec(name="a<b>&'\"", cmdline="x=<&>"))
    assert "a<b>" not in text and "&lt;&amp;&gt;" in text
    dom = ET.fromstring(text)  # noqa: S314 (our own output)
    assert dom.findtext("name") == "a<b>&'\""
    assert dom.findtext("os/cmdline") == "x=<&>"


def test_mac_is_stable_locally_administered_and_differs_per_uuid() -> None:
    mac = mac_for(UUID)
    assert mac == mac_for(UUID.upper()) and mac.startswith("52:54:00:") and len(mac) == 17
    assert mac != mac_for("00000000-0000-0000-0000-000000000001")
    assert int(mac[:2], 16) & 0x02  # the locally-administered bit


def test_guest_cmdline_format() -> None:
    assert guest_cmdline("vm1", "198.18.1.11/24", "198.18.1.1", 5) == (
        "console=ttyS0 panic=0 quiet vmha.name=vm1 vmha.ip=198.18.1.11/24 "
        "vmha.gw=198.18.1.1 vmha.wdt=5")
    assert "vmha.gw" not in guest_cmdline("vm1", "198.18.1.11/24")
    assert guest_cmdline("vm1", "198.18.1.11/24").endswith("vmha.wdt=3")


@pytest.mark.parametrize(("changes", "field"), [
    ({"watchdog_action": "explode"}, "watchdog_action"),
    ({"memory_mb": 32}, "memory_mb"),
    ({"vcpus": 0}, "vcpus"),
    ({"uuid": "not-a-uuid"}, "uuid"),
    ({"name": ""}, "name"),
    ({"kernel": "relative/vmlinuz"}, "kernel"),
    ({"initrd": "initrd.img"}, "initrd"),
    ({"bridge": "a-bridge-name-too-long"}, "bridge"),
    ({"bridge": "br 0"}, "bridge"),
    ({"mac": "52:54:00:zz:00:00"}, "mac"),
    ({"cmdline": "a\nb"}, "cmdline"),
    ({"tb_cache_mb": 0}, "tb_cache_mb"),
    ({"console_log": "vm.log"}, "console_log"),
])
def test_bad_specs_raise_naming_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        render_domain(spec(**changes))
    assert err.value.field == field


@pytest.mark.parametrize(("args", "field"), [
    (("vm 1", "198.18.1.11/24"), "name"),
    (("vm1", "198.18.1.11"), "address"),
    (("vm1", "not-an-address/24"), "address"),
    (("vm1", "2001:db8::1/64"), "address"),
    (("vm1", "198.18.1.11/24", "gw"), "gateway"),
    (("vm1", "198.18.1.11/24", None, 0), "watchdog_s"),
])
def test_bad_cmdline_inputs_raise_naming_the_field(args: tuple[object, ...], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        guest_cmdline(*args)  # type: ignore[arg-type]
    assert err.value.field == field
