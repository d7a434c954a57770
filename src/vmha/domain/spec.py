"""What vmha needs to (re)create an instance itself: its definition.

In libvirt mode vmha owns the instance definitions (DESIGN.md): an instance
carries an `InstanceSpec`, either a small template (image, address ...)
that the libvirt cloud adapter renders into a domain, or a full domain XML
given by the user. In OpenStack mode Nova owns definitions and instances
carry no spec.

A spec is a frozen value validated on construction; `from_dict` builds one
from plain data (API bodies, stored JSON) naming the offending field,
`to_dict` gives the plain form back (only the fields that are set).

Standard library only; nothing here touches files or libvirt.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from vmha.domain.errors import ValidationError

XML_MAX = 200_000
_TEXT_MAX = 1024
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"


def _check_address(value: str) -> None:
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError as exc:
        raise ValidationError("address", f"{value!r} is not ADDRESS/PREFIX "
                              "(for example 198.18.1.11/24)") from exc
    if "/" not in value or iface.network.num_addresses < 4:
        raise ValidationError("address", f"{value!r} needs a prefix length of at most /30")


def _check_mac(value: str) -> None:
    parts = value.split(":")
    if len(parts) != 6 or not all(
        len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts
    ):
        raise ValidationError("mac", f"{value!r} is not a MAC address like 52:54:00:12:34:56")
    if int(parts[0], 16) & 1:
        raise ValidationError("mac", f"{value!r} is a multicast address")


@dataclass(frozen=True)
class InstanceSpec:
    """How to define the instance on a hypervisor.

    Template form: `image` names an image the controller knows (its
    `[cloud] image_dir` holds `<image>/vmlinuz` and `<image>/initrd.img`),
    `address` is the guest's static ADDRESS/PREFIX (passed on the kernel
    command line), `gateway` optional, `mac` derived from the instance id
    when empty, `bridge` the host bridge the NIC joins, `health_url` an HTTP
    URL that answers 200 when the guest's application is up (recovery is
    verified with it), `watchdog_s` the guest watchdog's heartbeat.
    XML form: `xml` is a whole libvirt domain; vmha only sets its name and
    uuid to the instance's. vCPUs and memory come from the instance's
    resources in the template form.
    """

    image: str = ""
    address: str = ""
    gateway: str = ""
    mac: str = ""
    bridge: str = "br0"
    health_url: str = ""
    watchdog_s: int = 3
    xml: str = ""

    def __post_init__(self) -> None:
        if bool(self.image) == bool(self.xml):
            raise ValidationError("spec", "give exactly one of image (a template) or xml")
        if self.xml and (len(self.xml) > XML_MAX or "<domain" not in self.xml):
            raise ValidationError("xml", f"must be a libvirt <domain> of at most {XML_MAX} bytes")
        if self.image and not all(c.isalnum() or c in "-_." for c in self.image):
            raise ValidationError("image", f"{self.image!r} may contain only letters, digits, "
                                  "'-', '_' and '.'")
        for name in ("image", "gateway", "bridge", "health_url"):
            if len(getattr(self, name)) > _TEXT_MAX:
                raise ValidationError(name, f"must be at most {_TEXT_MAX} characters")
        if self.address:
            _check_address(self.address)
        if self.gateway:
            try:
                ipaddress.ip_address(self.gateway)
            except ValueError as exc:
                raise ValidationError("gateway", f"{self.gateway!r} is not an IP address") from exc
        if self.mac:
            _check_mac(self.mac)
        if self.health_url and not self.health_url.startswith(("http://", "https://")):
            raise ValidationError("health_url", f"{self.health_url!r} is not an http(s) URL")
        if not 1 <= self.watchdog_s <= 60:
            raise ValidationError("watchdog_s", "must be 1 to 60 seconds")

    @property
    def guest_agent(self) -> bool:
        """Whether the domain has the QEMU guest agent channel (the template
        always has it; a domain XML must declare it)."""
        return not self.xml or has_guest_agent_channel(self.xml)

    @property
    def ip(self) -> str:
        """The guest's address without the prefix ('' when none)."""
        return self.address.split("/", 1)[0]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstanceSpec:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValidationError(unknown[0], f"unknown spec field; known: {', '.join(known)}")
        for key, value in data.items():
            wanted = int if key == "watchdog_s" else str
            if not isinstance(value, wanted) or isinstance(value, bool):
                raise ValidationError(key, f"must be a {'number' if wanted is int else 'string'}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        default = InstanceSpec(image="x")
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name == "image" or getattr(self, f.name) != getattr(default, f.name)}


def has_guest_agent_channel(xml: str) -> bool:
    """A `<channel>` whose virtio target is org.qemu.guest_agent.0 (False
    for XML that does not parse: libvirt refuses it anyway)."""
    try:
        root = ET.fromstring(xml)  # noqa: S314 - expat >= 2.4 bounds entity expansion
    except ET.ParseError:
        return False
    return any(t.get("name") == GUEST_AGENT_CHANNEL and t.get("type") == "virtio"
               for t in root.iterfind("./devices/channel/target"))
