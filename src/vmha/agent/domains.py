"""What the agent says about domains, without libvirt: views, events, XML checks.

`DomainView` and `DomainEvent` are the values the agent's HTTP API returns
and `vmha.agent.report` sends to the controller; `parse_domain_xml` checks
a domain document before it reaches libvirt. Standard library only, so the
agent's API and reporter import it even where libvirt-python is missing.
"""

from __future__ import annotations

import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass

from vmha.errors import ValidationError

STATES = ("running", "paused", "shutoff", "crashed", "pmsuspended", "absent")
ACTIONS = ("start", "destroy", "reset", "reboot", "shutdown", "undefine", "inject-nmi")
#: Event kinds of the prober (state changes of probes and guest-agent pings).
PROBE_KINDS = frozenset({"app_failed", "app_recovered", "guest_unresponsive",
                         "guest_responsive"})


@dataclass(frozen=True)
class DomainView:
    uuid: str
    name: str
    state: str  # running | paused | shutoff | crashed | pmsuspended | absent
    reason: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class DomainEvent:
    uuid: str
    name: str
    kind: str  # started stopped crashed watchdog paused resumed rebooted agent_* app_* guest_*
    detail: str
    requested: bool  # asked through this agent's API within REQUEST_WINDOW_S
    time: float  # unix time
    probe: str = ""  # app_* and guest_*: the check behind the change
    count: int = 0  # its failures (or successes) in a row


def absent(uuid: str) -> DomainView:
    return DomainView(uuid, "", "absent", "")


def canonical_uuid(value: str) -> str:
    try:
        return str(uuidlib.UUID(value))
    except (ValueError, AttributeError, TypeError) as exc:
        raise ValidationError("uuid", f"{value!r} is not a UUID") from exc


def parse_domain_xml(xml: str) -> str:
    """The canonical UUID of a domain XML document, or ValidationError."""
    try:
        root = ET.fromstring(xml)  # noqa: S314 - token-protected caller, expat >= 2.4
    except ET.ParseError as exc:
        raise ValidationError("xml", f"not well-formed XML: {exc}") from exc
    if root.tag != "domain":
        raise ValidationError("xml", f"root element is <{root.tag}>, not <domain>")
    text = (root.findtext("uuid") or "").strip()
    if not text:
        raise ValidationError("xml", "the domain has no <uuid>: vmha keys domains by UUID")
    return canonical_uuid(text)
