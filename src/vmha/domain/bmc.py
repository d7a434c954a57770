"""A host's BMC as the store keeps it: where it is and the login, with the
password only as ciphertext (`password_secret`, a Fernet token made and
read by vmha.adapters.fencing.secrets; the store never sees the key).

Written by `PUT /v1/hosts/{name}/bmc`, read by the controller's fencers
(vmha.cli.fencers), which prefer it to a `[bmcs.*]` config entry.
Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from vmha.domain.errors import ValidationError

SECRET_OPTION_WORDS = ("pass", "secret", "token", "key")


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
        if self.redfish_url and not self.redfish_url.startswith(("https://", "http://")):
            raise ValidationError("redfish_url", f"{self.redfish_url!r} is not an http(s) URL")
        if not (self.ipmi_address or self.redfish_url):
            raise ValidationError("ipmi_address", "give an ipmi_address, a redfish_url or both")
        for key in self.fence_agent_options:
            if any(word in key.lower() for word in SECRET_OPTION_WORDS):
                raise ValidationError(
                    f"fence_agent_options.{key}",
                    "secrets do not belong in the options (stored in clear): the "
                    "password field is passed to the agent")
