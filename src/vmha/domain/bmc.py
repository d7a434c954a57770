"""A host's BMC as the store keeps it: where it is and the login, with the
password only as ciphertext (`password_secret`, a Fernet token made and
read by vmha.adapters.fencing.secrets; the store never sees the key).

Written by `PUT /v1/hosts/{name}/bmc`, read by the controller's fencers
(vmha.controller.fencers), which prefer it to a `[bmcs.*]` config entry.
Standard library only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from vmha.domain.errors import ValidationError

SECRET_OPTION_WORDS = ("pass", "secret", "token", "key")
IPMI_PASSWORD_MAX = 20  # bytes: IPMI 2.0's limit (ipmitool and real BMCs refuse more)
# Fence agents that log in with ipmitool (Debian's fence-agents symlinks).
IPMITOOL_AGENTS = frozenset({"fence_ipmilan", "fence_ipmilanplus", "fence_idrac",
                             "fence_ilo3", "fence_ilo4", "fence_ilo5", "fence_imm"})


def check_host_address(field: str, value: str) -> None:
    """An IP address or a DNS name (labels of 1-63 letters, digits and '-',
    253 characters in all): what a BMC client can resolve."""
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    labels = value.removesuffix(".").split(".")
    if len(value) > 253 or not all(
        0 < len(label) <= 63 and label[0] != "-" and label[-1] != "-"
        and all(c.isascii() and (c.isalnum() or c == "-") for c in label) for label in labels
    ):
        raise ValidationError(field, f"{value[:80]!r} is not an IP address or a host name")


def bmc_address_problems(ipmi_address: str, redfish_url: str) -> None:
    """ValidationError naming the field when a BMC address cannot be used."""
    if ipmi_address:
        check_host_address("ipmi_address", ipmi_address)
    if redfish_url:
        parts = urlsplit(redfish_url)
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValidationError("redfish_url", f"{redfish_url[:80]!r}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError("redfish_url", f"{redfish_url[:80]!r} is not an http(s) URL")
        check_host_address("redfish_url", parts.hostname)


def ipmi_password_problem(password: str, ipmi_address: str, fence_agent: str) -> str | None:
    """Why `password` cannot log in to a BMC used over IPMI (None: it can).
    Redfish-only BMCs may have longer passwords."""
    if not ipmi_address and fence_agent not in IPMITOOL_AGENTS:
        return None
    size = len(password.encode("utf-8"))
    if size <= IPMI_PASSWORD_MAX:
        return None
    return (f"is {size} bytes; IPMI 2.0 allows at most {IPMI_PASSWORD_MAX} (ipmitool, "
            "fence_ipmilan and BMCs refuse longer ones): set a shorter password on the BMC, "
            "or use Redfish only (no ipmi_address, no ipmitool fence agent)")


@dataclass(frozen=True)
class BmcRecord:
    host: str
    username: str
    password_secret: str = field(repr=False)
    ipmi_address: str = ""
    ipmi_port: int = 623
    redfish_url: str = ""
    redfish_system: str = ""
    fence_agent: str = ""  # e.g. fence_ipmilan: the `fence_agent` fence method
    fence_agent_options: Mapping[str, str] = field(default_factory=dict)
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        if not self.username:
            raise ValidationError("username", "must not be empty")
        if not self.password_secret:
            raise ValidationError("password", "must not be empty")
        if not 0 < self.ipmi_port < 65536:
            raise ValidationError("ipmi_port", f"{self.ipmi_port} is not a UDP port")
        bmc_address_problems(self.ipmi_address, self.redfish_url)
        if not (self.ipmi_address or self.redfish_url):
            raise ValidationError("ipmi_address", "give an ipmi_address, a redfish_url or both")
        for key in self.fence_agent_options:
            if any(word in key.lower() for word in SECRET_OPTION_WORDS):
                raise ValidationError(
                    f"fence_agent_options.{key}",
                    "secrets do not belong in the options (stored in clear): the "
                    "password field is passed to the agent")
